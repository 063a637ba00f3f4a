"""DualGCN: "Rain Streak Removal via Dual Graph Convolutional Network",
X. Fu, Q. Qi, Z.-J. Zha, Y. Zhu, X. Ding, AAAI 2021.

Re-implemented in PyTorch from the facts of the official TensorFlow 1.x test code
(github.com/xueyangfu/xueyangfu.github.io, ``paper/2021/AAAI/code/model.py``, commit 99fe217).
72 channels, 11 basic units (5 encoder, 1 middle, 5 decoder) = 2,731,071 parameters, the same
total as the 326 variables listed in the shipped checkpoint index ``model-Rain200H.index``.
Input and output are RGB in [0, 1]; the network predicts a residual added to the input.

Conventions matched so that the official TF checkpoints can be converted
(``from_official`` reads a checkpoint / .npz / mapping, ``load_tf_variables`` converts):

* Variable names: ``Generator/<scope>/conv2d[_k]/{kernel,bias}``. Scopes are ``basic``,
  ``encoder0..4``, ``middle``, ``decoder4..0`` (run in that order), ``reconstruct``. Inside a
  scope ``tf.layers`` numbers convolutions in creation order (``conv2d``, ``conv2d_1``, ...).
  Our sub-modules are registered in exactly that order, so the k-th ``nn.Conv2d`` met by
  ``module.modules()`` inside a scope is TF's ``conv2d_k``. Per unit (15 convs; the decoder
  scopes start with their 144->72 merge conv, so there unit convs are shifted by one):
  spatial GCN theta, nu, xi, out | dilated convs d1, d1, d3, d3 | 1x1 fusion (360->72) |
  channel GCN zeta, kappa, mix over the 36 axis, mix over the 18 axis, out.
* Kernels: TF HWIO -> PyTorch OIHW, i.e. ``w.permute(3, 2, 0, 1)``; every conv has a bias.
* Concatenations keep TF's channel order: DCM fusion [s, c1, c2, c3, c4], decoder merge
  [previous decoder, encoder skip], reconstruction [decoder0, F1].
* 'SAME' padding: every conv has stride 1 and odd kernels, so TF pads dilation*(k-1)/2 on each
  side; ``padding=dilation`` in PyTorch is identical (no asymmetric padding occurs).
* Softmax axes: TF reshapes the NHWC map to [B, HW*C] and takes one softmax over all entries of
  a sample (spatial GCN: nu and xi; channel GCN: the 18x36 relation matrix). A softmax over a
  whole set does not depend on its flattening order, so our NCHW ``flatten(1)`` gives the same
  numbers. The matrix products are written for NCHW (e.g. F_s = nu xi^T instead of nu^T xi).
* Initialisation: ``init="tf"`` gives ``tf.layers.conv2d``'s defaults (Glorot-uniform kernels,
  zero biases). The default is ``init="torch"`` (PyTorch's own), a deliberate deviation: with
  the Glorot start the initial residual already has std 0.5-0.8 and, under the suite's shared
  -SSIM / Adam 5e-4 training, the output grew to std >> 1 within a few steps, where SSIM has
  no gradient left (measured on rain-synth 32x32, batch 2; also at lr 1e-4 for one of two
  seeds), whereas the PyTorch start trains.

Training: the official release has no training code and the AAAI paper text was not
reachable from this project (the repository's ``paper.pdf`` is missing from the snapshot, and
the docs/pages search corpora hold only summaries of it). The suite trains it with the shared
settings; its "own" recipe (L1, 100x100 crops, batch 10, Adam 1e-4, 300 epochs) comes from the
third-party re-implementation biubiubiiu/derain-toolbox ``configs/dual_gcn/dual_gcn_c72n11.py``
and is unverified against the paper. No ``own_loss`` is needed: L1 is a shared pixel loss.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn as nn

from .common import check_names, check_rgb_batch, read_tf_variables, register_model, register_official


def _conv(cin: int, cout: int, k: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=dilation * (k - 1) // 2, dilation=dilation)


class SpatialGCN(nn.Module):
    """Global spatial reasoning: theta (HW x C/2) times the C/2 x C/2 graph nu^T xi."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.theta, self.nu, self.xi = _conv(channels, half), _conv(channels, half), _conv(channels, half)
        self.out = _conv(half, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        theta = self.theta(x).flatten(2)  # [B, C', HW]
        nu = self.nu(x).flatten(1).softmax(-1).view_as(theta)  # one softmax per sample over HW*C'
        xi = self.xi(x).flatten(1).softmax(-1).view_as(theta)
        graph = nu @ xi.transpose(1, 2)  # [B, C', C'] = (nu^T xi) of the NHWC formulation
        agg = graph.transpose(1, 2) @ theta  # (theta F)^T, [B, C', HW]
        return self.out(agg.view(b, -1, h, w)) + x


class ChannelGCN(nn.Module):
    """Global channel reasoning on an (C/4 x C/2) relation matrix between projected channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        c, n = channels // 2, channels // 4
        self.zeta, self.kappa = _conv(channels, c), _conv(channels, n)
        self.mix_c = _conv(c, c)  # 1x1 conv whose channel axis is the C/2 axis of the relation
        self.mix_n = _conv(n, n)  # 1x1 conv whose channel axis is the C/4 axis
        self.out = _conv(n, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        zeta = self.zeta(x).flatten(2)  # [B, C, HW]
        kappa = self.kappa(x).flatten(2)  # [B, N, HW]
        rel = (kappa @ zeta.transpose(1, 2)).flatten(1).softmax(-1)  # [B, N*C], one softmax per sample
        rel = rel.view(b, kappa.shape[1], zeta.shape[1])  # [B, N, C]
        # TF treats the [N, C] matrix as a 1 x N image with C channels ...
        a = rel.transpose(1, 2).unsqueeze(2)  # [B, C, 1, N]
        a = torch.relu(a + self.mix_c(a))
        # ... then transposes it to a C x 1 image with N channels.
        a = self.mix_n(a.permute(0, 3, 1, 2)).squeeze(-1)  # [B, N, C]
        agg = a @ zeta  # [B, N, HW] = (zeta A')^T
        return self.out(agg.view(b, -1, h, w)) + x


class BasicUnit(nn.Module):
    """Spatial GCN -> multi-scale dilated convs (d=1 and d=3 pairs) -> channel GCN, plus a skip."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.sgcn = SpatialGCN(channels)
        self.d1a, self.d1b = _conv(channels, channels, 3, 1), _conv(channels, channels, 3, 1)
        self.d3a, self.d3b = _conv(channels, channels, 3, 3), _conv(channels, channels, 3, 3)
        self.fuse = _conv(5 * channels, channels)
        self.cgcn = ChannelGCN(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.sgcn(x)
        c1 = torch.relu(self.d1a(s))
        c2 = torch.relu(self.d1b(c1))
        c3 = torch.relu(self.d3a(s))
        c4 = torch.relu(self.d3b(c3))
        f = torch.relu(self.fuse(torch.cat([s, c1, c2, c3, c4], 1)))
        return self.cgcn(f) + x


class DecoderStage(nn.Module):
    """1x1 merge of [decoder input, encoder skip] (no activation), then a basic unit."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.merge = _conv(2 * channels, channels)
        self.unit = BasicUnit(channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.unit(self.merge(torch.cat([x, skip], 1)))


class DualGCN(nn.Module):
    """Symmetric encoder-decoder of basic units with skip connections; output = input + residual."""

    def __init__(self, channels: int = 72, depth: int = 5, init: str = "torch") -> None:
        super().__init__()
        if init not in ("tf", "torch"):
            raise ValueError(f"init must be 'tf' or 'torch', got {init!r}")
        self.depth = depth
        self.basic = nn.ModuleDict({"f0": _conv(3, channels, 3), "f1": _conv(channels, channels, 3)})
        self.encoders = nn.ModuleList(BasicUnit(channels) for _ in range(depth))  # encoders[k] = 'encoder{k}'
        self.middle = BasicUnit(channels)
        self.decoders = nn.ModuleList(DecoderStage(channels) for _ in range(depth))  # decoders[k] = 'decoder{k}'
        self.reconstruct = nn.ModuleDict({"fuse": _conv(2 * channels, channels, 3), "out": _conv(channels, 3, 3)})
        if init == "tf":
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.xavier_uniform_(m.weight)  # same fan definition as TF's glorot_uniform
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_rgb_batch(x, "DualGCN")
        f0 = self.basic["f0"](x)
        f1 = self.basic["f1"](f0)
        skips, y = [], f1
        for unit in self.encoders:
            y = unit(y)
            skips.append(y)
        y = self.middle(y)
        for k in reversed(range(self.depth)):
            y = self.decoders[k](y, skips[k])
        y = torch.relu(self.reconstruct["fuse"](torch.cat([y, f1], 1))) + f0
        return x + self.reconstruct["out"](y)

    def _tf_scopes(self) -> list[tuple[str, str, nn.Module]]:
        scopes = [("basic", "basic", self.basic)]
        scopes += [(f"encoder{k}", f"encoders.{k}", m) for k, m in enumerate(self.encoders)]
        scopes.append(("middle", "middle", self.middle))
        scopes += [(f"decoder{k}", f"decoders.{k}", self.decoders[k]) for k in reversed(range(self.depth))]
        scopes.append(("reconstruct", "reconstruct", self.reconstruct))
        return scopes

    def tf_variable_names(self) -> dict[str, str]:
        """Map every PyTorch parameter name to the official TF variable name."""
        names: dict[str, str] = {}
        for scope, prefix, module in self._tf_scopes():
            convs = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Conv2d)]
            for k, (sub, _) in enumerate(convs):
                tf_layer = f"Generator/{scope}/conv2d" + (f"_{k}" if k else "")
                names[f"{prefix}.{sub}.weight"] = f"{tf_layer}/kernel"
                names[f"{prefix}.{sub}.bias"] = f"{tf_layer}/bias"
        return names

    @torch.no_grad()
    def load_tf_variables(self, variables: Mapping[str, np.ndarray], label: str = "the given variables") -> "DualGCN":
        """Copy TF variables (name -> array, kernels HWIO) into this model; strict on names and shapes.

        Missing or unexpected variables and wrong shapes give one ValueError naming ``label``.
        """
        params = dict(self.named_parameters())
        mapping = self.tf_variable_names()
        expected = {tf: (s[2], s[3], s[1], s[0]) if len(s) == 4 else tuple(s)
                    for ours, tf in mapping.items() for s in [tuple(params[ours].shape)]}
        check_names({k: np.asarray(v) for k, v in variables.items()}, expected, label,
                    f"DualGCN (channels={self.basic['f0'].out_channels}, depth={self.depth})")
        for ours, theirs in mapping.items():
            value = torch.as_tensor(np.asarray(variables[theirs]), dtype=params[ours].dtype)
            params[ours].copy_(value.permute(3, 2, 0, 1) if value.dim() == 4 else value)  # HWIO -> OIHW
        return self


@register_model("dualgcn")
def dualgcn(channels: int = 72, depth: int = 5, init: str = "torch") -> DualGCN:
    """Official configuration: 72 channels, 5 encoder + 1 middle + 5 decoder units (2,731,071 params)."""
    return DualGCN(channels=channels, depth=depth, init=init)


@register_official("dualgcn")
def from_official(source: str | Path | Mapping, **kwargs) -> DualGCN:
    """DualGCN holding official TF weights (e.g. ``TrainedModel/model-Rain200H``; or an .npz / mapping).

    Width and depth are read from the variables present (official: 72 channels, 5 encoders);
    ``kwargs`` override them.
    """
    variables, label = read_tf_variables(source)
    kw: dict = {}
    head = variables.get("Generator/basic/conv2d/kernel")
    if head is not None and np.ndim(head) == 4:
        kw["channels"] = int(np.shape(head)[3])
    encoders = {mt.group(1) for n in variables if (mt := re.match(r"Generator/encoder(\d+)/", n))}
    if encoders:
        kw["depth"] = len(encoders)
    with torch.device("meta"):  # every parameter is overwritten: skip the random init
        model = dualgcn(**{**kw, **kwargs})
    return model.to_empty(device="cpu").load_tf_variables(variables, label)
