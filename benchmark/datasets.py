"""Dataset layer for the MSGNN benchmark (Wang et al., IJCAI 2024): obtain, check, normalise.

Every dataset of the paper ends up as ``<root>/<key>/{train,test}/{input,target}/<id>.png``
(real-world sets: ``input`` only) plus a ``manifest.json`` per split recording where each file
came from and its sha256. The facts about each dataset live in ``datasets.yaml``.

Flow of ``download``: find the archives (``--from``, a file already placed in
``<root>/downloads/<key>/``, or an HTTP download that streams, resumes with Range requests and
retries), check size/sha256/git blob id, extract safely into a temporary folder (absolute paths,
``..``, links and devices are refused), pair the files with ``benchmark.layouts``, write the
normalised split into a temporary folder, check pairs, sizes and counts, and only then move it
into place. Sources without a public direct link stop with the exact manual step. The byte-level
parts (HTTP, extraction, hashes) are ``benchmark.transfer``.

Normalisation: PNG sources are copied byte for byte. JPEG sources and side-by-side files are
decoded and written as lossless PNG (these files are marked as derived in the manifest).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import yaml
from PIL import Image
from tqdm import tqdm

from benchmark import images, layouts
from benchmark.images import DataError
from benchmark.layouts import LayoutError, Pair
from benchmark.transfer import (
    ArchiveLimits,
    CorruptArchiveError,
    DatasetError,
    OfflineError,
    git_blob_sha1,
    http_download,
    safe_extract,
    say,
    sha256_file,
)

REGISTRY_PATH = Path(__file__).with_name("datasets.yaml")
# Per-file checksum lists: shipped beside the registry, else the shared reference folder that
# sits next to the repository (as in CI).
CHECKSUM_DIRS = (Path(__file__).with_name("checksums"),
                 Path(__file__).resolve().parents[2] / "shared" / "data" / "checksums")
SPLITS = ("train", "test")


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


def load_registry(path: Path | str | None = None) -> dict[str, DatasetSpec]:
    """Parse and validate a registry file (default: benchmark/datasets.yaml)."""
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


# ---------------------------------------------------------------- sources

@dataclass
class _Tree:
    root: Path
    provides: tuple[str, ...]     # () = unknown (anonymous folder or archive)
    origin: str
    archive: Path | None = None
    spec: ArchiveSpec | None = None
    digest: str | None = None


def _check_file(path: Path, a: ArchiveSpec) -> str:
    """Check size/sha256/git blob id where known; returns the sha256."""
    if a.size is not None and path.stat().st_size != a.size:
        raise ChecksumError(f"{path}: size {path.stat().st_size} bytes, expected {a.size}")
    digest = sha256_file(path)
    if a.sha256 is not None and digest != a.sha256:
        raise ChecksumError(f"{path}: sha256 {digest}, expected {a.sha256}")
    recorded = path.with_name(path.name + ".sha256")
    if a.sha256 is None and recorded.exists():
        want = recorded.read_text().split()[0]
        if digest != want:
            raise ChecksumError(f"{path}: sha256 {digest} differs from the value recorded at the first "
                                f"download ({want}, in {recorded}); delete both files to accept the new one")
    if a.git_blob_sha1 is not None and git_blob_sha1(path) != a.git_blob_sha1:
        raise ChecksumError(f"{path}: git blob id {git_blob_sha1(path)}, expected {a.git_blob_sha1}")
    return digest


def _record_sha256(path: Path, digest: str) -> None:
    recorded = path.with_name(path.name + ".sha256")
    if not recorded.exists():
        recorded.write_text(f"{digest}  {path.name}\n")
        say(f"note: no sha256 is published for {path.name}; recorded {digest} in {recorded} "
             f"(first download). Later downloads are checked against it.")


def _placed_archive(folder: Path, a: ArchiveSpec) -> Path | None:
    for name in (a.file, *a.aliases):
        if (folder / name).is_file():
            return folder / name
    return None


def _manual_message(spec: DatasetSpec, downloads: Path, missing: list[str]) -> str:
    where = "\n".join(f"  - save '{m}' as {downloads / m}" for m in missing)
    return (f"dataset {spec.key!r} has no public direct download; a manual step is needed.\n"
            f"{spec.manual}\nThen either:\n{where}\n  and rerun `msgnn-bench datasets download {spec.key}`,\n"
            f"  or run `msgnn-bench datasets download {spec.key} --from <archive or extracted folder>`.")


def _fetch_archive(spec: DatasetSpec, a: ArchiveSpec, downloads: Path, progress: bool) -> Path:
    errors = []
    for url in a.urls:
        try:
            return http_download(url, downloads / a.file, size=a.size, progress=progress)
        except DatasetError as exc:
            errors.append(exc)
    if all(isinstance(e, OfflineError) for e in errors):
        raise OfflineError(f"cannot download dataset {spec.key!r}: {'; '.join(map(str, errors))}. Check the "
                           f"network, or place {a.file} at {downloads / a.file} (or use --from).")
    raise DatasetError(f"cannot download dataset {spec.key!r}: {'; '.join(map(str, errors))}")


def _extract_checked(spec: DatasetSpec, a: ArchiveSpec | None, path: Path, work: Path, downloads: Path,
                     from_user: bool, progress: bool) -> tuple[Path, Path, str]:
    """Verify and extract an archive; an automatic download that turns out bad is fetched again."""
    for attempt in (0, 1):
        try:
            digest = _check_file(path, a) if a is not None else sha256_file(path)
            target = Path(tempfile.mkdtemp(prefix="x-", dir=work))
            target.rmdir()
            return safe_extract(path, target, a.limits if a is not None else None), path, digest
        except (ChecksumError, CorruptArchiveError) as exc:
            if from_user or a is None or not a.urls:
                raise
            path.unlink()  # a bad download never stays under the archive's name
            if attempt:
                raise
            say(f"warning: {exc}; downloading {a.file} again")
            path = _fetch_archive(spec, a, downloads, progress)
    raise AssertionError("unreachable")


def _checksum_list(spec: DatasetSpec) -> dict[str, tuple[str, int]] | None:
    """The per-file list of a FilesSpec as {relative path: (sha256, size)}, or None if absent."""
    assert spec.files is not None
    name = Path(spec.files.list)
    candidates = [name] if name.is_absolute() else \
        [spec.registry_dir / name, spec.registry_dir / "checksums" / name, *(d / name for d in CHECKSUM_DIRS)]
    for cand in candidates:
        if cand.is_file():
            if spec.files.list_sha256 and sha256_file(cand) != spec.files.list_sha256:
                raise ChecksumError(f"{cand}: checksum list does not match its registered sha256")
            rows = {}
            for line in cand.read_text().splitlines()[1:]:
                if line.strip():
                    rel, digest, size = line.split("\t")
                    rows[rel] = (digest, int(size))
            return rows
    return None


def _leading_int(text: str) -> int | None:
    m = re.match(r"\d+", text)
    return int(m.group()) if m else None


def _in_range(stem: str, rng: tuple[int, int] | None) -> bool:
    n = _leading_int(stem)
    return rng is None or (n is not None and rng[0] <= n <= rng[1])


def _fetch_files(spec: DatasetSpec, rows: dict[str, tuple[str, int]], wanted: list[SplitSpec],
                 downloads: Path, work: Path, progress: bool) -> Path:
    """Download (or reuse) the listed files the wanted splits need, each checked by sha256.

    Returns a folder holding links to exactly those files, so that files left by an interrupted
    earlier run for other splits cannot disturb the pairing.
    """
    assert spec.files is not None
    root = downloads / "files"
    need = [r for r in sorted(rows) if any(_in_range(Path(r).stem, s.id_range) for s in wanted)]
    for rel in tqdm(need, desc=f"{spec.key} files", unit="file", disable=None if progress else True,
                    file=sys.stderr):
        digest, size = rows[rel]
        dest = root / rel
        if dest.is_file() and dest.stat().st_size == size and sha256_file(dest) == digest:
            continue
        url = spec.files.base_url + urllib.parse.quote(rel)
        for attempt in (0, 1):
            try:
                http_download(url, dest, size=size, progress=False)
            except OfflineError as exc:
                raise OfflineError(f"cannot download dataset {spec.key!r}: {exc}. Check the network or "
                                   f"follow the manual step: {spec.manual}") from exc
            if sha256_file(dest) == digest:
                break
            dest.unlink()
            if attempt:
                raise ChecksumError(f"{url}: sha256 differs from the published list twice")
    view = work / "files"
    for rel in need:
        (view / rel).parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(root / rel, view / rel)
    return view


def _gather(spec: DatasetSpec, wanted: list[SplitSpec], downloads: Path, work: Path, source: Path | None,
            progress: bool) -> list[_Tree]:
    trees: list[_Tree] = []
    names = {s.name for s in wanted}
    if source is not None:
        source = Path(source)
        if not source.exists():
            raise DatasetError(f"--from {source}: no such file or folder")
        if source.is_file():
            match = next((a for a in spec.archives if source.name in (a.file, *a.aliases)), None)
            root, path, digest = _extract_checked(spec, match, source, work, downloads, True, progress)
            return [_Tree(root, match.splits if match else (), f"{source} (sha256 {digest})", path, match, digest)]
        for a in spec.archives:
            placed = _placed_archive(source, a)
            if placed is not None and set(a.splits or names) & names:
                root, path, digest = _extract_checked(spec, a, placed, work, downloads, True, progress)
                trees.append(_Tree(root, a.splits, f"{placed} (sha256 {digest})", path, a, digest))
        return trees or [_Tree(source, (), str(source))]
    missing, optional_missing = [], []
    for a in spec.archives:
        relevant = [s for s in wanted if not a.splits or s.name in a.splits]
        if not relevant:
            continue
        path = _placed_archive(downloads, a)
        if path is None and a.urls:
            try:
                path = _fetch_archive(spec, a, downloads, progress)
            except DatasetError:
                if all(s.optional for s in relevant):
                    say(f"warning: optional split(s) {[s.name for s in relevant]} of {spec.key} skipped: "
                         f"{a.file} could not be downloaded")
                    continue
                raise
        if path is None:
            (optional_missing if all(s.optional for s in relevant) else missing).append(a.file)
            continue
        root, path, digest = _extract_checked(spec, a, path, work, downloads, False, progress)
        trees.append(_Tree(root, a.splits, f"{path} (sha256 {digest})", path, a, digest))
    if spec.files is not None:
        rows = _checksum_list(spec)
        if rows is None:
            raise ManualDownloadRequired(
                f"dataset {spec.key!r}: the per-file checksum list {spec.files.list} was not found (looked "
                f"beside {REGISTRY_PATH.name} and in {', '.join(map(str, CHECKSUM_DIRS))}).\n{spec.manual}")
        root = _fetch_files(spec, rows, wanted, downloads, work, progress)
        trees.append(_Tree(root, (), f"{spec.files.base_url} (per-file sha256 list {spec.files.list})"))
    if missing:
        raise ManualDownloadRequired(_manual_message(spec, downloads, missing))
    for name in optional_missing:
        say(f"note: optional archive {name} of {spec.key} not found in {downloads}; its split is skipped")
    return trees


def _locate(root: Path, patterns: tuple[str, ...]) -> Path | None:
    """Shallowest folder under ``root`` (depth <= 4) whose name matches a pattern, in pattern order."""
    for pattern in patterns:
        if pattern == ".":
            return root
        level = [root]
        for _ in range(4):
            level = sorted((d for p in level for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")),
                           key=lambda d: layouts.natural_key(str(d)))
            hits = [d for d in level if fnmatch(d.name.lower(), pattern.lower())]
            if hits:
                return hits[0]
    return None


def _assign(spec: DatasetSpec, trees: list[_Tree], wanted: list[SplitSpec],
            lenient: bool = False) -> dict[str, tuple[Path, _Tree]]:
    """Which folder of which source holds each wanted split.

    ``lenient`` (a --from source without --split): build the splits found, skip the others.
    """
    plan: dict[str, tuple[Path, _Tree]] = {}
    required = [s.name for s in wanted if not s.optional]
    for s in wanted:
        eligible = [t for t in trees if not t.provides or s.name in t.provides]
        for t in eligible:
            found = _locate(t.root, s.locate or (f"*{s.name}*",))
            if found is not None:
                plan[s.name] = (found, t)
                break
        else:  # no folder named for the split: a source that can only hold this split
            for t in eligible:
                if t.provides == (s.name,) or (not t.provides and (len(wanted) == 1 or required == [s.name])):
                    plan[s.name] = (t.root, t)
                    break
    missing = [s.name for s in wanted if s.name not in plan and not s.optional]
    if missing and not (lenient and plan):
        where = ", ".join(t.origin for t in trees) or "nothing"
        raise DatasetError(f"dataset {spec.key!r}: cannot find the {missing[0]!r} split in {where}; "
                           f"pass --split {missing[0]} if the source holds only that split")
    for name in missing:
        say(f"note: {spec.key}: the source holds no {name!r} split; add it later with --from <its archive>")
    return plan


# ---------------------------------------------------------------- normalisation

def _write_png(src: Path, dst: Path, half: str | None, side: str | None) -> str:
    """Write ``src`` (or one half of it) as PNG; returns the transform applied."""
    if half is None and src.suffix.lower() == ".png":
        images.inspect(src, decode=True)  # the copy must be readable by the suite's reader too
        shutil.copyfile(src, dst)
        return "copy"
    image = layouts.open_rgb(src)
    if half is not None:
        rainy, clean = layouts.split_side_by_side(image, side, str(src))
        image = rainy if half == "rainy" else clean
    image.save(dst, format="PNG")
    if half is None:
        return "decoded-to-png"
    which = side if half == "rainy" else ("right" if side == "left" else "left")
    return f"{which}-half-of-side-by-side"


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def normalise_split(spec: DatasetSpec, split: SplitSpec, folder: Path, out: Path, origin: str = "",
                    file_rows: dict[str, tuple[str, int]] | None = None, workers: int = 4) -> dict:
    """Pair ``folder``, check it and write ``out/{input,target}/<id>.png`` + ``out/manifest.json``."""
    if spec.paired:
        layout, _ = layouts.detect_layout(folder, spec.rainy_side)
        items = layouts.find_pairs(folder, spec.rainy_side)
    else:
        layout, items = "images", layouts.find_images(folder, spec.rainy_side)
    if split.id_range is not None:
        items = [p for p in items if _in_range(p.id, split.id_range)]
    if spec.layout not in ("auto", "images", layout):
        say(f"note: {spec.key}/{split.name}: layout {layout!r} found in {folder} "
             f"(the official release uses {spec.layout!r})")
    if split.count is not None and len(items) != split.count:
        hint = " (does the source hold this split? --split picks the splits to build)" if not items else ""
        raise DatasetError(f"dataset {spec.key!r} split {split.name!r}: found {len(items)} "
                           f"{'pairs' if spec.paired else 'images'} in {folder}, expected {split.count}{hint}")
    if file_rows:
        _check_sources(spec, items, file_rows)
    (out / "input").mkdir(parents=True)
    if spec.paired:
        (out / "target").mkdir()
    first_use = {}
    for p in items:  # DDN: one clean image serves 14 pairs; write it once, link the rest
        if p.target is not None and p.rainy_side is None:
            first_use.setdefault(p.target, p.id)

    def one(p: Pair) -> dict:
        entry = {"id": p.id}
        inp = out / "input" / f"{p.id}.png"
        half = "rainy" if p.rainy_side else None
        entry["input"] = {"from": _rel(p.input, folder),
                          "transform": _write_png(p.input, inp, half, p.rainy_side)}
        if p.target is not None:
            tgt = out / "target" / f"{p.id}.png"
            if p.rainy_side is None and first_use[p.target] != p.id:
                entry["target"] = {"from": _rel(p.target, folder), "transform": "same-as-target-of-"
                                   + first_use[p.target]}
            else:
                entry["target"] = {"from": _rel(p.target, folder),
                                   "transform": _write_png(p.target, tgt, "clean" if half else None, p.rainy_side)}
        return entry

    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL releases the GIL while coding images
        entries = list(pool.map(one, items))
    for p, e in zip(items, entries):
        if "target" in e and e["target"]["transform"].startswith("same-as-target-of-"):
            src = out / "target" / f"{first_use[p.target]}.png"
            _link_or_copy(src, out / "target" / f"{p.id}.png")
    return _finish_manifest(out, entries, dataset=spec.key, split=split.name, layout=layout, source=origin,
                            paired=spec.paired)


def _finish_manifest(out: Path, entries: list[dict], **meta) -> dict:
    """Add sha256 and size of every written file, check pair sizes, write manifest.json."""
    for e in entries:
        inp = out / "input" / f"{e['id']}.png"
        e["input"]["sha256"], size = sha256_file(inp), _size(inp)
        e["size"] = list(size)
        if "target" in e:
            tgt = out / "target" / f"{e['id']}.png"
            e["target"]["sha256"] = sha256_file(tgt)
            if _size(tgt) != size:
                raise DatasetError(f"dataset {meta['dataset']!r}: size mismatch for id {e['id']!r}: input "
                                   f"{e['input']['from']} is {size}, target {e['target']['from']} is {_size(tgt)}")
    manifest = {**meta, "count": len(entries), "created_by": "benchmark.datasets", "items": entries}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def write_manifest(folder: Path | str, dataset: str, split: str, source: str = "") -> dict:
    """Record ids, sizes and sha256 of a split folder already in the normalised layout.

    For data written by other code (the rain-synth generator), so that ``verify`` can check it.
    """
    folder = Path(folder)
    paired = (folder / "target").is_dir()
    items = layouts.find_pairs(folder) if paired else layouts.find_images(folder / "input")
    entries = []
    for p in items:
        if p.input != folder / "input" / f"{p.id}.png":
            raise DatasetError(f"{p.input}: not in the normalised layout input/<id>.png")
        entry = {"id": p.id, "input": {"from": _rel(p.input, folder), "transform": "as-is"}}
        if p.target is not None:
            entry["target"] = {"from": _rel(p.target, folder), "transform": "as-is"}
        entries.append(entry)
    return _finish_manifest(folder, entries, dataset=dataset, split=split,
                            layout="input/target" if paired else "images", source=source, paired=paired)


def _rel(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _check_sources(spec: DatasetSpec, items: list[Pair], rows: dict[str, tuple[str, int]]) -> None:
    """Compare source files of a manually supplied tree with the per-file list (by folder + name)."""
    def key(path: Path) -> tuple[str, str]:
        return path.parent.name.lower().replace(" ", "_"), path.name
    table = {key(Path(r)): d for r, (d, _) in rows.items()}
    files = {p.input for p in items} | {p.target for p in items if p.target is not None}
    bad = [f for f in sorted(files) if key(f) in table and sha256_file(f) != table[key(f)]]
    unknown = [f for f in files if key(f) not in table]
    ok = len(files) - len(bad) - len(unknown)
    if bad or unknown:
        say(f"warning: {spec.key}: {ok} of {len(files)} source files match the published per-file sha256 "
             f"list; {len(bad)} differ (e.g. {bad[:1]}), {len(unknown)} are not listed (e.g. {unknown[:1]})")


def _install(new: Path, final: Path) -> None:
    """Move a finished split into place, replacing an older copy only once the new one is whole."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(new, final)
        shutil.rmtree(old)
    else:
        os.replace(new, final)


