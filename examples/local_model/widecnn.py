"""A local-file plugin model: named in params.yaml, no package needed.

    plugins:
      widecnn: examples/local_model/widecnn.py:build

A builder returns a torch.nn.Module taking RGB [B, 3, H, W] in [0, 1] and returning the derained
image of the same shape (docs/models.md "The model contract").
"""
from __future__ import annotations

from torch import nn


class WideCNN(nn.Module):
    pad_multiple = 2  # a contract member: full images are padded to even sizes (the 2x down/up path)

    def __init__(self, width: int = 24):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        self.up = nn.ConvTranspose2d(width, 3, 4, stride=2, padding=1)

    def forward(self, x):
        return x - self.up(self.down(x))


def build(width: int = 24) -> nn.Module:
    return WideCNN(width)


build.display = "WideCNN"
build.venue = "local example"
build.year = 2025
