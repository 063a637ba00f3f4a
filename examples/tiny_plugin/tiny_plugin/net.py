"""A three-layer residual CNN: the smallest network that follows msgnn-bench's model contract.

RGB in [0, 1] in, derained RGB out, same size. Optional contract members (``needs_exemplar``,
``pad_multiple``, ``own_loss``, ...) are left at their defaults.
"""
from __future__ import annotations

import torch
from torch import nn


class TinyCNN(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(width, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.body(x)  # predict the rain layer, subtract it


def build(width: int = 16) -> nn.Module:
    """Keyword defaults are the published settings; params.yaml models.tinycnn.args overrides them."""
    return TinyCNN(width)


# table metadata (optional): how Table 1 and the report print the model
build.display = "TinyCNN"
build.venue = "example"
build.year = 2025