def _wanted(spec: DatasetSpec, splits: list[str] | None) -> list[SplitSpec]:
    if not splits:
        return list(spec.splits.values())
    unknown = [s for s in splits if s not in spec.splits]
    if unknown:
        raise DatasetError(f"dataset {spec.key!r} has no split {unknown[0]!r}; it has {list(spec.splits)}")
    return [spec.splits[s] for s in splits]


def _split_ready(folder: Path, split: SplitSpec) -> bool:
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        count = json.loads(manifest.read_text()).get("count")
    except json.JSONDecodeError:
        return False
    n = sum(1 for _ in (folder / "input").glob("*.png")) if (folder / "input").is_dir() else -1
    return n == count and (split.count is None or count == split.count)


# ---------------------------------------------------------------- public API

def download(name: str, root: Path | str = "data", source: Path | str | None = None,
             splits: list[str] | None = None, registry: dict | Path | str | None = None,
             force: bool = False, progress: bool = True) -> Path:
    """Obtain, check and normalise dataset ``name`` into ``root/name``; returns that folder."""
    spec = get_spec(name, registry)
    if spec.source == "embedded":
        raise DatasetError(f"dataset {name!r} is generated by this project, not downloaded; "
                           f"run the pipeline's prepare stage (benchmark.synth) to create it")
    root = Path(root)
    dest, downloads = root / name, root / "downloads" / name
    wanted = _wanted(spec, splits)
    needed = wanted if splits else [s for s in wanted if not s.optional]
    if source is None and not force and all(_split_ready(dest / s.name, s) for s in needed):
        say(f"{name}: already present in {dest}")
        return dest
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".work-", dir=downloads) as tmp:
        work = Path(tmp)
        trees = _gather(spec, wanted, downloads, work, Path(source) if source else None, progress)
        plan = _assign(spec, trees, wanted, lenient=source is not None and not splits)
        rows = _checksum_list(spec) if spec.files is not None and source is not None else None
        built, counts = {}, {}
        for split_name, (folder, tree) in plan.items():
            out = work / "out" / split_name
            try:
                counts[split_name] = normalise_split(spec, spec.splits[split_name], folder, out, tree.origin,
                                                    rows)["count"]
            except (DatasetError, DataError) as exc:
                # Name files as "<archive>:/<path inside>" rather than by the temporary folder.
                shown = f"{tree.archive}:" if tree.archive is not None else str(tree.root)
                raise type(exc)(str(exc).replace(str(tree.root), shown)) from exc
            built[split_name] = out
        for split_name, out in built.items():  # all splits checked before any is installed
            _install(out, dest / split_name)
        for t in trees:  # only now is the first-download checksum worth keeping
            if t.archive is not None and t.spec is not None and t.spec.sha256 is None and source is None:
                _record_sha256(t.archive, t.digest)
    for s in wanted:
        if s.name not in built and s.optional:
            say(f"note: optional split {s.name!r} of {name} not obtained")
    say(f"{name}: " + ", ".join(f"{k} {n}" for k, n in counts.items()) + f" -> {dest}")
    return dest


