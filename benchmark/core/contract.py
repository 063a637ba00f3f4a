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
  expanded views (see ``count_params``).

``forward`` returns the derained image [B,3,H,W], or a list/tuple of stage estimates whose last is
the final one (``stage_outputs``). Official-weights loaders are not a model member: a
model's module registers one with ``registry.register_official`` next to its builder.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

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


def stage_outputs(outputs) -> list[torch.Tensor]:
    """The derained estimates in a train-mode output, last stage last."""
    if isinstance(outputs, dict):
        outputs = outputs["out"]
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return list(outputs)


def count_params(model: torch.nn.Module) -> dict[str, int]:
    """Total and trainable parameter counts (shared tensors counted once).

    A model whose original code counts one stored tensor several times (RCDNet's parameters made of
    expanded views: ``sum(p.numel())`` counts every view) names those sizes in ``official_numel``
    {parameter name: count}; the free count is ``effective_params``."""
    views = getattr(model, "official_numel", {})
    params = list(model.named_parameters())  # de-duplicates shared tensors
    return {"total": sum(views.get(n, p.numel()) for n, p in params),
            "trainable": sum(views.get(n, p.numel()) for n, p in params if p.requires_grad)}


def effective_params(model: torch.nn.Module, probe: Callable[[torch.nn.Module], object] | int | tuple[int, int] = (64, 64),
                     seed: int = 0) -> int:
    """Number of parameters that receive a gradient in one train-mode backward pass.

    ``probe`` is an input size (H, W) / int, for a batch-1 random RGB input (plus an exemplar of the
    same size for models with ``needs_exemplar``), or a callable ``probe(model) -> outputs``.
    The derained estimates (``stage_outputs``) are summed and back-propagated; parameters left with
    ``grad is None`` are dead weight (built but unused in the forward pass). The model's mode,
    gradients, state (BatchNorm statistics, in-place weight updates) and the global RNG are restored.
    """
    was_training = model.training
    params = list(model.parameters())
    old_grads = [p.grad for p in params]
    # the whole state, parameters included: some models update weights in place in a train-mode
    # forward (MOSS's memory table moves towards the features by EMA)
    buffers = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        with torch.random.fork_rng(devices=[]):
            model.train()
            for p in params:
                p.grad = None
            if callable(probe):
                outputs = probe(model)
            else:
                h, w = (probe, probe) if isinstance(probe, int) else probe
                ref = params[0] if params else torch.empty(0)
                g = torch.Generator().manual_seed(seed)
                x = torch.rand(1, 3, h, w, generator=g).to(ref.device, ref.dtype)
                ex = (torch.rand(1, 3, h, w, generator=g).to(ref.device, ref.dtype)
                      if needs_exemplar(model) else None)
                outputs = call(model, x, ex)
            total = sum(s.float().mean() for s in stage_outputs(outputs))
            total.backward()
            return sum(p.numel() for p in params if p.grad is not None)
    finally:
        for p, gr in zip(params, old_grads):
            p.grad = gr
        if buffers:
            model.load_state_dict(buffers, strict=False)
        model.train(was_training)
