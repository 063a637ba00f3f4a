"""Tiled full-image inference: large photos on a small GPU.

The image is cut into a grid of non-overlapping *core* tiles of ``tile`` pixels; each core is run
with a ``margin`` of real image context on every side (clipped at the image border) and only the
core of the output is kept. For a network whose output pixel depends only on inputs within radius
r (convolutions, pointwise ops) and whose ops are translation-equivariant, every kept pixel is
computed from the same inputs as in a whole-image pass once ``margin >= r``: the tile's own zero
padding lies at least r away. At the image border the tile reaches the border, so the padding is the
real one. The result then equals whole-image inference up to float rounding (different tile shapes
can pick different convolution algorithms).

Not exact, by construction (the difference is measured, see README "Performance"):
  * non-local operations: MSGNN's kNN graph search, DualGCN's global graph reasoning, SPANet's
    row/column IRNN scans, squeeze-and-excitation pooling (RESCAN's SE), instance statistics;
  * down-sampling networks (MOSS, MSPFN pyramids): tile origins are aligned to ``pad_multiple``
    so the sampling grid is kept, but their receptive field is usually larger than any practical margin.
``receptive_radius`` measures r of a model numerically (the extent of the input gradient of one
output pixel), returning ``None`` when it reaches the image border (non-local or wider than the probe).
Measured with it: PReNet 78 px, RESCAN without SE 83 px (with SE: global).
"""
from __future__ import annotations

import torch

from benchmark.core import contract
from benchmark.evaluation.inference import predict


def _starts(n: int, tile: int) -> list[int]:
    return list(range(0, n, tile))


@torch.no_grad()
def tiled_predict(model: torch.nn.Module, x: torch.Tensor, exemplar: torch.Tensor | None = None,
                  device: str | torch.device = "cpu", tile: int = 512, margin: int = 32) -> torch.Tensor:
    """Derain ``x`` [3,H,W] or [1,3,H,W] tile by tile → float [1,3,H,W] on the CPU (not clamped).

    ``tile``: core size in pixels; ``margin``: context pixels on each side (the receptive radius for
    exact results). Both are rounded up to the model's ``pad_multiple`` so every tile starts on the
    network's sampling grid. Every tile gets the whole exemplar (MSGNN).
    """
    if tile <= 0 or margin < 0:
        raise ValueError(f"tile must be > 0 and margin >= 0 (got tile={tile}, margin={margin})")
    x = x[None] if x.dim() == 3 else x
    m = contract.pad_multiple(model)
    tile, margin = -(-tile // m) * m, -(-margin // m) * m
    h, w = x.shape[-2:]
    if tile >= h and tile >= w:
        return predict(model, x, exemplar, device)
    out = torch.empty(x.shape[0], 3, h, w)
    for y0 in _starts(h, tile):
        for x0 in _starts(w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, xa = max(0, y0 - margin), max(0, x0 - margin)
            yb, xb = min(h, y1 + margin), min(w, x1 + margin)
            piece = predict(model, x[..., ya:yb, xa:xb], exemplar, device)
            out[..., y0:y1, x0:x1] = piece[..., y0 - ya:y1 - ya, x0 - xa:x1 - xa]
    return out


def receptive_radius(model: torch.nn.Module, size: int = 96, exemplar: torch.Tensor | None = None,
                     dtype: torch.dtype = torch.float64) -> int | None:
    """Radius (pixels) of the input region that the centre output pixel depends on, or ``None``.

    One backward pass of the centre pixel's sum over channels on a random ``size``×``size`` input; a
    non-zero gradient that touches the border means the dependence is non-local or wider than the
    probe (try a larger ``size``). Float64 so that tiny but real dependences are not lost. A choice
    made without gradient (MSGNN's kNN indices) is invisible to this probe: measure such models.
    """
    from benchmark.core.contract import call as forward
    from benchmark.core.contract import stage_outputs

    model = model.to(dtype).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, size, size, generator=g, dtype=dtype).requires_grad_(True)
    ex = exemplar.to(dtype)[None] if exemplar is not None and exemplar.dim() == 3 else exemplar
    out = stage_outputs(forward(model, x, ex))[-1]
    c = size // 2
    out[0, :, c, c].sum().backward()
    nz = (x.grad[0].abs().sum(0) != 0).nonzero()
    model.float()
    if len(nz) == 0:
        return 0
    if nz.min() == 0 or nz.max() == size - 1:
        return None
    return int((nz - c).abs().max())


class Tiled(torch.nn.Module):
    """``model`` behind tiled inference, usable wherever a model is (``inference.predict``/``evaluate``).

    The padding a network needs is done per tile, so the wrapper itself asks for none.
    """

    pad_multiple = 1

    def __init__(self, model: torch.nn.Module, tile: int, margin: int):
        super().__init__()
        self.inner, self.tile, self.margin = model, tile, margin
        self.needs_exemplar = contract.needs_exemplar(model)

    def forward(self, x: torch.Tensor, exemplar: torch.Tensor | None = None) -> torch.Tensor:
        out = tiled_predict(self.inner, x, exemplar, x.device, self.tile, self.margin)
        return out.to(x.device)


def maybe_tiled(model: torch.nn.Module, tile: int | None, margin: int) -> torch.nn.Module:
    """The CLI's ``--tile SIZE --tile-overlap PX``: ``model`` itself when ``tile`` is not set."""
    return Tiled(model, tile, margin) if tile else model