def verify(name: str, root: Path | str = "data", registry: dict | Path | str | None = None) -> dict[str, int]:
    """Re-check a normalised dataset: pairing, sizes, sha256 against the manifest, spec counts.

    Returns {split: count}; raises DatasetError listing the problems.
    """
    spec = get_spec(name, registry)
    dest = Path(root) / name
    counts, problems = {}, []
    for s in spec.splits.values():
        folder = dest / s.name
        if not folder.is_dir():
            if not s.optional:
                problems.append(f"{folder}: missing (run `msgnn-bench datasets download {name}`)")
            continue
        try:
            items = layouts.find_pairs(folder) if spec.paired else layouts.find_images(folder / "input")
        except LayoutError as exc:
            problems.append(str(exc))
            continue
        manifest_path = folder / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
        except json.JSONDecodeError as exc:
            problems.append(f"{manifest_path}: unreadable ({exc})")
            continue
        expected = s.count if s.count is not None else (manifest or {}).get("count")
        if expected is not None and len(items) != expected:
            problems.append(f"{folder}: {len(items)} {'pairs' if spec.paired else 'images'}, "
                            f"expected {expected}{'' if s.count is not None else ' (recorded)'}")
        if manifest is None and spec.source != "embedded":
            problems.append(f"{manifest_path}: missing; the folder was not written by `datasets download`")
        elif manifest is not None:
            known = {e["id"]: e for e in manifest["items"]}
            for p in items:
                e = known.get(p.id)
                if e is None:
                    problems.append(f"{p.input}: not in {manifest_path}")
                    continue
                for role, path in (("input", p.input), ("target", p.target)):
                    if path is not None and sha256_file(path) != e[role]["sha256"]:
                        problems.append(f"{path}: sha256 differs from {manifest_path}")
                if p.target is not None and _size(p.input) != _size(p.target):
                    problems.append(f"{p.input}: size differs from its target {p.target}")
        counts[s.name] = len(items)
    if problems:
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DatasetError(f"dataset {name!r} failed verification:\n  " + "\n  ".join(problems[:20]) + more)
    return counts


