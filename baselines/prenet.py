"""PReNet: Progressive Recurrent Network for single image deraining.

Ren, Zuo, Hu, Zhu, Meng, "Progressive Image Deraining Networks: A Better and Simpler
Baseline", CVPR 2019. Official code: github.com/csdwren/PReNet (read for facts only).

One small network is unrolled for ``stages`` steps with shared weights. Every stage sees the
rainy image O next to the previous estimate, passes through a convolutional LSTM whose state
links the stages, then five residual blocks, and predicts the clean image as O plus a
residual. Default = the published PReNet6 (6 stages, LSTM): 168,963 parameters. Builder
switches give the other networks of the official release (PRN, the recursive ``_r`` models, the
LSTM/GRU/x ablations, the real-rain models); ``OFFICIAL_RELEASES`` lists them per checkpoint.
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


class ConvGRUCell(nn.Module):
    """Convolutional GRU of the official PReNet6_GRU ablation.

    Update gate z and reset gate r (official ``conv_z`` and ``conv_b``) both read concat(x, h), so
    they share one conv here (stacked z, r). The candidate reads concat(r * h, x), the reset state
    *first*, as the official ``conv_g`` does; its kernel is used as stored, so the channel order
    must stay. New state: (1 - z) * h + z * candidate.
    """

    def __init__(self, in_channels: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(in_channels + hidden, 2 * hidden, 3, padding=1)
        self.candidate = nn.Conv2d(hidden + in_channels, hidden, 3, padding=1)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        z, r = torch.sigmoid(self.gates(torch.cat((x, h), 1))).chunk(2, dim=1)
        g = torch.tanh(self.candidate(torch.cat((r * h, x), 1)))
        return (1 - z) * h + z * g


RECURRENT_UNITS = ("lstm", "gru", None)


class PReNet(nn.Module):
    """Progressive recurrent deraining network (RGB in [0,1] in and out, any H x W).

    train(): list of the ``stages`` per-stage estimates (last = final); eval(): final estimate.

    The switches cover every network of the official release (csdwren/PReNet networks.py and
    generator.py); the defaults are PReNet6:

    * ``recurrent``: "lstm" (PReNet), "gru" (PReNet6_GRU ablation) or None (PRN: no state
      between stages, each stage sees only O and the previous estimate).
    * ``recursive``: one residual block applied ``res_blocks`` times instead of ``res_blocks``
      separate blocks (the ``_r`` models: PReNet_r, PRN_r).
    * ``input_skip``: estimate = O + predicted residual (PReNet, PReNet_r, PRN, PRN_r). The
      official ablation classes PReNet_LSTM (PReNet5/6/7_LSTM, PReNet6_RecSSIM), PReNet_GRU,
      PReNet_x and the real-rain Generator_lstm predict the image directly: False.
    * ``feed_rainy``: every stage sees concat(O, previous estimate); False = only the previous
      estimate (PReNet6_x, whose first conv has 3 input channels).
    * ``recurrent_after_blocks``: the recurrent unit sits after the residual blocks and the
      output conv reads its state (Generator_lstm of the real-rain models PReNet1/PReNet2).
    """

    def __init__(self, stages: int = 6, channels: int = 32, res_blocks: int = 5, recurrent: str | None = "lstm",
                 recursive: bool = False, input_skip: bool = True, feed_rainy: bool = True,
                 recurrent_after_blocks: bool = False) -> None:
        super().__init__()
        if stages < 1:
            raise ValueError(f"PReNet needs at least one stage, got stages={stages}")
        if recurrent == "none":  # the string form a YAML/CLI override can carry
            recurrent = None
        if recurrent not in RECURRENT_UNITS:
            raise ValueError(f"PReNet recurrent unit must be one of {RECURRENT_UNITS}, got {recurrent!r}")
        if recurrent is None and recurrent_after_blocks:
            raise ValueError("recurrent_after_blocks needs a recurrent unit (recurrent='lstm' or 'gru')")
        self.stages = stages
        self.channels = channels
        self.recurrent = recurrent
        self.recursive = recursive
        self.res_blocks = res_blocks
        self.input_skip = input_skip
        self.feed_rainy = feed_rainy
        self.recurrent_after_blocks = recurrent_after_blocks
        # Stage input = concat(rainy O, previous estimate x_{s-1}) (6 channels), or x_{s-1} alone.
        self.fuse = nn.Conv2d(6 if feed_rainy else 3, channels, 3, padding=1)
        # Attribute names per unit keep state_dicts saved before the switches existed ("lstm.gates").
        if recurrent == "lstm":
            self.lstm = ConvLSTMCell(channels, channels)
        elif recurrent == "gru":
            self.gru = ConvGRUCell(channels, channels)
        # recursive: a single block, reused res_blocks times in forward (weights shared).
        self.blocks = nn.ModuleList(ResidualBlock(channels) for _ in range(1 if recursive else res_blocks))
        self.to_image = nn.Conv2d(channels, 3, 3, padding=1)

    def _residual_blocks(self, feat: torch.Tensor) -> torch.Tensor:
        if self.recursive:
            for _ in range(self.res_blocks):
                feat = self.blocks[0](feat)
        else:
            for block in self.blocks:
                feat = block(feat)
        return feat

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"PReNet expects a [B,3,H,W] RGB tensor, got shape {tuple(x.shape)}")
        b, _, h, w = x.shape
        state_h = x.new_zeros(b, self.channels, h, w)
        state_c = x.new_zeros(b, self.channels, h, w)  # LSTM cell; unused by GRU / no unit
        estimate = x  # x_0 = O
        estimates = []
        for _ in range(self.stages):
            feat = F.relu(self.fuse(torch.cat((x, estimate), 1) if self.feed_rainy else estimate))
            if self.recurrent is not None and not self.recurrent_after_blocks:
                feat, state_h, state_c = self._step(feat, state_h, state_c)
            feat = self._residual_blocks(feat)
            if self.recurrent is not None and self.recurrent_after_blocks:
                feat, state_h, state_c = self._step(feat, state_h, state_c)
            out = self.to_image(feat)
            # PReNet learns the clean image as rainy input plus a correction; the ablation
            # classes without the skip predict the image itself.
            estimate = out + x if self.input_skip else out
            estimates.append(estimate)
        return estimates if self.training else estimates[-1]

    def _step(self, feat, state_h, state_c):
        """One recurrent update; the features passed on are the new hidden state."""
        if self.recurrent == "lstm":
            state_h, state_c = self.lstm(feat, state_h, state_c)
        else:
            state_h = self.gru(feat, state_h)
        return state_h, state_h, state_c

    def own_loss(self, outputs, rainy: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """PReNet's paper loss: negative SSIM of the final stage only (no per-stage terms)."""
        final = outputs[-1] if isinstance(outputs, (list, tuple)) else outputs
        return -ssim(final, clean)  # zero-padded 11x11 Gaussian windows, as the official SSIM.py


