"""Dataset specs: the validated contents of ``datasets.yaml`` (one ``DatasetSpec`` per dataset).

Only facts live here (counts, archives, URLs, checksums, licences); what to do with them is
``acquisition`` (obtain + normalise) and ``verification`` (re-check a normalised folder).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from benchmark.data import layouts
from benchmark.datasets.transfer import ArchiveLimits, DatasetError, say

REGISTRY_PATH = Path(__file__).with_name("datasets.yaml")
# Per-file checksum lists the registry names (``files.list``) ship in the package, with their
# source in checksums/README.md; library code never reads outside the repository.
CHECKSUM_DIR = Path(__file__).with_name("checksums")
SPLITS = ("train", "test")
# A whole replacement registry for tests and rehearsals (tests/rehearsal_archives.py): archives built
# locally, served from 127.0.0.1, with their own checksums and counts. An environment variable, not a
# params key, because it must reach both `msgnn-bench datasets` and the DVC prepare stage without a
# user-visible setting; every load under it says so on stderr, so it never acts silently.
REGISTRY_ENV = "MSGNN_DATASETS_REGISTRY"


class ManualDownloadRequired(DatasetError):
    """The dataset has no public direct link; the message holds the manual step."""

class ChecksumError(DatasetError):
    """A file's size, sha256 or git blob id differs from the expected value."""


# ---------------------------------------------------------------- registry

@dataclass(frozen=True)
class ArchiveSpec:
    file: str
    urls: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    size: int | None = None
    sha256: str | None = None
    git_blob_sha1: str | None = None
    splits: tuple[str, ...] = ()
    limits: ArchiveLimits = ArchiveLimits()  # datasets.yaml: max_unpacked_bytes, max_ratio


@dataclass(frozen=True)
class FilesSpec:
    base_url: str
    list: str
    list_sha256: str | None = None
    total_size: int | None = None


@dataclass(frozen=True)
class SplitSpec:
    name: str
    count: int | None
    optional: bool = False
    locate: tuple[str, ...] = ()
    id_range: tuple[int, int] | None = None


@dataclass(frozen=True)
class DatasetSpec:
    key: str
    title: str
    source: str
    splits: dict[str, SplitSpec]
    archives: tuple[ArchiveSpec, ...] = ()
    files: FilesSpec | None = None
    homepage: str | None = None
    manual: str = ""
    paired: bool = True
    rainy_side: str | None = None
    layout: str = "auto"
    model_from: str | None = None
    citation: str = ""
    licence: str = ""
    notes: str = ""
    registry_dir: Path = field(default=REGISTRY_PATH.parent, compare=False)


def _spec_from_dict(key: str, d: dict, where: Path) -> DatasetSpec:
    def bad(msg: str) -> DatasetError:
        return DatasetError(f"{where}: dataset {key!r}: {msg}")
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", key):
        raise bad("keys are lowercase letters, digits and '-'")
    if d.get("source") not in ("download", "manual", "embedded"):
        raise bad("source must be download, manual or embedded")
    splits = {}
    for name, s in (d.get("splits") or {}).items():
        if name not in SPLITS:
            raise bad(f"unknown split {name!r} (use {SPLITS})")
        s = s or {}
        count = s.get("count")
        if count is not None and (not isinstance(count, int) or count <= 0):
            raise bad(f"split {name}: count must be a positive integer or null")
        rng = s.get("id_range")
        if rng is not None and not (isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, int) for v in rng)):
            raise bad(f"split {name}: id_range must be [lo, hi]")
        splits[name] = SplitSpec(name, count, bool(s.get("optional", False)), tuple(s.get("locate") or ()),
                                 tuple(rng) if rng else None)
    if not splits:
        raise bad("no splits")
    archives = []
    for a in d.get("archives") or ():
        if not isinstance(a, dict) or not a.get("file"):
            raise bad("every archive needs a 'file' name")
        unknown = set(a.get("splits") or ()) - set(splits)
        if unknown:
            raise bad(f"archive {a.get('file')}: splits {sorted(unknown)} not declared")
        sha = a.get("sha256")
        if sha is not None and not re.fullmatch(r"[0-9a-f]{64}", str(sha)):
            raise bad(f"archive {a.get('file')}: sha256 must be 64 lowercase hex digits")
        urls = tuple(a.get("urls") or ())
        if any(not u.startswith(("http://", "https://")) for u in urls):
            raise bad(f"archive {a.get('file')}: only http(s) URLs are supported")
        lim = {k: a[k] for k in ("max_unpacked_bytes", "max_ratio") if k in a}
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 for v in lim.values()):
            raise bad(f"archive {a.get('file')}: max_unpacked_bytes and max_ratio must be positive numbers")
        archives.append(ArchiveSpec(a["file"], urls, tuple(a.get("aliases") or ()), a.get("size"), sha,
                                    a.get("git_blob_sha1"), tuple(a.get("splits") or ()), ArchiveLimits(**lim)))
    files = FilesSpec(**{k: d["files"][k] for k in ("base_url", "list", "list_sha256", "total_size")
                         if k in d["files"]}) \
        if d.get("files") else None
    if d["source"] == "download" and not (files or any(a.urls for a in archives)):
        raise bad("source 'download' needs at least one URL")
    side = d.get("rainy_side")
    if side not in (None, *layouts.SIDES):
        raise bad("rainy_side must be left, right or null")
    return DatasetSpec(key=key, title=d.get("title", key), source=d["source"], splits=splits,
                       archives=tuple(archives), files=files, homepage=d.get("homepage"),
                       manual=" ".join(str(d.get("manual") or "").split()), paired=d.get("paired", True),
                       rainy_side=side, layout=d.get("layout", "auto"), model_from=d.get("model_from"),
                       citation=" ".join(str(d.get("citation") or "").split()),
                       licence=" ".join(str(d.get("licence") or "").split()),
                       notes=" ".join(str(d.get("notes") or "").split()), registry_dir=where.parent)


def _leading_int(text: str) -> int | None:
    m = re.match(r"\d+", text)
    return int(m.group()) if m else None


def _in_range(stem: str, rng: tuple[int, int] | None) -> bool:
    """Whether a file stem's leading integer id lies in a split's ``id_range`` (None: any)."""
    n = _leading_int(stem)
    return rng is None or (n is not None and rng[0] <= n <= rng[1])


def load_registry(path: Path | str | None = None) -> dict[str, DatasetSpec]:
    """Parse and validate a registry file (default: $MSGNN_DATASETS_REGISTRY, else datasets.yaml
    beside this module)."""
    if path is None and os.environ.get(REGISTRY_ENV):
        path = os.environ[REGISTRY_ENV]
        say(f"note: dataset registry {path} (from ${REGISTRY_ENV}), not {REGISTRY_PATH.name}")
    path = Path(path) if path is not None else REGISTRY_PATH
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DatasetError(f"cannot read dataset registry {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), dict):
        raise DatasetError(f"{path}: expected a mapping with a 'datasets' section")
    return {k: _spec_from_dict(k, v or {}, path) for k, v in data["datasets"].items()}


def get_spec(name: str, registry: dict[str, DatasetSpec] | Path | str | None = None) -> DatasetSpec:
    reg = registry if isinstance(registry, dict) else load_registry(registry)
    if name not in reg:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(reg)}")
    return reg[name]


def dataset_path(name: str, root: Path | str = "data", registry: dict | Path | str | None = None) -> Path:
    get_spec(name, registry)
    return Path(root) / name
