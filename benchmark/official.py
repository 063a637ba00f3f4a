"""Reading official checkpoints and loading them, strictly, through a per-network name map.

Every official-weights loader (``benchmark.registry.register_official``) takes ``source``: a
checkpoint path or an already-read mapping {official name: tensor or array}. ``read_state`` turns
either into a plain {name: tensor} dict (``{"net": ...}``/``{"state_dict": ...}``/``{"model": ...}``
wrappers and a DataParallel ``module.`` prefix accepted); ``load_mapped`` fills a model from it
and fails with one ``ValueError`` that names the source and every missing, unexpected or
mis-shaped key, so a wrong or truncated file never half-loads.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from benchmark import io

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
    return state


def load_mapped(model: nn.Module, state: Mapping[str, torch.Tensor], rename: Callable[[str], str | None],
                source, what: str) -> nn.Module:
    """Copy ``state`` into ``model`` through ``rename`` (official name -> ours, None = unknown).

    Strict both ways: every official tensor must land on one of our entries with the same shape,
    and every entry of ours must be filled; otherwise one ValueError lists all the problems.
    """
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unexpected, shapes, doubles, tried = [], [], [], set()
    for name, tensor in state.items():
        ours = rename(name)
        if ours is None or ours not in own:
            unexpected.append(name)
        elif ours in mapped:
            doubles.append(name)
        elif tuple(tensor.shape) != tuple(own[ours].shape):
            tried.add(ours)
            shapes.append(f"{name}: {tuple(tensor.shape)} (expected {tuple(own[ours].shape)})")
        else:
            mapped[ours] = tensor.detach().to(own[ours].dtype)
    missing = [k for k in own if k not in mapped and k not in tried]
    error = problems_error(f"{source_label(source)}: not an official {what} state_dict for this configuration; ",
                           [("unexpected keys", unexpected), ("keys mapped twice", doubles),
                            ("shape mismatches", shapes), ("missing (our names)", missing)])
    if error:
        raise error
    model.load_state_dict(mapped, strict=True)
    return model
