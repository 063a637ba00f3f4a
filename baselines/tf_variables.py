"""Reading official TensorFlow 1.x weights (MSPFN, DualGCN) as {variable name: numpy array}.

The official releases of both networks are ``tf.train.Saver`` checkpoints (``model.ckpt-N.index``
+ ``.data-*``). Sources accepted by ``read_tf_variables``:

* an already-read mapping {TF variable name (without ``:0``): array or tensor, in TF layout};
* a ``.npz`` file holding such a mapping (what ``tf.train.load_checkpoint`` gives, saved with
  ``np.savez``; the way to use official weights on a machine without TensorFlow);
* a checkpoint prefix (or its ``.index`` file), read with TensorFlow when it is importable.
  TensorFlow is not a dependency of this suite; without it a checkpoint gives one error that
  says so and how to convert it.

``check_names`` is the strictness rule shared by both loaders: missing variables, unexpected
variables and wrong shapes are all reported together, in one ``ValueError`` naming the source.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch

from benchmark.official import problems_error


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
