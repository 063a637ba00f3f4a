"""The "does it learn at all" check that every model's tests share: a few Adam steps on one fixed
rain-synth batch, then the mean of the last losses must be below the mean of the first."""
from __future__ import annotations

from collections.abc import Callable

import torch

from benchmark.training.losses import build_loss
from benchmark.datasets.synth import make_batch

LossFn = Callable[[object, torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, rainy, clean) -> loss


def shared_loss(name: str = "neg_ssim", reduce: str = "last") -> LossFn:
    """The shared criterion of the benchmark's settings, in the (outputs, rainy, clean) form."""
    crit = build_loss(name, reduce)
    return lambda out, rainy, clean: crit(out, clean)


def loss_curve(model: torch.nn.Module, steps: int, *, loss: LossFn | None = None, lr: float = 5e-4,
               batch: int = 2, size: int = 32, seed: int = 0, exemplar: bool = False) -> list[float]:
    """Loss of each of ``steps`` Adam steps; ``loss`` defaults to the model's own training loss."""
    model.train()
    rainy, clean = make_batch(batch, size, seed=seed)
    extra = {"exemplar": make_batch(batch, size, seed=seed + 1)[0]} if exemplar else {}
    loss = loss or model.own_loss
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        value = loss(model(rainy, **extra), rainy, clean)
        opt.zero_grad()
        value.backward()
        opt.step()
        losses.append(value.item())
    return losses


def assert_loss_falls(losses: list[float], window: int = 3) -> None:
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    assert last < first, f"loss did not fall: {losses}"
