"""Atomic file writing, checkpoints and seeding.

Everything the suite writes goes through a temporary file in the same folder followed by
``os.replace``, so a crash or SIGKILL leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import csv
import json
import os
import pickle
import random
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

CKPT_FORMAT = "msgnn-bench/1"


def _atomic(path: Path, write) -> None:
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # disk full, quota, read-only folder: the old file is untouched
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise OSError(f"{path}: could not write ({exc.strerror or exc}); the previous file is kept") from None
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    _atomic(Path(path), lambda f: f.write((json.dumps(obj, indent=2, allow_nan=True) + "\n").encode()))


def write_csv(path: str | Path, rows: list[dict], fieldnames: list[str] | None = None) -> None:
    import io

    if fieldnames is None:  # union of the rows' keys, in first-seen order (rows may gain columns)
        fieldnames = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fieldnames)
    w.writeheader()
    w.writerows(rows)
    _atomic(Path(path), lambda f: f.write(buf.getvalue().encode()))


def save_torch(path: str | Path, obj: Any) -> None:
    _atomic(Path(path), lambda f: torch.save(obj, f))


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
    _atomic(Path(path), lambda f: f.write(text.encode()))


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
