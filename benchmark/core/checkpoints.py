"""Every checkpoint the suite writes or reads: ``model.pt`` (a trained model), ``last.pt`` (the
resumption state of a run) with one good state kept back in ``last.prev.pt``, the run fingerprint
that decides whether a ``last.pt`` may be resumed, the run-folder lock and the free-space check.

All files hold only tensors and plain Python data and are read with ``torch.load(weights_only=True)``
(``io.load_torch``), so a hostile file cannot run code. A week-long run must lose minutes to a fault,
never the run: a truncated or corrupt ``last.pt`` falls back to ``last.prev.pt`` (or a fresh start)
with one warning, and every write goes through a temporary file so the old state survives a crash or
a full disk.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import os
import shutil
import socket
import sys
import time
import typing
from pathlib import Path
from typing import Any

import torch

from benchmark.core import deps, io

LAST, PREV, LOCK = "last.pt", "last.prev.pt", "train.lock"
# Every package a train stage's code deps in dvc.yaml name (tests/test_dvc_deps.py checks the cover):
# a code change that makes DVC rerun a stage must also stop it from resuming an older run.


class CheckpointError(ValueError):
    """A checkpoint or run-folder problem, described in one line that names the file."""


# ---------------------------------------------------------------- model.pt

def save_model(path: str | Path, name: str, args: dict, model: torch.nn.Module, **meta) -> None:
    io.save_torch(path, {"format": io.CKPT_FORMAT, "model_name": name, "model_args": args,
                         "state_dict": model.state_dict(), **meta})


def _shape_problem(path: Path, what: str, theirs: dict, ours: dict) -> str:
    """'' when ``theirs`` fits ``ours`` key by key and shape by shape, else the first difference."""
    missing, extra = sorted(ours.keys() - theirs.keys()), sorted(theirs.keys() - ours.keys())
    if missing or extra:
        return (f"{path}: weights do not fit {what}: {len(missing)} tensor(s) missing (e.g. {missing[:1]}), "
                f"{len(extra)} unexpected (e.g. {extra[:1]})")
    for k, v in theirs.items():
        if not isinstance(v, torch.Tensor) or tuple(v.shape) != tuple(ours[k].shape):
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            return f"{path}: weights do not fit {what}: {k} is {shape} in the file, {tuple(ours[k].shape)} in the model"
    return ""


# An integer builder argument stored in a checkpoint may be at most this many times its default
# (and at least ARG_FLOOR): a file's ``{'channels': 8000}`` or ``{'stages': 10**6}`` would allocate
# gigabytes or build for hours before any weight is compared. Real variants stay far below it.
ARG_FACTOR, ARG_FLOOR, ARG_SEQ_MAX = 8, 32, 16


def _arg_problem(name: str, default: Any, annotation: Any, value: Any) -> str:
    """'' when ``value`` is a sensible value for a builder argument of this default/annotation."""
    def scalar(d: Any, v: Any) -> str:
        if isinstance(d, bool):
            return "" if isinstance(v, bool) else f"must be true or false, got {v!r}"
        if isinstance(d, int):
            if not isinstance(v, int) or isinstance(v, bool):
                return f"must be a whole number, got {v!r}"
            hi = 2**63 - 1 if "seed" in name else max(ARG_FACTOR * d, ARG_FLOOR)
            return "" if 0 <= v <= hi else f"must be between 0 and {hi}, got {v!r}"
        if isinstance(d, float):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            return "" if ok else f"must be a finite number, got {v!r}"
        if isinstance(d, str):
            choices = [a for a in typing.get_args(annotation) if isinstance(a, str)]
            if not isinstance(v, str):
                return f"must be a string, got {v!r}"
            return "" if not choices or v in choices else f"must be one of {', '.join(choices)}, got {v!r}"
        if d is None:  # an optional setting: a plain number or string
            ok = v is None or isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**31)
            return "" if ok else f"must be empty, a string or a whole number below 2**31, got {v!r}"
        return ""
    if isinstance(default, (tuple, list)):
        if not isinstance(value, (tuple, list)) or not 0 < len(value) <= ARG_SEQ_MAX:
            return f"must be a list of at most {ARG_SEQ_MAX} values, got {value!r}"
        ints = bool(default) and all(isinstance(e, int) and not isinstance(e, bool) for e in default)
        # a list of numbers with any float in it (MSGNN's scales (1, 0.5, 0.25)) takes any finite number:
        # its first element alone (the int 1) would refuse 0.5 (found by the rehearsal: scales-1-2)
        floats = bool(default) and not ints and all(isinstance(e, (int, float)) and not isinstance(e, bool)
                                                    for e in default)
        d = max(default) if ints else float(default[0]) if floats else (default[0] if default else None)
        for x in value:
            if problem := scalar(d, x):
                return problem
        return ""
    return scalar(default, value)


def check_model_args(name: str, args: Any, where: str) -> dict:
    """``args`` if every entry is a known builder argument of model ``name`` with a value in range
    (types as the builder's defaults, whole numbers within ``ARG_FACTOR`` x the default), else one
    CheckpointError naming ``where`` (the file), the argument and the value. Runs before anything is
    built, so that a hostile file cannot make the builder allocate gigabytes or loop for hours."""
    from benchmark.core.registry import get_builder

    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise CheckpointError(f"{where}: model_args must be a mapping of argument names, got {type(args).__name__}")
    params = inspect.signature(get_builder(name)).parameters
    for k, v in args.items():
        p = params.get(k)
        if p is None or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is p.empty:
            raise CheckpointError(f"{where}: model_args.{k}: {name} has no such builder argument")
        if problem := _arg_problem(k, p.default, p.annotation if not isinstance(p.annotation, str) else None, v):
            raise CheckpointError(f"{where}: model_args.{k} {problem} (refused before building {name})")
    return args


def check_tensors(where: Any, state: dict, own: dict | None = None) -> None:
    """Refuse a tensor whose dtype the model cannot hold (an integer, bool or complex tensor where the
    model holds floats: a silent cast would give garbage outputs) and non-finite weights, naming the
    file and the tensor. ``own``: the model's state_dict (meta tensors do); without it every tensor
    must be floating point except BatchNorm's step counters."""
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            continue
        want = own.get(k) if own is not None else None
        wants_float = want.dtype.is_floating_point if want is not None else not k.endswith("num_batches_tracked")
        if wants_float and not v.dtype.is_floating_point:
            raise CheckpointError(f"{where}: tensor {k} is {str(v.dtype).removeprefix('torch.')}, but the model holds "
                                  "floating-point weights there; not a checkpoint of this network")
        if v.dtype.is_floating_point and not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).sum())
            raise CheckpointError(f"{where}: tensor {k} holds {bad} non-finite value(s) (NaN or inf); the weights "
                                  "are broken (a diverged training?)")


