"""Every registered model runs on a device other than the CPU, checked without a GPU: forward and
backward on PyTorch's ``meta`` device, which tracks shapes and devices but holds no data.

A tensor that a model creates on the CPU (a mask, an index, a kernel) mixes devices there and fails,
as it would on a GPU; so does reading a value on the host (``.item()``, ``if tensor:``), which on a GPU
would be a synchronisation inside the forward pass. CI has no GPU, so this is its device check.
"""
from __future__ import annotations

import pytest
import torch

from benchmark.training.losses import build_loss
from benchmark.core.registry import build_model, list_models

META = torch.device("meta")


def _build(name: str) -> torch.nn.Module:
    with META:  # parameters are allocated on meta directly: no CPU initialisation to wait for
        return build_model(name).to(META)


TRAINABLE = [name for name in list_models() if any(True for _ in _build(name).parameters())]


def _inputs(model: torch.nn.Module, batch: int, h: int, w: int) -> tuple[torch.Tensor, dict]:
    x = torch.rand(batch, 3, h, w, device=META)
    extra = {"exemplar": torch.rand(batch, 3, w, h, device=META)} if getattr(model, "needs_exemplar", False) else {}
    return x, extra


@pytest.mark.parametrize("name", list_models())
def test_inference_stays_on_the_model_device(name):
    model = _build(name).eval()
    x, extra = _inputs(model, 1, 64, 72)
    with torch.no_grad():
        y = model(x, **extra)
    assert y.device == META and y.shape == x.shape


@pytest.mark.parametrize("name", TRAINABLE)
def test_training_step_stays_on_the_model_device(name):
    model = _build(name).train()
    x, extra = _inputs(model, 2, 48, 48)
    out = model(x, **extra)
    losses = [build_loss("neg_ssim")(out, x)]
    if hasattr(model, "own_loss"):
        losses.append(model.own_loss(out, x, x))
    sum(losses).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.device == META for g in grads)