# ---- official checkpoints -------------------------------------------------------------------------

# Stacking order of the official gate convs inside our single gate conv (see the cells' forward).
_GATE_ORDER = ("i", "f", "g", "o")
_GRU_GATE_ORDER = ("z", "b")

# Builder switches of the 20 files of the official release (logs/<set>/<variant>/net_latest.pth,
# logs/real/PReNet1.pth and PReNet2.pth), keyed "<set>/<variant>", taken from the test script
# and network class each is meant for (test_*.sh, test_real.py). Only the switches a file's keys
# cannot show are listed; from_official reads the rest from the keys.
OFFICIAL_RELEASES: dict[str, dict] = {
    **{f"{s}/{v}": {} for s in ("Rain100H", "Rain100L", "Rain1400") for v in ("PReNet6", "PReNet6_r", "PRN6", "PRN6_r")},
    # test_PReNet_LSTM.py (class PReNet_LSTM, no input skip); RecSSIM is the same net, other loss
    "Ablation/PReNet5_LSTM": {"stages": 5, "input_skip": False},
    "Ablation/PReNet6_LSTM": {"stages": 6, "input_skip": False},
    "Ablation/PReNet7_LSTM": {"stages": 7, "input_skip": False},
    "Ablation/PReNet6_RecSSIM": {"stages": 6, "input_skip": False},
    "Ablation/PReNet6_GRU": {"stages": 6},   # keys say GRU; the GRU default is already no skip
    "Ablation/PReNet6_x": {"stages": 6},     # keys say 3-channel stage input; default no skip
    # test_real.py: generator.py Generator_lstm, recurrent_iter 4, unit after the blocks, no skip
    "real/PReNet1": {"stages": 4, "input_skip": False, "recurrent_after_blocks": True},
    "real/PReNet2": {"stages": 4, "input_skip": False, "recurrent_after_blocks": True},
}


