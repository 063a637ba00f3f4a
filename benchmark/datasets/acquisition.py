"""Acquisition: find, download, check and extract a dataset's sources, then normalise and install.

Flow of ``download``: find the archives (``--from``, a file already placed in
``<root>/downloads/<key>/``, or an HTTP download that streams, resumes with Range requests and
retries), check size/sha256/git blob id, extract safely into a temporary folder (absolute paths,
``..``, links and devices are refused), pair the files with ``layouts``, write the normalised split
into a temporary folder (``normalise``), check pairs, sizes and counts, and only then move it into
place. Sources without a public direct link stop with the exact manual step. The byte-level parts
(HTTP, extraction, hashes) are ``transfer``.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from benchmark.data import layouts
from benchmark.data.images import DataError
from benchmark.datasets.normalise import _install, _link_or_copy, normalise_split
from benchmark.datasets.specs import (CHECKSUM_DIR, REGISTRY_PATH, ArchiveSpec, ChecksumError, DatasetSpec,
                                      ManualDownloadRequired, SplitSpec, _in_range, get_spec)
from benchmark.datasets.transfer import (CorruptArchiveError, DatasetError, OfflineError, git_blob_sha1,
                                         http_download, safe_extract, say, sha256_file)
from benchmark.datasets.verification import split_ready

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
            # no published sha256: the hash of this download becomes the trusted value, so never a spliced resume
            return http_download(url, downloads / a.file, size=a.size, progress=progress, resume=a.sha256 is not None)
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
        [spec.registry_dir / name, spec.registry_dir / "checksums" / name, CHECKSUM_DIR / name]
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
                f"beside {REGISTRY_PATH.name} and in {CHECKSUM_DIR}).\n{spec.manual}")
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

def _wanted(spec: DatasetSpec, splits: list[str] | None) -> list[SplitSpec]:
    if not splits:
        return list(spec.splits.values())
    unknown = [s for s in splits if s not in spec.splits]
    if unknown:
        raise DatasetError(f"dataset {spec.key!r} has no split {unknown[0]!r}; it has {list(spec.splits)}")
    return [spec.splits[s] for s in splits]


# ---------------------------------------------------------------- work folder

WORK_PREFIX = ".work-"
NO_FLOCK = -1  # a filesystem without flock: nothing is locked there, and no folder is taken for stale


def _flock(path: Path, blocking: bool = True) -> int | None:
    """An exclusive flock on the folder ``path`` (its open descriptor), None when a live process
    holds it, ``NO_FLOCK`` when the filesystem cannot lock. The kernel drops the lock when the holder
    exits, SIGKILL included: unlike a pid file, nothing can go stale."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:
        os.close(fd)
        return NO_FLOCK
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None and fd != NO_FLOCK:
        os.close(fd)


def remove_stale_work(downloads: Path) -> list[Path]:
    """Remove the ``.work-*`` folders of killed downloads from ``downloads``; returns them. A live
    download keeps its folder flocked, so only unlocked ones go (a folder of an older version,
    which locked none, counts as stale)."""
    removed = []
    for path in sorted(downloads.glob(WORK_PREFIX + "*")):
        if path.is_symlink() or not path.is_dir():
            continue
        fd = _flock(path, blocking=False)
        if fd is None or fd == NO_FLOCK:
            continue
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            _unlock(fd)
        if not path.exists():
            removed.append(path)
    if removed:
        say(f"note: removed {len(removed)} work folder(s) of interrupted downloads in {downloads}")
    return removed


@contextlib.contextmanager
def _work_folder(downloads: Path) -> Iterator[Path]:
    """A fresh ``.work-*`` folder in ``downloads``, flocked while this process uses it and removed at
    the end. Clearing the killed downloads' folders and creating (and locking) the new one happen
    under a lock on ``downloads`` itself, so a download starting beside this one never takes this
    folder, created but not yet locked, for a stale one."""
    guard = _flock(downloads)
    try:
        remove_stale_work(downloads)
        work = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=downloads))
        fd = _flock(work)
    finally:
        _unlock(guard)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
        _unlock(fd)


# ---------------------------------------------------------------- public API

def download(name: str, root: Path | str = "data", source: Path | str | None = None,
             splits: list[str] | None = None, registry: dict | Path | str | None = None,
             force: bool = False, progress: bool = True) -> Path:
    """Obtain, check and normalise dataset ``name`` into ``root/name``; returns that folder."""
    spec = get_spec(name, registry)
    if spec.source == "embedded":
        raise DatasetError(f"dataset {name!r} is generated by this project, not downloaded; "
                           f"run the pipeline's prepare stage (benchmark.datasets.synth) to create it")
    root = Path(root)
    dest, downloads = root / name, root / "downloads" / name
    wanted = _wanted(spec, splits)
    needed = wanted if splits else [s for s in wanted if not s.optional]
    if source is None and not force and all(split_ready(dest / s.name, s) for s in needed):
        say(f"{name}: already present in {dest}")
        return dest
    downloads.mkdir(parents=True, exist_ok=True)
    with _work_folder(downloads) as work:  # a killed download's folder goes at the next start
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
        if source is not None:
            _keep_sources(trees, downloads, dest)
    for s in wanted:
        if s.name not in built and s.optional:
            say(f"note: optional split {s.name!r} of {name} not obtained")
    say(f"{name}: " + ", ".join(f"{k} {n}" for k, n in counts.items()) + f" -> {dest}")
    return dest


def _keep_sources(trees: list[_Tree], downloads: Path, dest: Path) -> None:
    """Keep a ``--from`` archive in ``downloads`` under its registered name (a hard link where possible).

    Why: DVC deletes a stage's outputs before it runs, so ``dvc repro`` starts ``prepare@<key>`` from
    an empty ``data/<key>``; the prepare stage rebuilds it from ``data/downloads/<key>/``, which is
    where it looks for a manually obtained archive. Without this copy the dataset that ``--from``
    just built would be gone at the first ``dvc repro``.
    """
    for t in trees:
        if t.archive is None or t.spec is None:
            what = f"the file {t.archive.name}, not a registered archive name," if t.archive is not None \
                else f"the folder {t.root}"
            say(f"note: {dest} was built from {what}; `dvc repro` rebuilds it from the archives in "
                f"{downloads}/ (its prepare stage starts from an empty folder): save the archive there under "
                f"its registered name (`msgnn-bench datasets download {dest.name}` names it)")
            continue
        keep = downloads / t.spec.file
        if keep.exists() and keep.resolve() == t.archive.resolve():
            continue
        if keep.exists() and sha256_file(keep) == t.digest:
            continue
        keep.unlink(missing_ok=True)
        keep.with_name(keep.name + ".sha256").unlink(missing_ok=True)  # recorded for the replaced file
        _link_or_copy(t.archive, keep)
        say(f"kept {t.archive.name} as {keep} (the prepare stage of `dvc repro` rebuilds {dest} from it)")


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
                           f"stage's generator (benchmark.datasets.synth) into {dest}")
    try:
        return download(name, root, registry={name: spec})
    except ManualDownloadRequired as exc:
        say(str(exc))
        raise
