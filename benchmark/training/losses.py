"""Training losses shared by all nine models.

A model's train-mode forward may return one image, a list of stage images (progressive
networks) or a dict whose ``"out"`` entry is one of those plus extra tensors its own paper
loss needs. ``stage_outputs`` turns all three into a list; ``reduce`` decides whether only the
last stage or the sum of all stages is supervised.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from benchmark.core.contract import stage_outputs


@functools.lru_cache(maxsize=8)
def _gauss_window(size: int, sigma: float, channels: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = (g / g.sum()).to(dtype)
    w = torch.outer(g, g).expand(channels, 1, size, size).contiguous()
    return w.to(device)


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5, data_range: float = 1.0,
         zero_pad: bool = True) -> torch.Tensor:
    """Differentiable mean SSIM over pixels, channels and batch (Gaussian 11x11, sigma 1.5).

    The training criterion of PReNet, DCSFN and MSGNN (-SSIM). Their official code filters with
    zero padding of window//2 (so border pixels count too); ``zero_pad=False`` uses only 'valid'
    windows. Evaluation uses the MATLAB-exact implementation in ``benchmark.evaluation.metrics`` instead.
    """
    c = x.shape[1]
    w = _gauss_window(window, sigma, c, str(x.device), x.dtype)
    pad = window // 2 if zero_pad else 0
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x = F.conv2d(x, w, groups=c, padding=pad)
    mu_y = F.conv2d(y, w, groups=c, padding=pad)
    sxx = F.conv2d(x * x, w, groups=c, padding=pad) - mu_x**2
    syy = F.conv2d(y * y, w, groups=c, padding=pad) - mu_y**2
    sxy = F.conv2d(x * y, w, groups=c, padding=pad) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den).mean()


def neg_ssim(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -ssim(out, target)


def charbonnier(out: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return torch.sqrt((out - target) ** 2 + eps**2).mean()


LOSSES = {
    "neg_ssim": neg_ssim,
    "l1": F.l1_loss,
    "mse": F.mse_loss,
    "charbonnier": charbonnier,
}


def build_loss(name: str = "neg_ssim", reduce: str = "last"):
    """Return ``loss(outputs, target)`` for a pixel criterion ``name``.

    ``reduce="last"`` supervises only the final stage; ``"sum"`` adds the criterion over all
    stages (the usual deep-supervision choice of progressive networks).
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(sorted(LOSSES))}")
    if reduce not in ("last", "sum"):
        raise ValueError(f"unknown stage reduction {reduce!r}; valid: last, sum")
    crit = LOSSES[name]

    def loss(outputs, target: torch.Tensor) -> torch.Tensor:
        stages = stage_outputs(outputs)
        if reduce == "last":
            return crit(stages[-1], target)
        return sum(crit(s, target) for s in stages)

    return loss