def load_model(path: str | Path, expect: str | None = None) -> torch.nn.Module:
    """Rebuild the network recorded in a suite checkpoint and load its weights (strictly).

    The stored builder arguments are range-checked and the network is first built on the meta device
    (no memory), so that its shapes and dtypes are compared with the file's tensors before anything
    real is allocated."""
    from benchmark.core.registry import UnknownModelError, build_model

    path = Path(path)
    ck = io.load_torch(path)
    if not isinstance(ck, dict) or ck.get("format") != io.CKPT_FORMAT:
        raise CheckpointError(f"{path}: not an msgnn-bench checkpoint (for official weights use --official)")
    name, args, state = ck.get("model_name"), ck.get("model_args", {}), ck.get("state_dict")
    if expect is not None and name != expect:
        raise CheckpointError(f"{path}: holds model {name!r}, not {expect!r} as asked")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds no state_dict")
    try:
        check_model_args(name, args, str(path))
        with torch.device("meta"):
            shell = build_model(name, **args)
    except (UnknownModelError, TypeError) as exc:
        raise CheckpointError(f"{path}: holds model {name!r} that cannot be built: {exc}") from None
    except CheckpointError:
        raise
    except ValueError as exc:
        raise CheckpointError(f"{path}: model_args {args} are not valid for {name}: {exc}") from None
    own = shell.state_dict()
    problem = _shape_problem(path, f"{name} {args}", state, own)
    if problem:
        raise CheckpointError(problem)
    check_tensors(path, state, own)
    del shell, own
    model = build_model(name, **args)
    model.load_state_dict(state)
    return model.eval()


# ---------------------------------------------------------------- fingerprint

