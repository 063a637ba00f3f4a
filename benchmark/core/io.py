"""Atomic file writing, checkpoints and seeding.

Everything the suite writes goes through a temporary file in the same folder followed by
``os.replace``, so a crash or SIGKILL leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import csv
import errno
import json
import os
import pickle
import random
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import torch

CKPT_FORMAT = "msgnn-bench/1"


class WriteError(OSError):
    """A write that failed (disk full, quota, read-only folder); the previous file is untouched.
    ``reason`` is the system's word for it, for callers that phrase their own message."""

    def __init__(self, path: Path, reason: str):
        # a new output (derain, a first evaluation) had no previous file to keep
        kept = "the previous file is kept" if Path(path).exists() else "nothing was written"
        super().__init__(f"{path}: could not write ({reason}); {kept}")
        self.reason = reason


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], *, replace: bool = True,
                 before_replace: Callable[[], None] | None = None) -> None:
    """Write ``path`` through ``write(binary_file)``, so that it holds the old content or the new, never half.

    The data go to a uniquely named temporary file in the target folder (with the permissions an
    ordinary ``open`` would give under the user's umask), are synced to disk, and only then take the
    name with ``os.replace``. ``before_replace`` runs just before that (``last.pt`` keeps its
    predecessor with it). With ``replace=False`` an existing file is never replaced: the finished
    file is linked into place, or the name claimed exclusively, and ``FileExistsError`` says it was
    there. An ``OSError`` while writing (or torch's RuntimeError around one) is a ``WriteError`` naming
    ``path``; on any failure the temporary file is removed.
    """
    path = Path(path)
    tmp, taken = None, False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; the file is the user's, not a secret
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        if replace:
            os.replace(tmp, path)
        else:
            taken = not _place_new(Path(tmp), path)
    except OSError as exc:
        raise WriteError(path, exc.strerror or str(exc)) from None
    except RuntimeError as exc:  # torch.save's zip writer reports the file's OSError (a full disk) as this
        cause = _os_error_behind(exc)
        if cause is None:
            raise
        raise WriteError(path, cause.strerror or str(cause)) from None
    finally:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
    if taken:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path))


# The temporary files ``atomic_write`` makes: ``.<name>.<mkstemp's 8 random characters>.tmp``. A process
# killed while writing (SIGKILL, power loss) leaves one behind; nothing else in a run folder looks so.
_TEMP = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def orphan_temps(folder: str | Path) -> list[Path]:
    """The temporary files of unfinished atomic writes directly in ``folder`` (not in its subfolders)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _TEMP.fullmatch(p.name) and p.is_file() and not p.is_symlink())


def remove_orphan_temps(folder: str | Path) -> list[Path]:
    """Delete ``orphan_temps(folder)``; only safe while nothing else writes there (a run folder under
    its lock). Returns what was removed."""
    gone = []
    for p in orphan_temps(folder):
        try:
            p.unlink()
            gone.append(p)
        except FileNotFoundError:
            pass
    return gone


def _os_error_behind(exc: BaseException) -> OSError | None:
    """The ``OSError`` an exception was raised while handling, if any (a few links deep)."""
    for _ in range(5):
        exc = exc.__cause__ or exc.__context__
        if exc is None or isinstance(exc, OSError):
            return exc
    return None


def _place_new(tmp: Path, path: Path) -> bool:
    """Give ``tmp`` the name ``path`` unless a file already has it (then False)."""
    try:
        try:
            os.link(tmp, path)
        except OSError as exc:
            if isinstance(exc, FileExistsError):
                raise
            # no hard links on this file system: claim the name first, then fill it
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            os.replace(tmp, path)
    except FileExistsError:
        return False
    return True


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, allow_nan=True) + "\n").encode()))


def write_csv(path: str | Path, rows: list[dict], fieldnames: list[str] | None = None) -> None:
    import io

    if fieldnames is None:  # union of the rows' keys, in first-seen order (rows may gain columns)
        fieldnames = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fieldnames)
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def read_csv(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """A CSV file's column names (those of its header, even with no rows) and its rows, as strings."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def read_csv_rows(path: str | Path) -> list[dict[str, str]]:
    """A CSV file's rows as dicts keyed by its header (the values are strings)."""
    return read_csv(path)[1]


