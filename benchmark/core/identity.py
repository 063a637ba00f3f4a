"""The pseudo-model ``input``: returns the rainy image unchanged.

Deraining tables report the metrics of the rainy input itself as a floor; registering it as a
weightless model lets that row go through exactly the same evaluator as the nine networks.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from benchmark.core.registry import register_model


class Identity(nn.Module):
    weightless = True  # nothing to train or load

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@register_model("input")
def input_model() -> Identity:
    return Identity()