def ensure_dataset(name: str, root: Path | str = "data", registry: dict | Path | str | None = None) -> Path:
    """Return ``root/name`` ready for use, downloading it if possible (used by the prepare stage).

    Raises ManualDownloadRequired (message = the manual step, also printed) or DatasetError.
    """
    spec = get_spec(name, registry)
    dest = Path(root) / name
    if spec.source == "embedded":
        if all((dest / s).is_dir() for s in spec.splits):
            return dest
        raise DatasetError(f"dataset {name!r} is generated, not downloaded: create it with the prepare "
                           f"stage's generator (benchmark.synth) into {dest}")
    try:
        return download(name, root, registry={name: spec})
    except ManualDownloadRequired as exc:
        say(str(exc))
        raise


def dataset_path(name: str, root: Path | str = "data", registry: dict | Path | str | None = None) -> Path:
    get_spec(name, registry)
    return Path(root) / name


# ---------------------------------------------------------------- CLI

def _cmd_list(args: argparse.Namespace) -> int:
    reg = load_registry(args.registry)
    print(f"{'key':<11}{'source':<10}{'splits':<28}{'present':<9}title")
    for key, s in reg.items():
        splits = ", ".join(f"{n} {sp.count if sp.count is not None else '?'}{'*' if sp.optional else ''}"
                           for n, sp in s.splits.items())
        present = "yes" if all(_split_ready(Path(args.root) / key / n, sp) for n, sp in s.splits.items()
                               if not sp.optional) else "no"
        print(f"{key:<11}{s.source:<10}{splits:<28}{present:<9}{s.title}")
    print("(* optional split; source 'manual' = needs a manual step, see `datasets download NAME`)")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    download(args.name, args.root, source=args.source, splits=args.split, registry=args.registry,
             force=args.force)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    counts = verify(args.name, args.root, args.registry)
    print(f"{args.name}: OK ({', '.join(f'{k} {v}' for k, v in counts.items())})")
    return 0


