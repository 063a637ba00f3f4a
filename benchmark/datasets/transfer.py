"""Moving bytes for the dataset layer: HTTP downloads that stream, retry and resume with Range
requests; zip/tar extraction that checks every entry before writing anything; file hashes.

Nothing here knows about datasets.yaml: ``benchmark.datasets.acquisition`` decides what to fetch and check.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import re
import socket
import stat
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO

from tqdm import tqdm

USER_AGENT = "msgnn-bench-datasets/1.0 (+urllib)"
TIMEOUT_S = 60.0
RETRIES = 4
RETRY_DELAY_S = 1.0
CHUNK = 1 << 20
# A body larger than this is refused when the spec gives no size (with a size, one byte more is refused).
MAX_DOWNLOAD_BYTES = 64 * 2**30
# A transfer slower than MIN_RATE_BPS over any RATE_WINDOW_S is abandoned (a server trickling a byte
# every 2 s would otherwise never time out: each read returns before the socket timeout).
MIN_RATE_BPS = 4096
RATE_WINDOW_S = 60.0


class DatasetError(Exception):
    """Any failure to obtain or check a dataset; the message is meant for the user."""


class OfflineError(DatasetError):
    """A download URL could not be reached at all."""


class UnsafeArchiveError(DatasetError):
    """An archive entry would escape the extraction folder or is a link/device."""


class CorruptArchiveError(DatasetError):
    """A truncated, damaged or non-archive file."""


# ---------------------------------------------------------------- hashing

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The id git gives the file's content (lets us check files published only as git blobs)."""
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- HTTP

class _Truncated(Exception):
    pass


class _TooBig(Exception):
    pass


def _is_unreachable(exc: BaseException) -> bool:
    """A failure to connect at all (no DNS, refused, no route, connect timeout)."""
    if isinstance(exc, urllib.error.HTTPError):
        return False
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return isinstance(reason, (socket.gaierror, ConnectionRefusedError, TimeoutError, OSError))


def http_download(url: str, dest: Path, *, size: int | None = None, retries: int = RETRIES,
                  timeout: float = TIMEOUT_S, progress: bool = True, resume: bool = True,
                  max_bytes: int | None = None) -> Path:
    """Stream ``url`` into ``dest`` through ``dest.part``, resuming with HTTP Range after a drop.

    A ``.part`` left by an earlier run is resumed too, unless ``resume`` is false: a file with no
    published checksum must come whole from one response, since its hash becomes the trusted
    first-download value and a resumed transfer could splice two different bodies. A 206 answer
    must carry the ``Content-Range`` asked for (start, length, total); otherwise the transfer
    starts over. The body may not exceed ``size`` (when known) or ``max_bytes``
    (``MAX_DOWNLOAD_BYTES``): the ``.part`` is removed and the download refused. A transfer
    slower than ``MIN_RATE_BPS`` over ``RATE_WINDOW_S`` is abandoned like a dropped connection.
    Raises OfflineError when the server cannot be reached at all and DatasetError for HTTP
    errors, oversized bodies or repeated failures.
    """
    part = dest.with_name(dest.name + ".part")
    limit = size if size is not None else (max_bytes if max_bytes is not None else MAX_DOWNLOAD_BYTES)
    if not resume:
        part.unlink(missing_ok=True)
    responded = False  # any HTTP response in this call: later failures are drops, not offline
    last: BaseException | None = None
    for attempt in range(retries + 1):
        if not resume:
            part.unlink(missing_ok=True)
        have = part.stat().st_size if part.exists() else 0
        if size is not None and have == size:
            break
        headers = {"User-Agent": USER_AGENT}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
                responded = True
                status = resp.status
                start = 0
                length = resp.headers.get("Content-Length")
                expected = int(length) if length is not None and length.isdigit() else None
                if status == 206:
                    crange = resp.headers.get("Content-Range", "")
                    m = re.fullmatch(r"\s*bytes (\d+)-(\d+)/(\d+|\*)\s*", crange)
                    start = int(m.group(1)) if m else -1
                    whole = int(m.group(3)) if m and m.group(3) != "*" else None
                    if (start != have or (expected is not None and int(m.group(2)) - start + 1 != expected)
                            or (whole is not None and size is not None and whole != size)):
                        # not the rest of the same file: start over, never splice
                        part.unlink(missing_ok=True)
                        raise _Truncated(f"unexpected 206 Content-Range {crange!r} (asked for bytes {have}-)")
                total = start + expected if expected is not None else size
                if total is not None and total > limit:
                    part.unlink(missing_ok=True)
                    raise _TooBig(f"the server announces {total} bytes, more than "
                                  + (f"the expected size {size}" if size is not None else f"the limit of {limit}"))
                got = 0
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(part, "ab" if start else "wb") as fh, \
                        tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=dest.name,
                             disable=None if progress else True, file=sys.stderr, leave=False) as bar:
                    window_start, window_got = time.monotonic(), 0
                    # read1: whatever has arrived (read(n) would wait for n bytes and hide a trickle)
                    for chunk in iter(lambda: resp.read1(CHUNK), b""):
                        if start + got + len(chunk) > limit:
                            fh.close()
                            part.unlink(missing_ok=True)
                            raise _TooBig("the body exceeds " + (f"the expected size of {size} bytes" if size
                                          is not None else f"the limit of {limit} bytes (max_bytes)"))
                        fh.write(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
                        now = time.monotonic()
                        if now - window_start >= RATE_WINDOW_S:
                            if got - window_got < MIN_RATE_BPS * (now - window_start):
                                raise _Truncated(f"too slow: {got - window_got} bytes in {now - window_start:.0f} s "
                                                 f"(minimum {MIN_RATE_BPS} bytes/s)")
                            window_start, window_got = now, got
                if expected is not None and got < expected:
                    raise _Truncated(f"connection closed after {start + got} of {start + expected} bytes")
            break
        except _TooBig as exc:
            raise DatasetError(f"download of {url} refused: {exc}; nothing kept") from None
        except urllib.error.HTTPError as exc:
            responded = True
            if exc.code == 416 and have:  # nothing left to send: the .part may already be whole
                if size is None or have == size:
                    break
                part.unlink()
            elif exc.code in (408, 429) or exc.code >= 500:
                last = exc
            else:
                raise DatasetError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError, _Truncated, EOFError) as exc:
            if not responded and _is_unreachable(exc):
                raise OfflineError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from exc
            last = exc
        if attempt < retries:
            time.sleep(RETRY_DELAY_S * (attempt + 1))
    else:
        raise DatasetError(f"download of {url} failed after {retries + 1} attempts: {last}")
    os.replace(part, dest)
    return dest


