"""The model contract: what the engine, metrics, perf table and command line rely on in a network.

A registered builder (``registry.register_model``) returns a ``torch.nn.Module``. Beyond
``forward`` the suite reads only the members declared in ``DerainModel`` below, and only through
the functions of this module, so that a default lives in one place and a new model needs nothing
but these members:

- ``needs_exemplar`` (default False): ``forward(x, exemplar=e)`` takes a second image (MSGNN's
  external-similarity exemplar, a rainy image of the training set) of the same batch size.
- ``pad_multiple`` (default 1): full images are reflect-padded to a multiple of this before the
  call (down/up-sampling networks) and the output is cropped back.
- ``weightless`` (default False): nothing to train or load (the ``input`` pseudo-model).
- ``own_loss(outputs, rainy, clean) -> Tensor`` (optional): the paper's loss, used with
  ``train.loss: own``.
- ``official_numel`` (optional): {parameter name: official count} where the official code holds
  expanded views (see ``metrics.count_params``).

``forward`` returns the derained image [B,3,H,W], or a list/tuple of stage estimates whose last is
the final one (``engine.stage_outputs``). Official-weights loaders are not a model member: a
model's module registers one with ``registry.register_official`` next to its builder.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch


class DerainModel(Protocol):
    """Typing view of a suite model (members are optional at run time; see the module docstring)."""

    needs_exemplar: bool
    pad_multiple: int
    weightless: bool

    def __call__(self, x: torch.Tensor, *, exemplar: torch.Tensor | None = None) -> Any: ...

    def own_loss(self, outputs: Any, rainy: torch.Tensor, clean: torch.Tensor) -> torch.Tensor: ...


def _inner(model: torch.nn.Module) -> torch.nn.Module:
    # a DistributedDataParallel wrapper carries the model's members on ``.module``
    return getattr(model, "module", model)


def needs_exemplar(model: torch.nn.Module) -> bool:
    return bool(getattr(_inner(model), "needs_exemplar", False))


def pad_multiple(model: torch.nn.Module) -> int:
    return int(getattr(_inner(model), "pad_multiple", 1))


def weightless(model: torch.nn.Module) -> bool:
    return bool(getattr(_inner(model), "weightless", False))


def has_own_loss(model: torch.nn.Module) -> bool:
    return callable(getattr(_inner(model), "own_loss", None))


def call(model: torch.nn.Module, x: torch.Tensor, exemplar: torch.Tensor | None = None) -> Any:
    """The one way the suite runs a model: with its exemplar when it takes one, plainly otherwise.

    An exemplar given to a model that takes none is not passed on (a data stream or a benchmark
    case may provide one for every model); a model that needs one and gets none is an error.
    """
    if needs_exemplar(model):
        if exemplar is None:
            raise ValueError(f"{type(model).__name__} needs an exemplar image but none was given")
        return model(x, exemplar=exemplar)
    return model(x)