def _cmd_path(args: argparse.Namespace) -> int:
    path = dataset_path(args.name, args.root, args.registry)
    if not path.is_dir():
        raise DatasetError(f"dataset {args.name!r} is not in {path}; run `msgnn-bench datasets download {args.name}`")
    print(path.resolve())
    return 0


def build_parser(prog: str = "msgnn-bench datasets") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Obtain, normalise and check deraining datasets.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default="data", help="data folder (default: data)")
    common.add_argument("--registry", default=None, help="dataset registry yaml (default: benchmark/datasets.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", parents=[common], help="list datasets and whether they are present")
    listing.set_defaults(fn=_cmd_list)
    p = sub.add_parser("download", parents=[common], help="download (or take --from), check and normalise")
    p.add_argument("name")
    p.add_argument("--from", dest="source", default=None, help="a manually obtained archive or extracted folder")
    p.add_argument("--split", action="append", choices=SPLITS, help="only this split (repeatable)")
    p.add_argument("--force", action="store_true", help="rebuild even if already present")
    p.set_defaults(fn=_cmd_download)
    for name, fn, text in (("verify", _cmd_verify, "re-check pairs, sizes, checksums and counts"),
                           ("path", _cmd_path, "print the dataset's folder")):
        q = sub.add_parser(name, parents=[common], help=text)
        q.add_argument("name")
        q.set_defaults(fn=fn)
    return parser


def datasets_main(argv: list[str] | None = None) -> int:
    """CLI entry: 0 ok, 1 error, 2 usage error, 3 manual download step needed."""
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ManualDownloadRequired as exc:
        say(f"error: {exc}")
        return 3
    except (DatasetError, DataError) as exc:
        say(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(datasets_main())