def files_digest(pairs) -> str:
    """Identity of the training files: name, size and modification time of every input and target
    (cheap, and a regenerated or replaced file counts as changed)."""
    h = hashlib.sha256()
    for pair in pairs:
        for path in (pair.input, pair.target):
            if path is not None:
                st = Path(path).stat()
                h.update(f"{Path(path).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def run_fingerprint(cfg, train_ds, run_id: dict | None = None) -> dict:
    """What a ``last.pt`` must match to be resumed: the training settings, the caller's identity of the
    run (model name and builder arguments), the train stage's code (``deps.training_code``: exactly
    the files DVC watches for that stage) and the training files. Only an
    interrupted run of the very same training continues; after an edit to a switch, the code or the
    data, ``dvc repro`` (which reruns the stage) trains from scratch instead of finishing stale weights."""
    d = dataclasses.asdict(cfg)
    for k in ("log_every", "val_every", "ckpt_every", "val_images", "threads", "source", "workers", "pin_memory",
              "persistent_workers"):
        d.pop(k, None)  # bookkeeping that may change between a run and its resume
    # through JSON so that tuples and lists, or dict order, never make two equal runs differ
    d = json.loads(json.dumps(d, sort_keys=True, default=str))
    ident = json.loads(json.dumps(run_id or {}, sort_keys=True, default=str))
    return {"train": d, "run": ident, "code": deps.digest(deps.training_code((run_id or {}).get("model"))), "data": files_digest(train_ds.pairs)}


def mismatch(saved: dict | None, now: dict) -> str:
    """'' when a checkpoint's fingerprint matches, else what differs, for the user."""
    if not isinstance(saved, dict) or set(saved) != set(now):
        return "written in an older checkpoint format"
    changed = [{"train": "training settings", "run": "model or builder arguments", "code": "training code",
                "data": "training files"}[k] for k in now if saved[k] != now[k]]
    return f"written with other {', '.join(changed)}" if changed else ""


# ---------------------------------------------------------------- last.pt

def save_state(out_dir: str | Path, state: dict[str, Any]) -> None:
    """Write ``last.pt`` so that a good state exists at every instant: the new file is written and
    synced beside the old one, the old one becomes ``last.prev.pt``, then the new one ``last.pt``.
    A full disk (or any write error) leaves the previous files untouched and says so in one line."""
    out_dir = Path(out_dir)
    last, prev = out_dir / LAST, out_dir / PREV

    def keep_previous() -> None:
        if last.exists():
            os.replace(last, prev)

    try:
        io.atomic_write(last, lambda f: torch.save(state, f), before_replace=keep_previous)
    except io.WriteError as exc:
        raise CheckpointError(f"{last}: could not write the checkpoint ({exc.reason}); "
                              f"the previous one is kept") from None


def load_state(out_dir: str | Path, fingerprint: dict, quiet: bool = False) -> dict | None:
    """The newest readable ``last.pt``/``last.prev.pt`` of this very run, or None to start over.

    Prints one line to stderr for each reason a file is not used (unreadable, another run's),
    unless ``quiet`` (a look ahead by the caller; the training says it when it starts)."""
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr))
    out_dir = Path(out_dir)
    for path in (out_dir / LAST, out_dir / PREV):
        if not path.exists():
            continue
        try:
            ck = io.load_torch(path)
            if not isinstance(ck, dict) or not {"model", "optimizer", "step", "rng"} <= ck.keys():
                raise ValueError(f"{path}: not a resumption state of this suite")
        except ValueError as exc:
            say(f"warning: {exc}; ignoring it")
            continue
        changed = mismatch(ck.get("fingerprint"), fingerprint)
        if changed:
            say(f"{path}: {changed}; starting from scratch")
            return None
        if path.name == PREV:
            say(f"warning: resuming from the previous good state {path}")
        return ck
    return None


# ---------------------------------------------------------------- disk space

def state_bytes(model: torch.nn.Module, optimizer_slots: int = 2) -> int:
    """Estimated size of one ``last.pt``: the weights plus the optimiser's per-parameter slots
    (Adam/AdamW keep two moments), in the parameters' own dtype."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return weights + optimizer_slots * trainable


def check_free_space(out_dir: str | Path, model: torch.nn.Module, margin: float = 1.2) -> None:
    """Refuse to start when the run's checkpoints cannot fit: at peak the folder holds ``last.pt``,
    ``last.prev.pt``, the one being written, and ``model.pt`` at the end (what already exists
    there will be replaced, so it counts as available)."""
    out_dir = Path(out_dir)
    one = state_bytes(model)
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    need = int(margin * (3 * one + weights))
    have = shutil.disk_usage(out_dir).free + sum(
        (out_dir / n).stat().st_size for n in (LAST, PREV, "model.pt") if (out_dir / n).exists())
    if have < need:
        raise CheckpointError(f"{out_dir}: not enough free disk space for this run's checkpoints: needs about "
                              f"{need / 2**20:.1f} MiB (3 resumption states of {one / 2**20:.1f} MiB + the model), "
                              f"{have / 2**20:.1f} MiB available; free some space or move runs/")


# ---------------------------------------------------------------- run-folder lock

class RunLock:
    """``train.lock`` in a run folder, holding ``<pid> <host>`` of the training that owns it.

    A second training of the same folder refuses to start instead of interleaving checkpoints. A lock
    left by a process that no longer exists (SIGKILL, power loss) on this host is taken over."""

    def __init__(self, out_dir: str | Path):
        self.path = Path(out_dir) / LOCK
        self.held = False

    def _holder(self) -> tuple[int, str] | None:
        try:
            pid, _, host = self.path.read_text().strip().partition(" ")
            return int(pid), host
        except (OSError, ValueError):
            return None

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            return True
        return True

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:  # just created by another process that has not written its PID yet
                    time.sleep(0.2)
                    if self._holder() is None:  # still unreadable: a leftover of a crash
                        self.path.unlink(missing_ok=True)
                    continue
                pid, host = holder
                if host == socket.gethostname() and not self._alive(pid):
                    print(f"warning: {self.path}: taking over the lock of process {pid}, which no longer runs",
                          file=sys.stderr)
                    self.path.unlink(missing_ok=True)
                    continue
                raise CheckpointError(f"{self.path.parent}: already being trained by process {pid} on {host} "
                                      f"(lock file {self.path}); wait for it or stop it (remove the lock file "
                                      "only if no training runs)")
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.held = True
            return
        raise CheckpointError(f"{self.path}: could not take the run-folder lock; remove the file if no training runs")

    def release(self) -> None:
        if self.held:
            holder = self._holder()
            if holder and holder[0] == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
