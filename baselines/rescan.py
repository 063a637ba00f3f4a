"""RESCAN: Recurrent Squeeze-and-Excitation Context Aggregation Net.

Li, Wu, Lin, Liu, Zha, "Recurrent Squeeze-and-Excitation Context Aggregation Net for Single
Image Deraining", ECCV 2018. Re-implemented from the paper and the facts of the official
code (XiaLiPKU/RESCAN, config/settings.py defaults: GRU unit, "Full" frame, 4 stages,
depth 7, 24 channels, SE on), which has 149,823 parameters.

Each stage runs the same weights: depth-2 recurrent conv layers (the first 3->c, then c->c
with input dilations 1, 2, 4, ...), each followed by squeeze-excitation and LeakyReLU(0.2),
then a decoder (3x3 conv, SE, LeakyReLU, 1x1 conv -> 3) that predicts the rain layer R_s.
Layer k's hidden state is handed to layer k of the next stage, and in the "Full" frame the
next stage sees O - R_s. The network predicts rain; we return derained images O - R_s.

Colour: the official code is trained on OpenCV BGR images. No official weights exist, and a
fixed permutation of the input/output colour channels of a network trained from scratch is
just a relabelling of the first and last convolutions (their initialisation is i.i.d.), so
RGB is used directly; ``channel_order="bgr"`` flips channels at the boundary for loading
weights trained in BGR.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import (ConvGRUCell, check_rgb_batch, load_mapped, read_state, register_model, register_official,
                     rename_by_rules)


Unit = Literal["GRU", "LSTM", "RNN", "Conv"]
Frame = Literal["Full", "Add"]


class SqueezeExcitation(nn.Module):
    """Channel re-weighting by a two-layer MLP on globally pooled features.

    The official code passes the *reduction* argument 6 as the MLP's hidden width, so with 24
    channels the bottleneck is 24->6->24 (318 weights) rather than 24->4->24. We keep the
    official width (``hidden``) because the published parameter count depends on it.
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * w[:, :, None, None]