def _official_key_map(res_blocks: int) -> dict[str, str]:
    """Our parameter prefix -> official prefix (the official modules are nn.Sequential).

    ``res_blocks`` = number of block *modules* (1 for the recursive ``_r`` models).
    """
    m = {"fuse": "conv0.0", "to_image": "conv.0"}
    for k in range(res_blocks):
        m[f"blocks.{k}.conv1"] = f"res_conv{k + 1}.0"
        m[f"blocks.{k}.conv2"] = f"res_conv{k + 1}.2"
    return m


def _stacked(recurrent: str | None) -> dict[str, tuple[str, ...]]:
    """Our stacked gate conv -> the official convs it holds, in stacking order."""
    if recurrent == "lstm":
        return {"lstm.gates": tuple(f"conv_{g}.0" for g in _GATE_ORDER)}
    if recurrent == "gru":
        return {"gru.gates": tuple(f"conv_{g}.0" for g in _GRU_GATE_ORDER), "gru.candidate": ("conv_g.0",)}
    return {}


def official_to_ours(state: dict[str, torch.Tensor], res_blocks: int = 5,
                     recurrent: str | None = "lstm") -> dict[str, torch.Tensor]:
    """Rename an official PReNet state_dict to this module's names (gates stacked, see _stacked)."""
    out = {}
    for ours, theirs in _official_key_map(res_blocks).items():
        for p in ("weight", "bias"):
            out[f"{ours}.{p}"] = state[f"{theirs}.{p}"]
    for ours, theirs in _stacked(recurrent).items():
        for p in ("weight", "bias"):
            out[f"{ours}.{p}"] = torch.cat([state[f"{t}.{p}"] for t in theirs], 0)
    return out


def ours_to_official(state: dict[str, torch.Tensor], res_blocks: int = 5,
                     recurrent: str | None = "lstm") -> dict[str, torch.Tensor]:
    """Inverse of ``official_to_ours`` (used to check that the mapping loses nothing)."""
    out = {}
    for ours, theirs in _official_key_map(res_blocks).items():
        for p in ("weight", "bias"):
            out[f"{theirs}.{p}"] = state[f"{ours}.{p}"]
    for ours, theirs in _stacked(recurrent).items():
        for p in ("weight", "bias"):
            for t, part in zip(theirs, state[f"{ours}.{p}"].chunk(len(theirs), 0)):
                out[f"{t}.{p}"] = part
    return out


def _official_keys(res_blocks: int, recurrent: str | None) -> set[str]:
    prefixes = list(_official_key_map(res_blocks).values())
    prefixes += [t for theirs in _stacked(recurrent).values() for t in theirs]
    return {f"{p}.{s}" for p in prefixes for s in ("weight", "bias")}


def official_structure(state: dict[str, torch.Tensor]) -> dict:
    """The switches an official state_dict's keys and shapes show.

    recurrent: conv_i/f/g/o = LSTM, conv_z/b/g = GRU, neither = PRN; recursive: res_conv1 only
    (res_conv2 absent); feed_rainy: the first conv's input channels (6 = concat(O, x), 3 = x).
    Unreadable parts fall back to the PReNet6 value so that the strict key check names the problem.
    """
    names = {k.split(".")[0] for k in state}
    recurrent = "gru" if {"conv_z", "conv_b"} & names else "lstm" if {"conv_i", "conv_f", "conv_o"} & names else None
    blocks = sorted(int(n[len("res_conv"):]) for n in names if n.startswith("res_conv") and n[len("res_conv"):].isdigit())
    recursive = blocks == [1]
    fuse = state.get("conv0.0.weight")
    feed_rainy = not (fuse is not None and fuse.dim() == 4 and fuse.shape[1] == 3)
    out = {"recurrent": recurrent, "recursive": recursive, "feed_rainy": feed_rainy}
    if blocks and not recursive:
        out["res_blocks"] = max(blocks)
    return out


