"""DCSFN: Deep Cross-scale Fusion Network.

Wang, Xing, Wu, Su, Chen, "DCSFN: Deep Cross-scale Fusion Network for Single Image Rain
Removal", ACM Multimedia 2020. Re-implemented from the paper and the facts of the official
code (Ohraincu/DCSFN, config/settings.py defaults: GRU, 20 channels, 16 blocks per encoder
and decoder, 4 scales inside each block, cross-scale fusion on), which has 6,453,147 parameters.

Three sub-networks (full, 1/2 and 1/4 resolution of the converted features) each run an
encoder and a decoder made of inner-scale connection blocks (ISCBs) joined by dense 1x1
fusion. Between encoder and decoder, two passes of ConvGRUs exchange information across the
sub-networks (coarse->fine, then fine->coarse). The three decoder outputs are merged into a
rain map that is subtracted from the input.

Size: inside the 1/4 sub-network an ISCB max-pools by 8 again, so each side must be >= 32.
The official code simply fails below that; here ``small_input="pad"`` (default) reflect-pads
such inputs up to 32 and crops the result back, and ``"error"`` raises a ValueError. Inputs of
32 px and more are never padded, so they see exactly the official computation. Other sizes
need no divisibility: every resize targets an explicit size (nearest neighbour).

Colour: the official code trains on OpenCV BGR. No official weights exist, and permuting the
colour channels of a network trained from scratch only relabels its first and last convs,
so RGB is used directly; ``channel_order="bgr"`` flips channels at the boundary.
"""
from __future__ import annotations

import re
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import ConvGRUCell, check_rgb_batch, load_mapped, read_state, register_model, register_official, ssim


def _conv_lrelu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), nn.LeakyReLU(0.2))


def _resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # the official code resizes to explicit sizes with nearest neighbour, both up and down
    return F.interpolate(x, size=like.shape[-2:], mode="nearest")


class InnerScaleConnectionBlock(nn.Module):
    """ISCB: conv chains on max-pooled copies of x, coarsest first, each finer scale fused
    (1x1 conv) with the upsampled result of the next coarser one; all scales are then fused
    at full size and added to x."""

    def __init__(self, channels: int, scales: int = 4, convs: int = 4) -> None:
        super().__init__()
        self.scales = scales
        # chains[k] works at 1/2**k of the block's input size
        self.chains = nn.ModuleList(
            nn.Sequential(*[_conv_lrelu(channels, channels, 3) for _ in range(convs)]) for _ in range(scales)
        )
        self.fuse = nn.ModuleList(_conv_lrelu(2 * channels, channels, 1) for _ in range(scales - 1))
        self.fuse_all = _conv_lrelu(scales * channels, channels, 1) if scales > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.scales
        coarse = x if n == 1 else F.max_pool2d(x, 2 ** (n - 1))
        prev = self.chains[n - 1](coarse)
        results = [prev]  # coarsest first
        for k in range(n - 2, -1, -1):
            feat = x if k == 0 else F.max_pool2d(x, 2**k)
            prev = self.chains[k](self.fuse[k](torch.cat([feat, _resize(prev, feat)], dim=1)))
            results.append(prev)
        if self.fuse_all is None:
            return prev + x
        # concatenation order of the official code: full size first, then 1/2, 1/4, 1/8
        full = [results[-1]] + [_resize(r, x) for r in reversed(results[:-1])]
        return self.fuse_all(torch.cat(full, dim=1)) + x


class DenseBlockChain(nn.Module):
    """ISCBs with dense fusion: after block i, out = 1x1 conv of [input, t_0..t_i].

    Serves as encoder (returns the block outputs t_i) and as decoder (``skips`` given: block i
    sees out + skips[i], the same-scale encoder feature).
    """

    def __init__(self, channels: int, blocks: int, scales: int, convs: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(InnerScaleConnectionBlock(channels, scales, convs) for _ in range(blocks))
        self.fuse = nn.ModuleList(_conv_lrelu((i + 2) * channels, channels, 1) for i in range(blocks))

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor] | None = None):
        dense, feats, out = [x], [], x
        for i, (block, fuse) in enumerate(zip(self.blocks, self.fuse)):
            t = block(out if skips is None else out + skips[i])
            feats.append(t)
            dense.append(t)
            out = fuse(torch.cat(dense, dim=1))
        return out, feats