# ---------------------------------------------------------------- archives

def _member_path(name: str, archive: Path) -> Path | None:
    """The safe relative path of an archive entry, or UnsafeArchiveError."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise UnsafeArchiveError(f"{archive}: refusing entry with absolute path {name!r}")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: refusing entry with '..' in its path {name!r}")
    return Path(*parts) if parts else None


def archive_kind(path: Path) -> str:
    if zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    with open(path, "rb") as fh:
        head = fh.read(16)
    raise CorruptArchiveError(f"{path}: neither a zip nor a tar archive (truncated, or an error page?"
                              f" first bytes {head!r})")


# An entry: (name, kind 'file'|'dir'|'other', declared size, packed size or None, opener).
_Entry = tuple[str, str, int, "int | None", Callable[[], IO[bytes]]]


def _zip_entries(zf: zipfile.ZipFile) -> Iterator[_Entry]:
    for info in zf.infolist():
        mode = info.external_attr >> 16  # unix mode, 0 for archives written elsewhere
        special = stat.S_ISLNK(mode) or (stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)))
        kind = "other" if special else "dir" if info.is_dir() else "file"
        # zip checks each entry's CRC at its end
        yield info.filename, kind, info.file_size, info.compress_size, partial(zf.open, info)


def _tar_entries(tf: tarfile.TarFile) -> Iterator[_Entry]:
    for m in tf.getmembers():
        kind = "dir" if m.isdir() else "file" if m.isreg() else "other"
        yield m.name, kind, m.size, None, partial(tf.extractfile, m)  # tar has no checksum: the size is checked


@dataclass(frozen=True)
class ArchiveLimits:
    """What an archive may expand to; a dataset spec raises them when a real archive needs more.

    Images barely compress (PNG/JPEG are compressed already), so real datasets expand about 1:1:
    the largest ones (~3 GB) pass these defaults with a wide margin, while a bomb (zeros packed
    100x or more) does not. ``max_ratio`` applies to the whole archive and, for zip entries of at
    least ``RATIO_MIN_ENTRY`` bytes, to each entry (small files of zeros compress well and are harmless).
    """

    max_unpacked_bytes: int = 20 * 2**30
    max_ratio: float = 100.0
    max_entries: int = 1_000_000


RATIO_MIN_ENTRY = 1 << 20


def _check_entries(archive: Path, entries: list, limits: ArchiveLimits) -> None:
    """Refuse links/devices, unsafe paths, duplicate names and bombs before anything is written."""
    if len(entries) > limits.max_entries:
        raise UnsafeArchiveError(f"{archive}: {len(entries)} entries, more than the limit of {limits.max_entries}")
    files: dict[str, str] = {}
    dirs: set[str] = set()
    total, packed = 0, max(archive.stat().st_size, 1)
    for name, what, size, csize, _ in entries:
        if what == "other":
            raise UnsafeArchiveError(f"{archive}: refusing link or special file {name!r}")
        rel = _member_path(name, archive)
        if rel is None:
            continue
        key = rel.as_posix().casefold()  # 'A.png' and 'a.png' are one file on macOS/Windows
        parents = {p.as_posix().casefold() for p in rel.parents if p != Path(".")}
        if what == "dir":
            if key in files:
                raise UnsafeArchiveError(f"{archive}: entry {name!r} is both a file and a folder")
            dirs.add(key)
            continue
        if key in files:
            raise UnsafeArchiveError(f"{archive}: duplicate entry {name!r} (also {files[key]!r}); the last "
                                     "one would silently replace the first")
        if key in dirs or parents & files.keys():
            raise UnsafeArchiveError(f"{archive}: entry {name!r} is both a file and a folder")
        files[key] = name
        dirs |= parents
        total += size
        if csize is not None and size >= RATIO_MIN_ENTRY and size > limits.max_ratio * max(csize, 1):
            raise UnsafeArchiveError(f"{archive}: refusing entry {name!r}: {size} bytes packed into {csize} "
                                     f"(ratio above {limits.max_ratio:g}; a decompression bomb?)")
        if total > limits.max_unpacked_bytes:
            raise UnsafeArchiveError(f"{archive}: refusing entry {name!r}: the archive would expand to more than "
                                     f"{limits.max_unpacked_bytes} bytes (max_unpacked_bytes)")
    if total > limits.max_ratio * packed:
        raise UnsafeArchiveError(f"{archive}: refusing to expand {packed} bytes into {total} (ratio above "
                                 f"{limits.max_ratio:g}; a decompression bomb?); largest entry "
                                 f"{max(entries, key=lambda e: e[2])[0]!r}")


def _copy_bounded(src: IO[bytes], out: IO[bytes], limit: int, name: str, archive: Path) -> None:
    """Copy at most ``limit`` bytes (the declared size): a header that lies cannot write more."""
    left = limit
    for chunk in iter(lambda: src.read(min(CHUNK, left + 1)), b""):
        left -= len(chunk)
        if left < 0:
            raise CorruptArchiveError(f"{archive}: entry {name!r} holds more data than its declared size")
        out.write(chunk)


def safe_extract(archive: Path, dest: Path, limits: ArchiveLimits | None = None) -> Path:
    """Extract a zip or (compressed) tar into the new folder ``dest``.

    Every entry is checked before anything is written: only regular files and folders, no
    absolute or '..' paths, no duplicate names, sizes within ``limits``. Damage found while
    reading raises CorruptArchiveError.
    """
    limits = limits or ArchiveLimits()
    kind = archive_kind(archive)
    dest.mkdir(parents=True)
    try:
        with zipfile.ZipFile(archive) if kind == "zip" else tarfile.open(archive, "r:*") as handle:
            entries = list(_zip_entries(handle) if kind == "zip" else _tar_entries(handle))
            _check_entries(archive, entries, limits)
            for name, what, size, _, opener in entries:
                rel = _member_path(name, archive)
                if rel is None:
                    continue
                if what == "dir":
                    (dest / rel).mkdir(parents=True, exist_ok=True)
                    continue
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                with opener() as src, open(dest / rel, "wb") as out:
                    _copy_bounded(src, out, size, name, archive)
                if (dest / rel).stat().st_size != size:
                    raise CorruptArchiveError(f"{archive}: entry {name!r} is truncated")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise CorruptArchiveError(f"{archive}: damaged archive ({exc})") from exc
    return dest