def official_switches(state: dict[str, torch.Tensor], **explicit) -> dict:
    """Builder kwargs for an official state_dict: structure from its keys, the rest explicit.

    What the keys cannot show: ``stages`` (default 6), ``recurrent_after_blocks`` (default False),
    ``res_blocks`` of a recursive file (default 5, as hard-coded officially) and ``input_skip``,
    whose default is the one official class of that key layout that has no twin: GRU and 3-channel
    (``_x``) layouts exist only in classes without the skip (False); an LSTM or unit-less layout
    defaults to PReNet/PRN (True). The LSTM ablations and real models share PReNet6's keys and
    must be told (``OFFICIAL_RELEASES`` lists their switches). An explicit structural switch that
    contradicts the keys is an error.
    """
    seen = official_structure(state)
    for k, v in seen.items():
        if k in explicit and explicit[k] is not None and (None if explicit[k] == "none" else explicit[k]) != v:
            raise ValueError(f"checkpoint holds {k}={v!r} (from its keys), but {k}={explicit[k]!r} was asked")
    kwargs = {**{k: v for k, v in explicit.items() if v is not None}, **seen}
    kwargs.setdefault("input_skip", seen["recurrent"] != "gru" and seen["feed_rainy"])
    return kwargs


@register_official("prenet")
def from_official(path, release: str | None = None, **builder_kwargs) -> PReNet:
    """Build PReNet and load official weights: a checkpoint path (e.g.
    logs/Rain100L/PReNet6/net_latest.pth) or an already-read mapping.

    The variant is read from the file's keys where they show it (recurrent unit, recursive block,
    stage input; see ``official_structure``); stages, input skip and unit position are taken
    from ``builder_kwargs`` or from ``release`` ("<set>/<variant>" of OFFICIAL_RELEASES, e.g.
    "Ablation/PReNet5_LSTM"), see ``official_switches`` for the defaults.

    The files are plain state_dicts saved on GPU, so they are mapped to CPU. A ``module.``
    prefix (checkpoints saved through nn.DataParallel) is stripped. Loading is strict.
    """
    state = read_state(path, "PReNet")
    label = source_label(path)
    if release is not None:
        if release not in OFFICIAL_RELEASES:
            raise ValueError(f"unknown PReNet release {release!r}; known: {', '.join(OFFICIAL_RELEASES)}")
        builder_kwargs = {**OFFICIAL_RELEASES[release], **builder_kwargs}
    try:
        kwargs = official_switches(state, **builder_kwargs)
    except ValueError as e:
        raise ValueError(f"{label}: {e}") from None
    model = PReNet(**kwargs)
    expected = _official_keys(len(model.blocks), model.recurrent)
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise ValueError(f"{label}: not an official PReNet state_dict ({model.recurrent or 'no'} unit, "
                         f"{len(model.blocks)} res block module(s)); missing keys {missing}, unexpected keys {unexpected}")
    mapped = official_to_ours(state, len(model.blocks), model.recurrent)
    own = model.state_dict()
    for k, v in mapped.items():
        if v.shape != own[k].shape:
            raise ValueError(f"{label}: tensor for {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    model.load_state_dict(mapped, strict=True)
    return model


@register_model("prenet")
def prenet(stages: int = 6, channels: int = 32, res_blocks: int = 5, recurrent: str | None = "lstm",
           recursive: bool = False, input_skip: bool = True, feed_rainy: bool = True,
           recurrent_after_blocks: bool = False) -> PReNet:
    """PReNet6 as published: 6 recurrent stages, ConvLSTM, 32 channels, 5 residual blocks.

    Official variants: PRN6 ``recurrent=None``; PReNet6_r ``recursive=True``; PRN6_r both;
    PReNet5/6/7_LSTM and PReNet6_RecSSIM ``stages=5/6/7, input_skip=False``; PReNet6_GRU
    ``recurrent="gru", input_skip=False``; PReNet6_x ``feed_rainy=False, input_skip=False``;
    real PReNet1/2 ``stages=4, input_skip=False, recurrent_after_blocks=True``.
    """
    return PReNet(stages=stages, channels=channels, res_blocks=res_blocks, recurrent=recurrent, recursive=recursive,
                  input_skip=input_skip, feed_rainy=feed_rainy, recurrent_after_blocks=recurrent_after_blocks)