class DCSFN(nn.Module):
    """Deep cross-scale fusion deraining network (see module docstring)."""

    min_size = 32

    def __init__(self, channels: int = 20, blocks: int = 16, scales: int = 4, convs: int = 4,
                 official_unused: bool = True, small_input: Literal["pad", "error"] = "pad",
                 channel_order: Literal["rgb", "bgr"] = "rgb") -> None:
        super().__init__()
        if small_input not in ("pad", "error"):
            raise ValueError(f"small_input must be 'pad' or 'error', got {small_input!r}")
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        if not 1 <= scales <= 4:
            raise ValueError(f"DCSFN blocks have 1 to 4 scales, got {scales}")
        self.small_input, self.channel_order = small_input, channel_order
        # the 1/4 sub-network pools by 2**(scales-1) once more inside each block
        self.min_size = 4 * 2 ** (scales - 1)
        c = channels
        self.convert = _conv_lrelu(3, c, 3)
        # index 0, 1, 2 = sub-network at full, 1/2, 1/4 resolution
        self.encoders = nn.ModuleList(DenseBlockChain(c, blocks, scales, convs) for _ in range(3))
        self.decoders = nn.ModuleList(DenseBlockChain(c, blocks, scales, convs) for _ in range(3))
        self.gru_coarse_to_fine = nn.ModuleList(ConvGRUCell(c, c) for _ in range(3))
        self.gru_fine_to_coarse = nn.ModuleList(ConvGRUCell(c, c) for _ in range(3))
        self.state_fuse_full = _conv_lrelu(2 * c, c, 1)  # 1/2 + 1/4 states -> full-size GRU state
        self.state_fuse_quarter = _conv_lrelu(2 * c, c, 1)  # full + 1/2 states -> 1/4 GRU state
        if official_unused:
            # The official code also builds these to fuse LSTM cell memories; with the GRU they are
            # never called, but they are part of the published 6,453,147 parameters.
            self.memory_fuse_full = _conv_lrelu(2 * c, c, 1)
            self.memory_fuse_quarter = _conv_lrelu(2 * c, c, 1)
        self.merge = nn.Sequential(nn.Conv2d(3 * c, 3, 1), nn.LeakyReLU(0.2), nn.Conv2d(3, 3, 3, padding=1))

    @staticmethod
    def _gru(cell: ConvGRUCell, x: torch.Tensor, h: torch.Tensor | None) -> torch.Tensor:
        # DCSFN's GRU unit: RESCAN's gates followed by LeakyReLU, no SE; output = carried state
        return F.leaky_relu(cell(x, h), 0.2)

    def rain_map(self, x: torch.Tensor) -> torch.Tensor:
        """The rain layer predicted for x (network channel order, any size >= min_size)."""
        f1 = self.convert(x)
        feats = [f1, F.max_pool2d(f1, 2), F.max_pool2d(f1, 4)]
        enc = [e(f) for e, f in zip(self.encoders, feats)]
        e1, e2, e4 = (out for out, _ in enc)
        g = self.gru_coarse_to_fine
        h4 = self._gru(g[2], e4, None)
        h2 = self._gru(g[1], e2, _resize(h4, e2))
        h1 = self._gru(g[0], e1, self.state_fuse_full(torch.cat([_resize(h2, e1), _resize(h4, e1)], dim=1)))
        g = self.gru_fine_to_coarse
        k1 = self._gru(g[0], h1, None)
        k2 = self._gru(g[1], h2, _resize(k1, h2))
        k4 = self._gru(g[2], h4, self.state_fuse_quarter(torch.cat([_resize(k1, h4), _resize(k2, h4)], dim=1)))
        dec = [d(k, skips)[0] for d, k, (_, skips) in zip(self.decoders, (k1, k2, k4), enc)]
        return self.merge(torch.cat([dec[0], _resize(dec[1], dec[0]), _resize(dec[2], dec[0])], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_rgb_batch(x, "DCSFN", self.min_size if self.small_input == "error" else 1)
        h, w = x.shape[-2:]
        ph, pw = max(self.min_size - h, 0), max(self.min_size - w, 0)
        inp = x.flip(1) if self.channel_order == "bgr" else x
        if ph or pw:
            # reflect needs the pad to be smaller than the side; tiny inputs fall back to replicate
            mode = "reflect" if ph < h and pw < w else "replicate"
            inp = F.pad(inp, (0, pw, 0, ph), mode=mode)
        rain = self.rain_map(inp)[..., :h, :w]
        if self.channel_order == "bgr":
            rain = rain.flip(1)
        return x - rain

    def own_loss(self, outputs, rainy: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """Official loss: -SSIM(derained, clean) with the official SSIM's zero-padded windows.

        Zero-padding both images by 5 px and taking 'valid' 11x11 windows equals the official
        'same' convolution with zero padding, so the shared SSIM is reused.
        """
        out = outputs["out"] if isinstance(outputs, dict) else outputs
        out = out[-1] if isinstance(out, (list, tuple)) else out
        return -ssim(out, clean)  # zero-padded windows (official cal_ssim), the shared default


@register_model("dcsfn")
def dcsfn(channels: int = 20, blocks: int = 16, scales: int = 4, convs: int = 4,
          official_unused: bool = True, small_input: Literal["pad", "error"] = "pad",
          channel_order: Literal["rgb", "bgr"] = "rgb") -> DCSFN:
    """Official DCSFN configuration (6,453,147 parameters)."""
    return DCSFN(channels, blocks, scales, convs, official_unused, small_input, channel_order)


# Official DCSFN (Ohraincu/DCSFN config/model.py, GRU, Net_cross) module names -> ours.
_DCSFN_SUBNET = {"1": "0", "2": "1", "4": "2"}
_DCSFN_SCALE = {"1": "0", "2": "1", "4": "2", "8": "3"}
_DCSFN_FUSE = {"21": "0", "42": "1", "84": "2"}  # fuse[k] joins scale 1/2**k with the next coarser one
_DCSFN_FIXED = {"fusion_1_2_1": "state_fuse_full", "fusion_2_2_1": "state_fuse_quarter",
                "fusion_1_2_2": "memory_fuse_full", "fusion_2_2_2": "memory_fuse_quarter"}


def official_name_to_ours(name: str) -> str | None:
    """Official DCSFN state-dict key -> ours (None: unknown)."""
    m = re.fullmatch(r"(en|de)coder_scale([124])\.(.+)", name)
    if m:
        head = f"{m[1]}coders.{_DCSFN_SUBNET[m[2]]}."
        rest = m[3]
        for pattern, repl in ((r"units\.(\d+)\.scale([1248])\.(\d+)\.0\.(weight|bias)",
                               lambda r: f"blocks.{r[1]}.chains.{_DCSFN_SCALE[r[2]]}.{r[3]}.0.{r[4]}"),
                              (r"units\.(\d+)\.fusion(21|42|84)\.0\.(weight|bias)",
                               lambda r: f"blocks.{r[1]}.fuse.{_DCSFN_FUSE[r[2]]}.0.{r[3]}"),
                              (r"units\.(\d+)\.fusion_all\.0\.(weight|bias)",
                               lambda r: f"blocks.{r[1]}.fuse_all.0.{r[2]}"),
                              (r"conv1x1\.(\d+)\.0\.(weight|bias)", lambda r: f"fuse.{r[1]}.0.{r[2]}")):
            r = re.fullmatch(pattern, rest)
            if r:
                return head + repl(r)
        return None
    m = re.fullmatch(r"rec([12])_([124])\.(conv_[xh][zrn]\.(?:weight|bias))", name)
    if m:
        direction = "gru_coarse_to_fine" if m[1] == "1" else "gru_fine_to_coarse"
        return f"{direction}.{_DCSFN_SUBNET[m[2]]}.{m[3]}"
    m = re.fullmatch(r"(fusion_[12]_2_[12])\.0\.(weight|bias)", name)
    if m:
        return f"{_DCSFN_FIXED[m[1]]}.0.{m[2]}"
    if re.fullmatch(r"(convert\.0|merge\.[02])\.(weight|bias)", name):
        return name
    return None


@register_official("dcsfn")
def from_official(source, **kwargs) -> DCSFN:
    """DCSFN holding official weights (path or mapping); ``channel_order="bgr"`` by default, as
    the official code reads OpenCV BGR images."""
    kwargs.setdefault("channel_order", "bgr")
    state = read_state(source, "DCSFN")
    return load_mapped(dcsfn(**kwargs), state, official_name_to_ours, source, "DCSFN")
