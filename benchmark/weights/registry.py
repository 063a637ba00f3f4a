"""The checkpoint registry: ``checkpoints.yaml`` validated on load into ``CheckpointSpec``s.

A checkpoint's file lives at ``<root>/<name>/<file>`` (default root ``weights/``, git-ignored).
Its status: ``verified`` (sha256 and, where known, git blob id match), ``present`` (a file whose
checksums are not recorded yet, or do not match), ``missing`` (downloadable, not here) or ``manual``
(no direct link; not here).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REGISTRY_PATH = Path(__file__).with_name("checkpoints.yaml")
DATASETS_PATH = Path(__file__).resolve().parents[1] / "datasets" / "datasets.yaml"
ROOT = Path("weights")
SOURCES = ("download", "manual")
# where a file goes: <root>/<name>/<file>, or torch hub's checkpoint folder, where torch (and LPIPS,
# benchmark/evaluation/metrics.py) look for torchvision's ImageNet weights
LOCATIONS = ("weights", "torch-hub")
# protocol names of benchmark.evaluation.protocols (kept here as data: no torch/scipy import)
PROTOCOLS = ("matlab-y", "prenet", "msgnn", "skimage-default", "ntire-crop")
FIRST_DOWNLOAD = "recorded on first verified download"


class RegistryError(ValueError):
    """A malformed checkpoints.yaml or an unknown checkpoint name; the message names the entry."""


@dataclass(frozen=True)
class Published:
    """One number the authors published for a checkpoint."""

    test_set: str           # key of datasets.yaml, or a set this suite does not register (e.g. spa)
    psnr: float
    ssim: float
    protocol: str           # a scoring protocol name (benchmark.evaluation.protocols)
    source: str             # where the number is printed
    note: str = ""


@dataclass(frozen=True)
class CheckpointSpec:
    name: str
    model: str
    title: str
    source: str                          # download | manual
    file: str                            # file name under <root>/<name>/
    args: dict = field(default_factory=dict)   # builder/loader keyword arguments
    trained_on: str = ""                 # the training set, in words
    train_set: str | None = None         # its datasets.yaml key where there is one
    repository: str | None = None        # owner/name where the authors host it in git
    commit: str | None = None            # 40-hex commit the URL is pinned to
    path: str | None = None              # repository path of the file
    urls: tuple[str, ...] = ()
    size: int | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None     # where only the publisher's file-name hash prefix is known
    git_blob_sha1: str | None = None
    status: str = ""                     # why a checksum is missing
    manual: str = ""
    loadable: bool = True                # our official loader reads the file as it is
    notes: str = ""
    published: tuple[Published, ...] = ()
    location: str = "weights"            # one of LOCATIONS

    def file_path(self, root: Path | str = ROOT) -> Path:
        if self.location == "torch-hub":
            return torch_hub_checkpoints() / self.file
        return Path(root) / self.name / self.file

    def url(self) -> str | None:
        return self.urls[0] if self.urls else None


_HEX = {"sha256": 64, "git_blob_sha1": 40, "commit": 40}


def torch_hub_checkpoints() -> Path:
    """``torch.hub.get_dir()/checkpoints`` without importing torch: $TORCH_HOME, else
    $XDG_CACHE_HOME/torch, else ~/.cache/torch, then hub/checkpoints (tests compare it with torch's)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints"


def _spec(name: str, d: dict, where: Path, datasets: set[str]) -> CheckpointSpec:
    def bad(msg: str) -> RegistryError:
        return RegistryError(f"{where}: checkpoint {name!r}: {msg}")

    if not isinstance(d, dict):
        raise bad("expected a mapping")
    known = {f for f in CheckpointSpec.__dataclass_fields__} - {"name"}
    unknown = sorted(set(d) - known)
    if unknown:
        raise bad(f"unknown field(s) {unknown}")
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", name):
        raise bad("names are lowercase letters, digits, '-', '_' and '.'")
    for key in ("model", "title", "source", "file"):
        if not isinstance(d.get(key), str) or not d[key]:
            raise bad(f"needs a non-empty {key!r}")
    if d["source"] not in SOURCES:
        raise bad(f"source must be one of {SOURCES}")
    if "/" in d["file"] or d["file"] in (".", ".."):
        raise bad("file is a plain file name")
    for key, n in _HEX.items():
        v = d.get(key)
        if v is not None and not re.fullmatch(f"[0-9a-f]{{{n}}}", str(v)):
            raise bad(f"{key} must be {n} lowercase hex digits or null")
    urls = tuple(d.get("urls") or ())
    if any(not isinstance(u, str) or not u.startswith(("http://", "https://")) for u in urls):
        raise bad("urls are http(s) URLs")
    if d["source"] == "download" and not urls:
        raise bad("source 'download' needs a URL")
    if d["source"] == "manual" and not d.get("manual"):
        raise bad("source 'manual' needs the 'manual' instructions")
    if d.get("repository") and not (d.get("commit") and d.get("path")):
        raise bad("a git-hosted file names its commit and path")
    if d.get("commit") and not any(d["commit"] in u for u in urls):
        raise bad("the URL must be pinned to the recorded commit")
    prefix = d.get("sha256_prefix")
    if prefix is not None and not re.fullmatch(r"[0-9a-f]{8,63}", str(prefix)):
        raise bad("sha256_prefix must be 8 to 63 lowercase hex digits or null")
    if d.get("location", "weights") not in LOCATIONS:
        raise bad(f"location must be one of {LOCATIONS}")
    if d.get("sha256") is None and not d.get("status"):
        raise bad(f"a checkpoint without sha256 says why in 'status' (e.g. {FIRST_DOWNLOAD!r})")
    size = d.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise bad("size must be a positive integer or null")
    if not isinstance(d.get("args") or {}, dict):
        raise bad("args must be a mapping of builder keywords")
    train_set = d.get("train_set")
    if train_set is not None and train_set not in datasets:
        raise bad(f"train_set {train_set!r} is not a key of datasets.yaml")
    pubs = []
    for p in d.get("published") or ():
        if not isinstance(p, dict) or set(p) - {"test_set", "psnr", "ssim", "protocol", "source", "note"}:
            raise bad(f"published entries have test_set, psnr, ssim, protocol, source, note: {p!r}")
        if p.get("protocol") not in PROTOCOLS:
            raise bad(f"published protocol {p.get('protocol')!r} is not one of {PROTOCOLS}")
        for k in ("psnr", "ssim"):
            if isinstance(p.get(k), bool) or not isinstance(p.get(k), (int, float)):
                raise bad(f"published {k} on {p.get('test_set')!r} must be a number")
        if not p.get("test_set") or not p.get("source"):
            raise bad("every published number names its test_set and source")
        pubs.append(Published(str(p["test_set"]), float(p["psnr"]), float(p["ssim"]), p["protocol"],
                              " ".join(str(p["source"]).split()), " ".join(str(p.get("note") or "").split())))
    sets = [p.test_set for p in pubs]
    if len(sets) != len(set(sets)):
        raise bad("one published number per test set")
    words = lambda k: " ".join(str(d.get(k) or "").split())  # noqa: E731
    return CheckpointSpec(name=name, model=d["model"], title=words("title"), source=d["source"], file=d["file"],
                          args=dict(d.get("args") or {}), trained_on=words("trained_on"), train_set=train_set,
                          repository=d.get("repository"), commit=d.get("commit"), path=d.get("path"), urls=urls,
                          size=size, sha256=d.get("sha256"), sha256_prefix=prefix, git_blob_sha1=d.get("git_blob_sha1"),
                          status=words("status"), manual=words("manual"), loadable=bool(d.get("loadable", True)),
                          notes=words("notes"), published=tuple(pubs), location=d.get("location", "weights"))


def dataset_keys(path: Path = DATASETS_PATH) -> set[str]:
    data = yaml.safe_load(path.read_text()) or {}
    return set((data.get("datasets") or {}).keys())


def load_registry(path: Path | str | None = None) -> dict[str, CheckpointSpec]:
    """Parse and validate a checkpoint registry (default: checkpoints.yaml beside this module)."""
    path = Path(path) if path is not None else REGISTRY_PATH
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RegistryError(f"cannot read checkpoint registry {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("checkpoints"), dict):
        raise RegistryError(f"{path}: expected a mapping with a 'checkpoints' section")
    datasets = dataset_keys()
    return {k: _spec(k, v, path, datasets) for k, v in data["checkpoints"].items()}


def get(name: str, registry: dict[str, CheckpointSpec] | Path | str | None = None) -> CheckpointSpec:
    reg = registry if isinstance(registry, dict) else load_registry(registry)
    if name not in reg:
        raise RegistryError(f"unknown checkpoint {name!r}; known: {', '.join(reg)}")
    return reg[name]


def published_on(spec: CheckpointSpec, test_set: str) -> Published | None:
    return next((p for p in spec.published if p.test_set == test_set), None)
