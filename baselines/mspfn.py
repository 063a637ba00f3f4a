"""MSPFN: Multi-Scale Progressive Fusion Network for single image deraining.

Jiang, Wang, Yi, Chen, Huang, Luo, Ma, Jiang; CVPR 2020. Re-implemented in PyTorch from the
paper and the facts of the official TensorFlow 1.x graph (kuijiang94/MSPFN, ``model/MSPFN.py``
for training, ``model/TEST_MSPFN_M17N1.py`` for the released weights).

Structure: a 3-level input pyramid (full, 1/2, 1/4 by box averaging); per level a 3->64 conv;
a coarse-fusion stage (one ConvLSTM step per level, coarse to fine, the coarser result
upsampled into the finer level); 17 fine-fusion iterations, each running one "unit" per level
coarse to fine (stride-2 down, N residual channel-attention blocks, concat with the
down-sampled input, stride-2 transposed conv back, residual add); then a reconstruction that
merges the levels and predicts the rain layer. Output = input - rain.
``rcabs=(1, 3, 3)`` (RCABs per unit at 1/4, 1/2, full) is the training graph of Table 1
(20,995,776 parameters); ``rcabs=(1, 1, 1)`` is the released M17N1 model (15,823,424).

TensorFlow conventions matched (so that a converter of the official checkpoints only has to
rename and permute tensors):
* Value range and channels: the official net sees OpenCV BGR scaled to [-1, 1] (x/127.5 - 1)
  and predicts the rain layer in that space. Our forward takes RGB [0, 1], converts to
  BGR [-1, 1] inside and converts the result back (``channel_order="rgb"`` skips the flip).
* Every "conv" of the official graph outside the RCABs is bias-free, and all stride-1 ones
  are written as ``conv2d_transpose`` with stride 1 and SAME padding. That equals an ordinary
  3x3 conv (padding 1) with a spatially flipped kernel, so we use ``nn.Conv2d``; convert with
  ``torch.from_numpy(w_tf[::-1, ::-1].copy()).permute(2, 3, 0, 1)`` (TF transposed filters
  are [kh, kw, out, in]).
* Stride-2 SAME conv: TF pads ``total = max((out-1)*2 + 3 - in, 0)`` with the smaller half
  first, i.e. (0, 1) for even sizes and (1, 1) for odd ones. PyTorch's symmetric padding=1
  would shift the sampling grid by one pixel, so we pad explicitly the TF way. Weight
  HWIO -> OIHW: ``permute(3, 2, 0, 1)``.
* Stride-2 SAME transposed conv with an explicit output size T: output pixel y receives
  input i through tap k where y = 2i + k - before, ``before = total // 2`` with the same
  ``total`` as above. We run ``ConvTranspose2d(padding=0)`` (size 2n+1) and crop [before,
  before+T). No kernel flip: both frameworks define it as the gradient of cross-correlation.
  TF filter [kh, kw, out, in] -> PyTorch [in, out, kh, kw]: ``permute(3, 2, 0, 1)``.
* PReLU ``max(0,x) + a*min(0,x)`` with one alpha per channel, initialised to 0 (so it starts
  as ReLU). Bias-free convs and transposed convs: Xavier/Glorot uniform (TF fan sums are
  symmetric in in/out, so PyTorch's ``xavier_uniform_`` gives the same bound). RCAB convs
  (tf.layers defaults): Glorot uniform kernel, zero bias.
* ConvLSTM (BasicConvLSTMCell): a single 3x3 conv with bias over concat(input, h) gives
  4*hidden channels split in the order i, j (candidate), f, o; c' = c*sig(f + 1.0) +
  sig(i)*tanh(j), h' = tanh(c')*sig(o); kernel truncated-normal std 1e-3, bias 0. Our weight
  is the TF kernel [3, 3, in+hidden, 4*hidden] permuted to OIHW (input channels first, then h).
  MSPFN runs each cell for one step from the zero state, so the h-part of the kernel and the
  forget gate cannot influence the output (zero gradient in TF too); we keep those
  parameters for the count and for checkpoint compatibility but skip computing them.
* Pyramid: TF convolves with a uniform KxK stride-K kernel (SAME); for sizes divisible by K
  that is exactly average pooling, which we use by default. The paper's text speaks of a
  Gaussian pyramid without giving the kernel; ``pyramid="gaussian"`` builds one the classic
  (OpenCV ``pyrDown``) way: 5x5 binomial blur, reflect-101 border, keep every second pixel.

Sizes: the official graph needs H, W divisible by 4 (1/4 level); below that the stride-2
ops handle odd sizes as TF does. Other sizes are reflect-padded at the bottom/right up to a
multiple of 4 and cropped back, so the output always has the input's shape.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import charbonnier, check_names, read_tf_variables, register_model, register_official, stage_outputs


MIN_SIZE = 4  # the 1/4 pyramid level must hold at least one pixel


def _pyr_down(x: torch.Tensor) -> torch.Tensor:
    """One Gaussian pyramid step: separable [1, 4, 6, 4, 1]/16 blur, then every second pixel."""
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device) / 16
    c = x.shape[1]
    # reflect = OpenCV's BORDER_REFLECT_101; a 2-pixel-wide map (4-pixel input) cannot reflect 2.
    x = F.pad(x, (2, 2, 2, 2), mode="reflect" if min(x.shape[-2:]) > 2 else "replicate")
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    x = F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)
    return x[..., ::2, ::2]


def _same_total(n_out: int, n_in: int) -> int:
    """TF SAME padding total of a 3x3 stride-2 conv mapping n_in -> n_out."""
    return max((n_out - 1) * 2 + 3 - n_in, 0)


class ConvPReLU(nn.Sequential):
    """3x3 stride-1 bias-free conv + PReLU (the official stride-1 deconv_layer + prelu)."""

    def __init__(self, cin: int, cout: int, act: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False)]
        if act:
            layers.append(nn.PReLU(cout, init=0.0))
        super().__init__(*layers)


class DownPReLU(nn.Module):
    """3x3 stride-2 bias-free conv with TF 'SAME' padding, + PReLU."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, bias=False)
        self.act = nn.PReLU(c, init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        th, tw = _same_total((h + 1) // 2, h), _same_total((w + 1) // 2, w)
        x = F.pad(x, (tw // 2, tw - tw // 2, th // 2, th - th // 2))
        return self.act(self.conv(x))


class UpPReLU(nn.Module):
    """3x3 stride-2 bias-free transposed conv to an explicit size, TF 'SAME' alignment, + PReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(cin, cout, 3, stride=2, bias=False)
        self.act = nn.PReLU(cout, init=0.0)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        (h, w), (th, tw) = x.shape[-2:], size
        y = self.conv(x)  # (2h+1, 2w+1)
        top, left = _same_total(h, th) // 2, _same_total(w, tw) // 2
        return self.act(y[..., top:top + th, left:left + tw])


class RCAB(nn.Module):
    """Residual channel-attention block: conv-PReLU-conv, squeeze-excite scaling, skip."""

    def __init__(self, c: int = 64, reduction: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.PReLU(c, init=0.0), nn.Conv2d(c, c, 3, padding=1))
        r = c // reduction
        self.attn = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, r, 1), nn.PReLU(r, init=0.0),
                                  nn.Conv2d(r, c, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.body(x)
        return x + f * self.attn(f)


class ConvLSTMCell(nn.Module):
    """BasicConvLSTMCell of the official code, run for one step from the zero state."""

    def __init__(self, cin: int, hidden: int) -> None:
        super().__init__()
        self.cin, self.hidden = cin, hidden
        self.weight = nn.Parameter(torch.empty(4 * hidden, cin + hidden, 3, 3))  # gates i, j, f, o
        self.bias = nn.Parameter(torch.zeros(4 * hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # h = c = 0: only the input columns and the i, j, o gates matter (f multiplies c = 0).
        gates = [0, 1, 3]
        w = self.weight.view(4, self.hidden, -1, 3, 3)[gates, :, : self.cin].reshape(-1, self.cin, 3, 3)
        b = self.bias.view(4, self.hidden)[gates].reshape(-1)
        i, j, o = F.conv2d(x, w, b, padding=1).chunk(3, dim=1)
        c = torch.sigmoid(i) * torch.tanh(j)
        return torch.tanh(c) * torch.sigmoid(o)


class CoarseFusion(nn.Module):
    """One level of the coarse-fusion ("residual memory") stage: 64->32, ConvLSTM, ->64."""

    def __init__(self, hidden: int, c: int = 64) -> None:
        super().__init__()
        self.inp = ConvPReLU(c, c // 2)
        self.lstm = ConvLSTMCell(c // 2, hidden)
        self.out = ConvPReLU(hidden, c)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        # The skip is the level's plain features, not the input enhanced by coarser levels.
        return skip + self.out(self.lstm(self.inp(x)))


class FusionUnit(nn.Module):
    """Fine-fusion unit: down by 2, N RCABs, concat with the down-sampled input, up, add."""

    def __init__(self, n_rcab: int, c: int = 64) -> None:
        super().__init__()
        self.down = DownPReLU(c)
        self.body = nn.Sequential(*[RCAB(c) for _ in range(n_rcab)])
        self.up = UpPReLU(2 * c, c)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        s = self.down(x)
        return state + self.up(torch.cat([s, self.body(s)], 1), state.shape[-2:])


class FineFusion(nn.Module):
    """One of the M multi-scale iterations: units at 1/4, 1/2, full, coarse to fine."""

    def __init__(self, rcabs: tuple[int, int, int], c: int = 64) -> None:
        super().__init__()
        self.unit4, self.unit2, self.unit1 = (FusionUnit(n, c) for n in rcabs)
        self.up4_2, self.up4_1, self.up2_1 = UpPReLU(c, c), UpPReLU(c, c), UpPReLU(c, c)

    def forward(self, f4: torch.Tensor, f2: torch.Tensor, f1: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f4 = self.unit4(f4, f4)
        u4_2 = self.up4_2(f4, f2.shape[-2:])
        f2 = self.unit2(f2 + u4_2, f2)
        # Full level gets the already-upsampled 1/4 path upsampled once more, plus the 1/2 result.
        e1 = f1 + self.up4_1(u4_2, f1.shape[-2:]) + self.up2_1(f2, f1.shape[-2:])
        return f4, f2, self.unit1(e1, f1)


class MSPFN(nn.Module):
    """MSPFN; forward takes RGB [0, 1] and returns the derained RGB image of the same shape."""

    pad_multiple = 4

    def __init__(self, blocks: int = 17, rcabs: tuple[int, int, int] = (1, 3, 3), channels: int = 64,
                 lstm_hidden: tuple[int, int, int] = (64, 128, 256), channel_order: str = "bgr",
                 pyramid: str = "box") -> None:
        super().__init__()
        if channel_order not in ("bgr", "rgb"):
            raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
        if pyramid not in ("box", "gaussian"):
            raise ValueError(f"pyramid must be 'box' or 'gaussian', got {pyramid!r}")
        if len(rcabs) != 3 or len(lstm_hidden) != 3:
            raise ValueError("rcabs and lstm_hidden need one entry per level (1/4, 1/2, full)")
        self.channel_order, self.pyramid = channel_order, pyramid
        c = channels
        self.head1, self.head2, self.head4 = ConvPReLU(3, c), ConvPReLU(3, c), ConvPReLU(3, c)
        self.coarse4, self.coarse2, self.coarse1 = (CoarseFusion(h, c) for h in lstm_hidden)
        self.coarse_up4_2, self.coarse_up4_1, self.coarse_up2_1 = UpPReLU(c, c), UpPReLU(c, c), UpPReLU(c, c)
        self.fine = nn.ModuleList(FineFusion(tuple(rcabs), c) for _ in range(blocks))
        self.recon4, self.recon2, self.recon1 = ConvPReLU(2 * c, c), ConvPReLU(2 * c, c), ConvPReLU(2 * c, c)
        self.rec_up4_2, self.rec_up2_1 = UpPReLU(c, c), UpPReLU(2 * c, c)
        self.tail = nn.Sequential(ConvPReLU(2 * c, c // 2), ConvPReLU(c // 2, 3, act=False))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, ConvLSTMCell):
                nn.init.trunc_normal_(m.weight, std=1e-3, a=-2e-3, b=2e-3)
                nn.init.zeros_(m.bias)

    def _to_net(self, x: torch.Tensor) -> torch.Tensor:
        x = x * 2 - 1
        return x.flip(1) if self.channel_order == "bgr" else x

    def _from_net(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flip(1) if self.channel_order == "bgr" else x
        return (x + 1) / 2

    def rain_layer(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted rain residual, in the network's space; H, W must be multiples of 4."""
        if self.pyramid == "box":
            x2, x4 = F.avg_pool2d(x, 2), F.avg_pool2d(x, 4)
        else:
            x2 = _pyr_down(x)
            x4 = _pyr_down(x2)
        s1, s2 = x.shape[-2:], x2.shape[-2:]
        r1, r2, r4 = self.head1(x), self.head2(x2), self.head4(x4)
        m4 = self.coarse4(r4, r4)
        u4_2 = self.coarse_up4_2(m4, s2)
        m2 = self.coarse2(r2 + u4_2, r2)
        m1 = self.coarse1(r1 + self.coarse_up2_1(m2, s1) + self.coarse_up4_1(u4_2, s1), r1)
        f4, f2, f1 = m4, m2, m1
        for it in self.fine:
            f4, f2, f1 = it(f4, f2, f1)
        f4 = self.recon4(torch.cat([f4, m4], 1))
        f2 = self.recon2(torch.cat([f2, m2], 1))
        f1 = self.recon1(torch.cat([f1, m1], 1))
        up = self.rec_up2_1(torch.cat([self.rec_up4_2(f4, s2), f2], 1), s1)
        return self.tail(torch.cat([f1, up], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"MSPFN expects a [B, 3, H, W] RGB tensor, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if min(h, w) < MIN_SIZE:
            raise ValueError(f"MSPFN needs H, W >= {MIN_SIZE} (1/4 pyramid level), got {h}x{w}")
        ph, pw = -h % self.pad_multiple, -w % self.pad_multiple
        xn = self._to_net(F.pad(x, (0, pw, 0, ph), mode="reflect") if ph or pw else x)
        out = self._from_net(xn - self.rain_layer(xn))
        return out[..., :h, :w]

    def own_loss(self, outputs, rainy: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """Official loss: Charbonnier(1e-3) + 0.05 x Charbonnier of 3x3 Laplacian edges.

        Computed in the network's [-1, 1] space, as the official code does, because the
        Charbonnier epsilon is not scale-invariant. Channel order does not matter here.
        """
        out = stage_outputs(outputs)[-1] * 2 - 1
        ref = clean * 2 - 1
        return charbonnier(out, ref) + 0.05 * charbonnier(laplacian(out), laplacian(ref))


def laplacian(x: torch.Tensor) -> torch.Tensor:
    """Per-channel 3x3 Laplacian (8 centre, -1 around), zero 'SAME' padding."""
    k = -torch.ones(3, 3, dtype=x.dtype, device=x.device)
    k[1, 1] = 8.0
    c = x.shape[1]
    return F.conv2d(x, k.expand(c, 1, 3, 3), padding=1, groups=c)


@register_model("mspfn")
def mspfn(blocks: int = 17, rcabs: tuple[int, int, int] = (1, 3, 3), channels: int = 64,
          lstm_hidden: tuple[int, int, int] = (64, 128, 256), channel_order: str = "bgr",
          pyramid: str = "box") -> MSPFN:
    """MSPFN as trained for Table 1 (``model/MSPFN.py``); ``rcabs=(1, 1, 1)`` = released M17N1."""
    return MSPFN(blocks=blocks, rcabs=tuple(rcabs), channels=channels, lstm_hidden=tuple(lstm_hidden),
                 channel_order=channel_order, pyramid=pyramid)


# --- official TensorFlow weights (names and layouts: mspfn_tf.py) ----------------------------
@torch.no_grad()
def load_tf_variables(model: MSPFN, variables: Mapping, label: str = "the given variables",
                      released_names: bool = False) -> MSPFN:
    """Copy official TF variables (name -> array in TF layout) into ``model``; strict."""
    mapping = tf_variable_map(model, released_names)
    params = dict(model.named_parameters())
    if set(mapping) != set(params):  # a wiring change in this file would break the converter
        raise AssertionError(f"MSPFN TF map out of date: {sorted(set(mapping) ^ set(params))[:5]}")
    expected = {tf: TF_SHAPE[lay](tuple(params[ours].shape)) for ours, (tf, lay) in mapping.items()}
    first = model.fine[0]
    rcabs = tuple(len(u.body) for u in (first.unit4, first.unit2, first.unit1))
    graph = "released test graph" if released_names else "training graph"
    what = f"MSPFN {graph} (blocks={len(model.fine)}, rcabs={rcabs})"
    check_names(variables, expected, label, what)
    for ours, (tf, lay) in mapping.items():
        params[ours].copy_(TO_OURS[lay](torch.as_tensor(variables[tf], dtype=torch.float32)))
    return model


@register_official("mspfn")
def from_official(source: str | Path | Mapping, **kwargs) -> MSPFN:
    """MSPFN holding official TF weights: a checkpoint prefix, an .npz or a {name: array} mapping.

    Both official naming schemes are accepted (training graph ``model/.../URAB*`` and the released
    ``generator/.../BCM*``). Blocks, RCABs per unit and widths are read from the variables present
    (the released M17N1 model gives ``rcabs=(1, 1, 1)``); ``kwargs`` override them. The network
    runs in the official BGR order unless ``channel_order`` says otherwise.
    """
    variables, label = read_tf_variables(source)
    released = any(n.startswith("generator/") for n in variables)
    kw = {"channel_order": "bgr", **config_from_names(variables, released), **kwargs}
    with torch.device("meta"):  # every parameter is overwritten: skip the 21M-value random init
        model = mspfn(**kw)
    return load_tf_variables(model.to_empty(device="cpu"), variables, label, released)


# ---------------------------------------------------------------- official TensorFlow variables
# MSPFN's official TensorFlow variables: names, layouts and the configuration they imply.
# 
# The official graphs (kuijiang94/MSPFN ``model/MSPFN.py``, training; ``model/TEST_MSPFN_M17N1.py``,
# released weights) create their variables with ``deconv_layer``/``conv_layer``/``prelu`` (scope
# ``.../weight``, ``.../alpha``), ``tf.layers.conv2d`` inside the RCABs (``conv2d[_k]/kernel|bias``)
# and ``slim.conv2d`` in the ConvLSTM (``LSTM_conv/weights|biases``). ``tf_variable_map`` pairs
# each parameter of ``baselines.mspfn.MSPFN`` with one of them; ``baselines.mspfn.from_official``
# uses it. Checked against the variables of both official graphs (names, shapes, order:
# tests/fixtures/official/mspfn*/spec.json).

# Layouts: "conv" = tf.nn.conv2d / tf.layers / slim kernel HWIO; "tconv1" = stride-1 conv2d_transpose
# filter [kh, kw, out, in] (our Conv2d needs it spatially flipped); "tconv2" = stride-2 transposed
# conv filter [kh, kw, out, in] (ConvTranspose2d [in, out, kh, kw], no flip); "vec" = as is.
TO_OURS = {
    "conv": lambda w: w.permute(3, 2, 0, 1),
    "tconv1": lambda w: w.flip(0, 1).permute(2, 3, 0, 1),
    "tconv2": lambda w: w.permute(3, 2, 0, 1),
    "vec": lambda w: w,
}
TF_SHAPE = {"conv": lambda s: (s[2], s[3], s[1], s[0]), "tconv1": lambda s: (s[2], s[3], s[0], s[1]),
             "tconv2": lambda s: (s[2], s[3], s[1], s[0]), "vec": tuple}


def tf_variable_map(model: nn.Module, released_names: bool = False) -> dict[str, tuple[str, str]]:
    """Our parameter name -> (official TF variable name, layout), for ``model``'s configuration.

    Names of the training graph (``model/MSPFN.py``: scope ``model``, units ``URAB*``), or with
    ``released_names`` those of the released test graph (``TEST_MSPFN_M17N1.py``: ``generator``,
    ``BCM*``), which differs only in these scope names.
    """
    m: dict[str, tuple[str, str]] = {}

    def conv_prelu(ours: str, tf: str, act: bool = True) -> None:
        m[f"{ours}.0.weight"] = (f"{tf}/weight", "tconv1")
        if act:
            m[f"{ours}.1.weight"] = (f"{tf}/alpha", "vec")

    def resample(ours: str, tf: str, layout: str) -> None:
        m[f"{ours}.conv.weight"], m[f"{ours}.act.weight"] = (f"{tf}/weight", layout), (f"{tf}/alpha", "vec")

    def unit(ours: str, tf: str, down: str, n: int, n_rcab: int) -> None:
        resample(f"{ours}.down", f"{tf}/{down}_{n + 1}", "conv")
        for j in range(n_rcab):  # tf.layers numbers the four RCAB convs conv2d, conv2d_1, _2, _3
            r, g = f"{ours}.body.{j}", f"{tf}/group_{n + 1}_RCAB{j + 1}/conv2d"
            for sub, k in (("body.0", ""), ("body.2", "_1"), ("attn.1", "_2"), ("attn.3", "_3")):
                m[f"{r}.{sub}.weight"], m[f"{r}.{sub}.bias"] = (f"{g}{k}/kernel", "conv"), (f"{g}{k}/bias", "vec")
            m[f"{r}.body.1.weight"], m[f"{r}.attn.2.weight"] = (f"{g}/alpha", "vec"), (f"{g}_2/alpha", "vec")
        resample(f"{ours}.up", f"{tf}/up_{n + 1}", "tconv2")

    for lvl, tf in (("1", "rnn1"), ("2", "rnn2"), ("4", "rnn4")):
        conv_prelu(f"head{lvl}", f"model/{tf}")
    for lvl, tf in (("4", "4"), ("2", "2"), ("1", "")):
        rm = "model/residual_memory"
        conv_prelu(f"coarse{lvl}.inp", f"{rm}/rain{tf}_res1")
        lstm = f"{rm}/lstm_group{tf}/convLSTM/LSTM_conv"
        m[f"coarse{lvl}.lstm.weight"] = (f"{lstm}/weights", "conv")
        m[f"coarse{lvl}.lstm.bias"] = (f"{lstm}/biases", "vec")
        conv_prelu(f"coarse{lvl}.out", f"{rm}/rain{tf}_res2")
    for ours, tf in (("4_2", "4_2"), ("4_1", "4_1"), ("2_1", "2_1")):
        resample(f"coarse_up{ours}", f"model/residual_memory/upRMM{tf}", "tconv2")
    for n, it in enumerate(model.fine):
        f, u4, u2, u1 = f"fine.{n}", f"model/URAB4_{n}", f"model/URAB2_{n}", f"model/URAB_{n}"
        unit(f"{f}.unit4", u4, "down4", n, len(it.unit4.body))
        resample(f"{f}.up4_2", f"{u2}/upURAB4_2_{n}", "tconv2")
        unit(f"{f}.unit2", u2, "down2", n, len(it.unit2.body))
        resample(f"{f}.up4_1", f"{u1}/upURAB4to1_{n}", "tconv2")
        resample(f"{f}.up2_1", f"{u1}/upURAB2to1_{n}", "tconv2")
        unit(f"{f}.unit1", u1, "down", n, len(it.unit1.body))
    for lvl, tf in (("4", "4"), ("2", "2"), ("1", "")):
        conv_prelu(f"recon{lvl}", f"model/rnn_recon{tf}")
    resample("rec_up4_2", "model/up4_2", "tconv2")
    resample("rec_up2_1", "model/up2_1", "tconv2")
    conv_prelu("tail.0", "model/rnn5")
    conv_prelu("tail.1", "model/rnn7", act=False)
    if released_names:
        m = {k: (re.sub("^model/", "generator/", t).replace("URAB", "BCM"), lay) for k, (t, lay) in m.items()}
    return m


def config_from_names(variables: Mapping, released: bool) -> dict:
    """Builder arguments implied by the variables present (blocks, RCABs per unit, widths)."""
    unit, root = ("BCM", "generator") if released else ("URAB", "model")
    blocks = {int(mt.group(1)) for n in variables if (mt := re.match(rf"{root}/{unit}4_(\d+)/", n))}
    kw: dict = {"blocks": len(blocks)} if blocks else {}
    rcabs = [len({mt.group(1) for n in variables if (mt := re.match(rf"{root}/{unit}{lvl}_0/group_1_RCAB(\d+)/", n))})
             for lvl in ("4", "2", "")]
    if all(rcabs):
        kw["rcabs"] = tuple(rcabs)
    lstm = [variables.get(f"{root}/residual_memory/lstm_group{lvl}/convLSTM/LSTM_conv/biases")
            for lvl in ("4", "2", "")]
    if all(b is not None and b.ndim == 1 for b in lstm):
        kw["lstm_hidden"] = tuple(int(b.shape[0]) // 4 for b in lstm)
    head = variables.get(f"{root}/rnn1/weight")
    if head is not None and head.ndim == 4:
        kw["channels"] = int(head.shape[2])
    return kw
