"""Type and range checks of params.yaml values, so that a setting never means something else
than what it says: ``hflip: "false"`` (a string, truthy) or ``batch: "eight"`` must stop the run
at load with one line naming the key and the file, not half a day later with a traceback.

Decision on numbers written without a dot (``lr: 5e-4``): YAML 1.1, which PyYAML follows, reads
them as strings. The user meant a number, so a string that is a plain decimal number is accepted
for a float field and converted; any other string (``lr: fast``) is an error.
"""
from __future__ import annotations

import math
import re
import types
import typing
from pathlib import Path
from typing import Any

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class _Range(typing.NamedTuple):
    lo: float | None = None  # inclusive
    hi: float | None = None  # inclusive
    lo_open: bool = False  # lo itself not allowed
    choices: tuple[str, ...] = ()
    ascending: bool = False


_POS = _Range(0, None, lo_open=True)
_NONNEG = _Range(0, None)
_AT_LEAST_1 = _Range(1, None)
_FRACTION = _Range(0, 1, lo_open=True)  # (0, 1]

# (dataclass name, field) → allowed values; fields not listed are only type-checked
RANGES: dict[tuple[str, str], _Range] = {
    ("TrainCfg", "iters"): _AT_LEAST_1, ("TrainCfg", "epochs"): _POS, ("TrainCfg", "patch"): _AT_LEAST_1,
    ("TrainCfg", "batch"): _AT_LEAST_1, ("TrainCfg", "lr"): _Range(0, 1, lo_open=True),
    ("TrainCfg", "optimizer"): _Range(choices=("adam", "adamw")),
    ("TrainCfg", "betas"): _Range(0, 1), ("TrainCfg", "eps"): _Range(0, 1, lo_open=True),
    ("TrainCfg", "weight_decay"): _Range(0, 1),
    ("TrainCfg", "schedule"): _Range(choices=("multistep", "exp", "constant")),
    ("TrainCfg", "milestones"): _Range(0, 1, lo_open=True, ascending=True), ("TrainCfg", "gamma"): _FRACTION,
    ("TrainCfg", "decay"): _FRACTION, ("TrainCfg", "decay_every"): _AT_LEAST_1, ("TrainCfg", "min_lr"): _Range(0, 1),
    ("TrainCfg", "loss"): _Range(choices=("neg_ssim", "l1", "mse", "charbonnier", "own")),
    ("TrainCfg", "stage_reduction"): _Range(choices=("last", "sum")),
    ("TrainCfg", "recipe"): _Range(choices=("shared", "own")), ("TrainCfg", "grad_clip"): _NONNEG,
    ("TrainCfg", "seed"): _Range(0, 2**63 - 1), ("TrainCfg", "log_every"): _AT_LEAST_1,
    ("TrainCfg", "val_every"): _NONNEG, ("TrainCfg", "val_images"): _AT_LEAST_1,
    ("TrainCfg", "ckpt_every"): _AT_LEAST_1, ("TrainCfg", "threads"): _NONNEG,
    ("TrainCfg", "amp"): _Range(choices=("off", "bf16", "fp16")), ("TrainCfg", "accumulate"): _AT_LEAST_1,
    ("TrainCfg", "workers"): _NONNEG,
    ("EvalCfg", "quantise"): _Range(choices=("round", "truncate")), ("EvalCfg", "crop_border"): _NONNEG,
    ("EvalCfg", "y_mode"): _Range(choices=("uint8", "float")), ("EvalCfg", "save_images"): _NONNEG,
    ("EvalCfg", "exemplar"): _Range(choices=("train", "test")),
}


class _Bad(Exception):
    pass


def _shown(v: Any) -> str:
    return f"{v!r} (a string)" if isinstance(v, str) else f"{v!r}"


def _scalar(tp: Any, v: Any) -> Any:
    if tp is bool:
        if isinstance(v, bool):
            return v
        raise _Bad(f"must be true or false (unquoted), got {_shown(v)}")
    if tp is int:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        raise _Bad(f"must be a whole number, got {_shown(v)}")
    if tp is float:
        if isinstance(v, str) and _NUMBER.fullmatch(v.strip()):
            v = float(v)  # 5e-4: a number YAML 1.1 reads as a string (see the module docstring)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if not math.isfinite(v):
                raise _Bad(f"must be a finite number, got {v!r}")
            return float(v)
        raise _Bad(f"must be a number, got {_shown(v)}")
    if tp is str:
        if isinstance(v, str):
            return v
        raise _Bad(f"must be a string, got {v!r}")
    return v  # a type this checker does not know (a later field): left to the dataclass


def _typed(tp: Any, v: Any) -> Any:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _typed(inner[0], v)
        return v
    if typing.get_origin(tp) is tuple:
        if not isinstance(v, (list, tuple)):
            raise _Bad(f"must be a list, got {_shown(v)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_scalar(args[0], x) for x in v)
        if len(v) != len(args):
            raise _Bad(f"must be a list of {len(args)} values, got {list(v)!r}")
        return tuple(_scalar(a, x) for a, x in zip(args, v))
    return _scalar(tp, v)


def _in_range(v: Any, r: _Range) -> None:
    if v is None:
        return
    if r.choices:
        if v not in r.choices:
            raise _Bad(f"must be one of {', '.join(r.choices)}; got {v!r}")
        return
    vals = v if isinstance(v, tuple) else (v,)
    for x in vals:
        if not isinstance(x, (int, float)):
            continue
        if r.lo is not None and (x < r.lo or (r.lo_open and x == r.lo)):
            raise _Bad(f"must be {'>' if r.lo_open else '>='} {r.lo}, got {x!r}")
        if r.hi is not None and x > r.hi:
            raise _Bad(f"must be <= {r.hi}, got {x!r}")
    if r.ascending and list(vals) != sorted(vals):
        raise _Bad(f"must be in ascending order, got {list(vals)!r}")


def checked(tp: Any, value: Any, key: str, file: str | Path, allowed: _Range | None = None) -> Any:
    """``value`` as type ``tp`` (numeric strings → float), within ``allowed``; else ConfigError
    naming the key and the file."""
    from benchmark.core.config import ConfigError

    if value is False and allowed is not None and "off" in (allowed.choices or ()):
        # YAML 1.1 reads a bare `off` as false, and `dvc exp run -S` rewrites params.yaml without the
        # quotes: for a switch whose choices include "off" (train.amp) that is what was meant
        value = "off"
    try:
        v = _typed(tp, value)
        if allowed is not None:
            _in_range(v, allowed)
        return v
    except _Bad as exc:
        raise ConfigError(f"{file}: {key} {exc}") from None


# Builder arguments (params.yaml ``models.<name>.args``, a checkpoint's ``model_args``): an integer may be
# at most ARG_FACTOR times its default (and at least ARG_FLOOR). ``channels: 8000`` or ``stages: 10**6``
# would allocate gigabytes or build for hours before anything else is checked; real variants stay far below.
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




def model_args_problem(model: str, args: dict) -> tuple[str, str] | None:
    """(argument, what is wrong) for the first entry of ``args`` that is not a keyword argument of
    model ``model``'s builder with a value in range (types as the builder's defaults); None when all
    are. The one source of these ranges, for params.yaml and for checkpoints alike."""
    import inspect

    from benchmark.core.registry import get_builder  # late: imports the model's module

    params = inspect.signature(get_builder(model)).parameters
    for k, v in args.items():
        p = params.get(k)
        if p is None or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is p.empty:
            return k, f"is not a builder argument of {model}"
        if problem := _arg_problem(k, p.default, p.annotation if not isinstance(p.annotation, str) else None, v):
            return k, problem
    return None