class ConvRNNCell(nn.Module):
    """Vanilla convolutional RNN: h' = tanh(Wx*x + Wh*h) (no Wh term on the first step)."""

    def __init__(self, cin: int, cout: int, dilation: int) -> None:
        super().__init__()
        self.conv_x = nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation)
        self.conv_h = nn.Conv2d(cout, cout, 3, padding=1)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None) -> torch.Tensor:
        pre = self.conv_x(x) if h is None else self.conv_x(x) + self.conv_h(h)
        return torch.tanh(pre)


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM; returns (h before the output activation, cell memory c).

    First step, as in the official code: c = i.j and h = o.c (no tanh on c there).
    """

    def __init__(self, cin: int, cout: int, dilation: int) -> None:
        super().__init__()
        self.conv_x = nn.ModuleDict({g: nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation) for g in "fioj"})
        self.conv_h = nn.ModuleDict({g: nn.Conv2d(cout, cout, 3, padding=1) for g in "fioj"})

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None):
        if state is None:
            i = torch.sigmoid(self.conv_x["i"](x))
            o = torch.sigmoid(self.conv_x["o"](x))
            c = i * torch.tanh(self.conv_x["j"](x))
            return o * c, c
        h, c = state
        gate = {g: self.conv_x[g](x) + self.conv_h[g](h) for g in "fioj"}
        c = torch.sigmoid(gate["f"]) * c + torch.sigmoid(gate["i"]) * torch.tanh(gate["j"])
        return torch.sigmoid(gate["o"]) * torch.tanh(c), c


class RecurrentLayer(nn.Module):
    """One RESCAN layer: a recurrent unit, then SE and LeakyReLU(0.2) on its output.

    The activated output is also the state carried to the next stage (for the LSTM, together
    with its raw cell memory), as in the official code.
    """

    def __init__(self, unit: Unit, cin: int, cout: int, dilation: int, se: nn.Module) -> None:
        super().__init__()
        self.unit = unit
        if unit == "GRU":
            self.cell: nn.Module = ConvGRUCell(cin, cout, 3, dilation)
        elif unit == "LSTM":
            self.cell = ConvLSTMCell(cin, cout, dilation)
        elif unit == "RNN":
            self.cell = ConvRNNCell(cin, cout, dilation)
        elif unit == "Conv":  # the paper's non-recurrent ablation
            self.cell = nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation)
        else:
            raise ValueError(f"unknown RESCAN unit {unit!r}; valid: GRU, LSTM, RNN, Conv")
        self.se = se
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor, state):
        if self.unit == "Conv":
            return self.act(self.se(self.cell(x))), None
        if self.unit == "LSTM":
            h, c = self.cell(x, state)
            h = self.act(self.se(h))
            return h, (h, c)
        h = self.act(self.se(self.cell(x, state)))
        return h, h


class RESCAN(nn.Module):
    """Recurrent SE context-aggregation deraining network (see module docstring)."""

    def __init__(self, channels: int = 24, stages: int = 4, depth: int = 7, unit: Unit = "GRU",
                 frame: Frame = "Full", use_se: bool = True, se_hidden: int = 6,
                 channel_order: Literal["rgb", "bgr"] = "rgb") -> None:
        super().__init__()
        if depth < 3:
            raise ValueError(f"RESCAN depth counts the two decoder convs and must be >= 3, got {depth}")
        if frame not in ("Full", "Add"):
            raise ValueError(f"unknown RESCAN frame {frame!r}; valid: Full, Add")
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        self.stages, self.frame, self.channel_order = stages, frame, channel_order

        def se() -> nn.Module:
            return SqueezeExcitation(channels, se_hidden) if use_se else nn.Identity()

        # depth = 1 plain-dilation layer + (depth-3) dilated layers + 2 decoder convs
        self.layers = nn.ModuleList(
            [RecurrentLayer(unit, 3, channels, 1, se())]
            + [RecurrentLayer(unit, channels, channels, 2**i, se()) for i in range(depth - 3)]
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), se(), nn.LeakyReLU(0.2), nn.Conv2d(channels, 3, 1)
        )

    def rain_layers(self, rainy: torch.Tensor) -> list[torch.Tensor]:
        """The per-stage rain-layer estimates R_1..R_S in the network's own channel order."""
        states: list = [None] * len(self.layers)
        rains: list[torch.Tensor] = []
        x = rainy
        for s in range(self.stages):
            for k, layer in enumerate(self.layers):
                x, states[k] = layer(x, states[k])
            rain = self.decoder(x)
            if self.frame == "Add" and s > 0:
                # "Add" frame: each stage predicts a residual on top of the (frozen) previous estimate
                rain = rain + rains[-1].detach()
            rains.append(rain)
            x = rainy - rain
        return rains

    def forward(self, x: torch.Tensor):
        check_rgb_batch(x, "RESCAN")
        flip = self.channel_order == "bgr"
        rains = self.rain_layers(x.flip(1) if flip else x)
        if flip:
            rains = [r.flip(1) for r in rains]
        if not self.training:
            return x - rains[-1]
        return {"out": [x - r for r in rains], "rain": rains}

    def own_loss(self, outputs, rainy: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """Official loss: sum over stages of MSE(R_s, O - B) on the predicted rain layers."""
        if isinstance(outputs, dict) and "rain" in outputs:
            rains = outputs["rain"]
        else:  # plain derained estimates: recover R_s = O - (O - R_s)
            stages = outputs["out"] if isinstance(outputs, dict) else outputs
            stages = [stages] if isinstance(stages, torch.Tensor) else stages
            rains = [rainy - s for s in stages]
        target = rainy - clean
        return sum(F.mse_loss(r, target) for r in rains)


@register_model("rescan")
def rescan(channels: int = 24, stages: int = 4, depth: int = 7, unit: Unit = "GRU", frame: Frame = "Full",
           use_se: bool = True, se_hidden: int = 6, channel_order: Literal["rgb", "bgr"] = "rgb") -> RESCAN:
    """Official RESCAN configuration (149,823 parameters); other units/frames are the paper's ablations."""
    return RESCAN(channels, stages, depth, unit, frame, use_se, se_hidden, channel_order)


def official_name_to_ours(name: str) -> str | None:
    """Official RESCAN (XiaLiPKU/RESCAN config/model.py) state-dict key -> ours (None: unknown)."""
    return rename_by_rules(name, ((r"rnns\.(\d+)\.(conv_\w+\.(?:weight|bias))", r"layers.\1.cell.\2"),
                                 (r"rnns\.(\d+)\.se\.fc\.0\.(weight|bias)", r"layers.\1.se.fc1.\2"),
                                 (r"rnns\.(\d+)\.se\.fc\.2\.(weight|bias)", r"layers.\1.se.fc2.\2"),
                                 (r"dec\.(0|3)\.(weight|bias)", r"decoder.\1.\2"),
                                 (r"dec\.1\.fc\.0\.(weight|bias)", r"decoder.1.fc1.\1"),
                                 (r"dec\.1\.fc\.2\.(weight|bias)", r"decoder.1.fc2.\1")))


@register_official("rescan")
def from_official(source, **kwargs) -> RESCAN:
    """RESCAN holding official weights (path or mapping). The official code reads OpenCV BGR
    images, so the model is built with ``channel_order="bgr"`` unless told otherwise."""
    kwargs.setdefault("channel_order", "bgr")
    state = read_state(source, "RESCAN")
    return load_mapped(rescan(**kwargs), state, official_name_to_ours, source, "RESCAN")