def save_torch(path: str | Path, obj: Any) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


# What a checkpoint archive may expand to: its members are stored (torch writes them uncompressed),
# so a real file's declared sizes add up to about its own size; a deflate bomb declares far more.
MAX_UNPACKED_RATIO = 4.0
MAX_UNPACKED_SLACK = 2**20


def _check_archive_sizes(path: Path) -> None:
    """Refuse a zip checkpoint whose members declare more bytes than ``MAX_UNPACKED_RATIO`` x its
    size (+ ``MAX_UNPACKED_SLACK``), from the central directory alone, before anything is inflated."""
    import zipfile

    try:
        if not zipfile.is_zipfile(path):
            return  # a legacy (non-zip) pickle: torch reads it as is
        with zipfile.ZipFile(path) as zf:
            declared = sum(i.file_size for i in zf.infolist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return  # torch.load names the damage below
    limit = MAX_UNPACKED_RATIO * path.stat().st_size + MAX_UNPACKED_SLACK
    if declared > limit:
        raise ValueError(f"{path}: refused to load: its members declare {declared} bytes unpacked from "
                         f"{path.stat().st_size} bytes on disk (limit {int(limit)}; a decompression bomb?)")


def load_torch(path: str | Path) -> Any:
    """Read a checkpoint with ``torch.load(weights_only=True)``: only tensors and plain Python
    containers can come out of it, never an object whose unpickling runs code. Every checkpoint the
    suite writes holds only such types (RNG states included, see ``rng_state``), and so do the
    official state_dicts. A zip whose declared sizes exceed a few times its own size (a deflate
    bomb) is refused before anything is read. Any failure is one ``ValueError`` line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    _check_archive_sizes(path)
    try:
        with warnings.catch_warnings():  # torch warns about plain pickles before refusing them below
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        what = re.search(r"GLOBAL (\S+)", str(exc))
        name = what.group(1) if what else _first_import(path)
        if name:
            raise ValueError(f"{path}: refused to load: it would import {name} (only weights-only checkpoints "
                             "are read; a pickle can run code when loaded)") from None
        raise ValueError(f"{path}: not a readable checkpoint (truncated, corrupt or not a PyTorch file)") from None
    except Exception as exc:  # torch raises several unrelated types for a truncated/corrupt file
        raise ValueError(f"{path}: not a readable checkpoint (truncated or corrupt: {type(exc).__name__}: "
                         f"{_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def _first_import(path: Path) -> str | None:
    """The first global a plain (non-zip) pickle would import, read without executing anything."""
    import pickletools

    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(path.read_bytes()):
            if op.name == "GLOBAL":
                return str(arg).replace(" ", ".")
            if op.name == "STACK_GLOBAL" and len(strings) >= 2:
                return f"{strings[-2]}.{strings[-1]}"
            if isinstance(arg, str):
                strings.append(arg)
    except Exception:  # not a pickle at all (garbage, truncated): no import to name
        return None
    return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain numbers, so that ``last.pt`` loads weights-only."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    st = {"python": {"version": int(version), "mt": torch.tensor(mt, dtype=torch.int64),
                     "gauss": gauss},
          "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                    "has_gauss": int(has_gauss), "cached": float(cached)},
          "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    py, npst = st["python"], st["numpy"]
    random.setstate((py["version"], tuple(int(v) for v in py["mt"].tolist()), py["gauss"]))
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached"]))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


class _NoBar:
    def update(self, n): pass
    def set_postfix(self, **kw): pass
    def close(self): pass


def progress(total: int, start: int = 0, enabled: bool = True, desc: str = ""):
    """A tqdm bar on stderr (a do-nothing stand-in when disabled: logs and JSON output stay clean)."""
    if not enabled:
        return _NoBar()
    import sys

    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc=desc, dynamic_ncols=True, mininterval=2.0, file=sys.stderr)
