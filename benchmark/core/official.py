"""Reading official checkpoints and loading them, strictly, through a per-network name map.

Every official-weights loader (``benchmark.core.registry.register_official``) takes ``source``: a
checkpoint path or an already-read mapping {official name: tensor or array}. ``read_state`` turns
either into a plain {name: tensor} dict (``{"net": ...}``/``{"state_dict": ...}``/``{"model": ...}``
wrappers and a DataParallel ``module.`` prefix accepted); ``load_mapped`` fills a model from it
and fails with one ``ValueError`` that names the source and every missing, unexpected or
mis-shaped key, so a wrong or truncated file never half-loads.

TensorFlow 1.x releases (MSPFN, DualGCN) are read as {variable name: numpy array} by
``read_tf_variables``, from an already-read mapping, an ``.npz`` of one (what
``tf.train.load_checkpoint`` gives, saved with ``np.savez``: official weights on a machine without
TensorFlow) or a checkpoint prefix when TensorFlow is importable (it is not a dependency; without
it a checkpoint gives one error saying how to convert it). ``check_names`` is the strictness rule
of both TF loaders: missing, unexpected and mis-shaped variables reported together.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from benchmark.core import io

_WRAPPERS = ("state_dict", "net", "model", "params")


def source_label(source) -> str:
    return str(source) if isinstance(source, (str, Path)) else "official state mapping"


def rename_by_rules(name: str, rules: Iterable[tuple[str, str]]) -> str | None:
    """Name maps written as (regex, template) rules: the first pattern that matches the whole of
    ``name`` gives ``name`` rewritten by its template (``\\1`` ...); None when no rule matches."""
    for pattern, template in rules:
        if m := re.fullmatch(pattern, name):
            return m.expand(template)
    return None


def problems_error(head: str, groups: Iterable[tuple[str, list]], describe=None) -> ValueError | None:
    """One ValueError ``head`` + every non-empty (title, items) group joined by "; " (None if all are
    empty), so a loader reports all that is wrong at once; ``describe(title, items)`` words a group."""
    describe = describe or (lambda title, items: f"{title} {items}")
    problems = [describe(title, items) for title, items in groups if items]
    return ValueError(head + "; ".join(problems)) if problems else None


def read_state(source, what: str) -> dict[str, torch.Tensor]:
    """``{official name: tensor}`` from a checkpoint path or a mapping (``what`` names the network)."""
    label = source_label(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"official {what} checkpoint not found: {path}")
        obj = io.load_torch(path)  # weights-only: a file that would run code is refused, naming it
    elif isinstance(source, Mapping):
        obj = source
    else:
        raise ValueError(f"official {what} weights must be a path or a mapping, got {type(source).__name__}")
    if isinstance(obj, Mapping):
        for key in _WRAPPERS:  # training checkpoints keep the weights under one of these keys
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{label}: expected a non-empty state_dict of tensors for {what}, got {type(obj).__name__}")
    state = {}
    for k, v in obj.items():
        if isinstance(v, np.ndarray):
            v = torch.from_numpy(np.array(v))  # a copy, C-contiguous, 0-d arrays kept 0-d
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise ValueError(f"{label}: entry {k!r} is not a named tensor ({type(v).__name__}); "
                             f"not a {what} state_dict")
        state[k] = v
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    check_weights(label, state)
    return state


def check_weights(label: str, state: Mapping[str, torch.Tensor]) -> None:
    """Refuse integer, bool and complex tensors (no network here holds any but BatchNorm's step
    counter, and a silent cast to float gives garbage outputs) and non-finite weights, in one
    ValueError naming the source and the tensor."""
    for k, v in state.items():
        if not v.dtype.is_floating_point and not k.endswith("num_batches_tracked"):
            raise ValueError(f"{label}: tensor {k} is {str(v.dtype).removeprefix('torch.')}, not floating point; "
                             "not the weights of a network (refused rather than cast)")
        if v.dtype.is_floating_point and not bool(torch.isfinite(v).all()):
            raise ValueError(f"{label}: tensor {k} holds {int((~torch.isfinite(v)).sum())} non-finite value(s) "
                             "(NaN or inf); the weights are broken")


def load_mapped(model: nn.Module, state: Mapping[str, torch.Tensor], rename: Callable[[str], str | None],
                source, what: str) -> nn.Module:
    """Copy ``state`` into ``model`` through ``rename`` (official name -> ours, None = unknown).

    Strict both ways: every official tensor must land on one of our entries with the same shape,
    and every entry of ours must be filled; otherwise one ValueError lists all the problems.
    """
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unexpected, shapes, doubles, dtypes, tried = [], [], [], [], set()
    for name, tensor in state.items():
        ours = rename(name)
        if ours is None or ours not in own:
            unexpected.append(name)
        elif ours in mapped:
            doubles.append(name)
        elif tuple(tensor.shape) != tuple(own[ours].shape):
            tried.add(ours)
            shapes.append(f"{name}: {tuple(tensor.shape)} (expected {tuple(own[ours].shape)})")
        elif own[ours].dtype.is_floating_point and not tensor.dtype.is_floating_point:
            tried.add(ours)
            dtypes.append(f"{name}: {str(tensor.dtype).removeprefix('torch.')}")
        else:
            mapped[ours] = tensor.detach().to(own[ours].dtype)
    missing = [k for k in own if k not in mapped and k not in tried]
    error = problems_error(f"{source_label(source)}: not an official {what} state_dict for this configuration; ",
                           [("unexpected keys", unexpected), ("keys mapped twice", doubles),
                            ("shape mismatches", shapes), ("not floating point (refused, not cast)", dtypes),
                            ("missing (our names)", missing)])
    if error:
        raise error
    model.load_state_dict(mapped, strict=True)
    return model


# ---------------------------------------------------------------- TensorFlow 1.x checkpoints

def _as_array(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _checkpoint_prefix(path: Path) -> Path | None:
    if path.suffix == ".index" and path.is_file():
        return path.with_suffix("")
    if Path(f"{path}.index").is_file():
        return path
    return None


def read_tf_variables(source) -> tuple[dict[str, np.ndarray], str]:
    """``({name: array}, label)``; ``label`` names the source in error messages."""
    if isinstance(source, Mapping):
        return {str(k).removesuffix(":0"): _as_array(v) for k, v in source.items()}, "the given variable mapping"
    path = Path(source)
    if path.suffix == ".npz":
        if not path.is_file():
            raise FileNotFoundError(f"official weights not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k.removesuffix(":0"): data[k] for k in data.files}, str(path)
        except Exception as exc:  # truncated zip, pickled objects, not an npz at all
            raise ValueError(f"{path}: cannot be read as an .npz of TF variables "
                             f"({type(exc).__name__}: {exc})") from exc
    prefix = _checkpoint_prefix(path)
    if prefix is None:
        raise FileNotFoundError(f"official weights not found: {path} (expected a TF checkpoint prefix with "
                                f"'{path.name}.index' beside it, or an .npz of TF variables)")
    try:
        import tensorflow as tf  # optional: only for reading real checkpoints
    except ImportError:
        raise ValueError(f"{prefix}: reading a TensorFlow checkpoint needs the 'tensorflow' package, which is "
                         "not installed here; install it, or convert the checkpoint once elsewhere with "
                         "np.savez(out, **{n: r.get_tensor(n) for n in r.get_variable_to_shape_map()}) "
                         "where r = tf.train.load_checkpoint(prefix), and pass the .npz") from None
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        names = reader.get_variable_to_shape_map()
        return {n: np.asarray(reader.get_tensor(n)) for n in names}, str(prefix)
    except Exception as exc:  # missing .data shard, corrupt index
        raise ValueError(f"{prefix}: cannot be read as a TensorFlow checkpoint ({type(exc).__name__}: {exc})") from exc


def _short(names: Iterable[str], limit: int = 8) -> str:
    names = sorted(names)
    more = f" ... (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# Training-state variables a Saver also writes (optimiser slots and counters): not weights.
_TRAINING_STATE = re.compile(r"(^|/)(Adam|Adam_\d+|Momentum|RMSProp|RMSProp_\d+|beta[12]_power(_\d+)?|global_step)$")


def check_names(variables: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]], label: str,
                what: str) -> None:
    """One ValueError listing missing / unexpected names and TF-shape mismatches, if any.

    Optimiser slots and step counters (``.../Adam``, ``beta1_power``, ``global_step``) that a
    training checkpoint carries are not counted as unexpected; every other extra name is.
    """
    missing = set(expected) - set(variables)
    unexpected = {n for n in set(variables) - set(expected) if not _TRAINING_STATE.search(n)}
    wrong = [f"{n} {tuple(variables[n].shape)} (expected {tuple(s)})"
             for n, s in expected.items() if n in variables and tuple(variables[n].shape) != tuple(s)]
    error = problems_error(f"{label}: not the variables of {what}; ",
                           [("missing", missing), ("unexpected", unexpected), ("with wrong shape", wrong)],
                           lambda title, items: f"{len(items)} {title}: {_short(items)}")
    if error:
        raise error
