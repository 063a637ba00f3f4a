"""PReNet: Progressive Recurrent Network for single image deraining.

Ren, Zuo, Hu, Zhu, Meng, "Progressive Image Deraining Networks: A Better and Simpler
Baseline", CVPR 2019. Official code: github.com/csdwren/PReNet (read for facts only).

One small network is unrolled for ``stages`` steps with shared weights. Every stage sees the
rainy image O next to the previous estimate, passes through a convolutional LSTM whose state
links the stages, then five residual blocks, and predicts the clean image as O plus a
residual. Default = the published PReNet6 (6 stages, LSTM): 168,963 parameters.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import read_state, register_model, register_official, source_label, ssim


class ResidualBlock(nn.Module):
    """conv-ReLU-conv-ReLU with an identity skip and a ReLU after the sum (official order)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv2(F.relu(self.conv1(x))))
        return F.relu(y + x)


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM on concat(input, h).

    The official code has four separate 3x3 convs (i, f, g, o); one conv with 4x the output
    channels holds exactly the same parameters and runs faster on CPU. ``from_official``
    stacks the four official kernels in the order i, f, g, o.
    """

    def __init__(self, in_channels: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(in_channels + hidden, 4 * hidden, 3, padding=1)

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, f, g, o = self.gates(torch.cat((x, h), 1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class PReNet(nn.Module):
    """Progressive recurrent deraining network (RGB in [0,1] in and out, any H x W).

    train(): list of the ``stages`` per-stage estimates (last = final); eval(): final estimate.
    """

    def __init__(self, stages: int = 6, channels: int = 32, res_blocks: int = 5) -> None:
        super().__init__()
        if stages < 1:
            raise ValueError(f"PReNet needs at least one stage, got stages={stages}")
        self.stages = stages
        self.channels = channels
        # Stage input = concat(rainy O, previous estimate x_{s-1}): 6 channels.
        self.fuse = nn.Conv2d(6, channels, 3, padding=1)
        self.lstm = ConvLSTMCell(channels, channels)
        self.blocks = nn.ModuleList(ResidualBlock(channels) for _ in range(res_blocks))
        self.to_image = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"PReNet expects a [B,3,H,W] RGB tensor, got shape {tuple(x.shape)}")
        b, _, h, w = x.shape
        state_h = x.new_zeros(b, self.channels, h, w)
        state_c = x.new_zeros(b, self.channels, h, w)
        estimate = x  # x_0 = O
        estimates = []
        for _ in range(self.stages):
            feat = F.relu(self.fuse(torch.cat((x, estimate), 1)))
            state_h, state_c = self.lstm(feat, state_h, state_c)
            feat = state_h
            for block in self.blocks:
                feat = block(feat)
            # The network learns the clean image as rainy input plus a correction.
            estimate = self.to_image(feat) + x
            estimates.append(estimate)
        return estimates if self.training else estimates[-1]

    def own_loss(self, outputs, rainy: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """PReNet's paper loss: negative SSIM of the final stage only (no per-stage terms)."""
        final = outputs[-1] if isinstance(outputs, (list, tuple)) else outputs
        return -ssim(final, clean)  # zero-padded 11x11 Gaussian windows, as the official SSIM.py


_GATE_ORDER = ("i", "f", "g", "o")  # chunk order in ConvLSTMCell.forward


def _official_key_map(res_blocks: int) -> dict[str, str]:
    """Our parameter prefix -> official prefix (the official modules are nn.Sequential)."""
    m = {"fuse": "conv0.0", "to_image": "conv.0"}
    for k in range(res_blocks):
        m[f"blocks.{k}.conv1"] = f"res_conv{k + 1}.0"
        m[f"blocks.{k}.conv2"] = f"res_conv{k + 1}.2"
    return m


def official_to_ours(state: dict[str, torch.Tensor], res_blocks: int = 5) -> dict[str, torch.Tensor]:
    """Rename an official PReNet state_dict to this module's names (gates stacked i,f,g,o)."""
    out = {}
    for ours, theirs in _official_key_map(res_blocks).items():
        for p in ("weight", "bias"):
            out[f"{ours}.{p}"] = state[f"{theirs}.{p}"]
    for p in ("weight", "bias"):
        out[f"lstm.gates.{p}"] = torch.cat([state[f"conv_{gate}.0.{p}"] for gate in _GATE_ORDER], 0)
    return out


def ours_to_official(state: dict[str, torch.Tensor], res_blocks: int = 5) -> dict[str, torch.Tensor]:
    """Inverse of ``official_to_ours`` (used to check that the mapping loses nothing)."""
    out = {}
    for ours, theirs in _official_key_map(res_blocks).items():
        for p in ("weight", "bias"):
            out[f"{theirs}.{p}"] = state[f"{ours}.{p}"]
    for p in ("weight", "bias"):
        for gate, part in zip(_GATE_ORDER, state[f"lstm.gates.{p}"].chunk(4, 0)):
            out[f"conv_{gate}.0.{p}"] = part
    return out


def _official_keys(res_blocks: int) -> set[str]:
    prefixes = list(_official_key_map(res_blocks).values()) + [f"conv_{g}.0" for g in _GATE_ORDER]
    return {f"{p}.{s}" for p in prefixes for s in ("weight", "bias")}


@register_official("prenet")
def from_official(path, stages: int = 6) -> PReNet:
    """Build PReNet and load official weights: a checkpoint path (e.g.
    logs/Rain100L/PReNet6/net_latest.pth) or an already-read mapping.

    The files are plain state_dicts saved on GPU, so they are mapped to CPU. A ``module.``
    prefix (checkpoints saved through nn.DataParallel) is stripped. Loading is strict.
    """
    state = read_state(path, "PReNet")
    label = source_label(path)
    model = PReNet(stages=stages)
    expected = _official_keys(len(model.blocks))
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise ValueError(f"{label}: not an official PReNet (LSTM, 5 res blocks) state_dict; "
                         f"missing keys {missing}, unexpected keys {unexpected}")
    mapped = official_to_ours(state, len(model.blocks))
    own = model.state_dict()
    for k, v in mapped.items():
        if v.shape != own[k].shape:
            raise ValueError(f"{label}: tensor for {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    model.load_state_dict(mapped, strict=True)
    return model


@register_model("prenet")
def prenet(stages: int = 6, channels: int = 32, res_blocks: int = 5) -> PReNet:
    """PReNet6 as published: 6 recurrent stages, ConvLSTM, 32 channels, 5 residual blocks."""
    return PReNet(stages=stages, channels=channels, res_blocks=res_blocks)
