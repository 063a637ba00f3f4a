"""MSGNN: multi-scale graph network with exemplars.

Wang, Wang, Yu, Mu, "Explore Internal and External Similarity for Single Image Deraining with Graph
Neural Networks", IJCAI 2024. Re-implemented from the paper and the facts of the official code
(supersupercong/MSGNN @ 98e6d2f, ``model.py`` class ``ODE_DerainNet``, ``settings.py`` defaults).

Data flow (B^ = O - R, Eq. 1-2):
  four graphs R(O,O), R(O,O/2), R(O,O/4), R(O,E) and their aggregated 32-channel maps, computed ONCE
  per forward pass (the official code recomputes the same maps after every sub-network: the current
  body features only give the aggregation its shape);
  head Conv3x3(3->32); N sub-networks of M CTResBlocks with dense 1x1 connections; after every
  sub-network but the last, fuse(concat(body, graph maps)) becomes the next input and the fusion
  connection (1x1 over all block outputs) is added to the input of every block of the next one;
  output head Conv3x3+LReLU, Conv1x1(->3) on the last body gives the rain layer R.

Parameter counts equal the official ones (exemplar on, N=4: 2,061,579; exemplar off with the
official 5x5 fusion, N=4: 2,459,689 = the paper's "2.46M"; N=2: 1,547,625 = "1.55M") because the
modules the official model builds but never runs are built too (``official_unused``); they get no gradient.
Colour: the official code reads BGR; no weights were released, so RGB is used as is.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark.core.registry import register_model

from .blocks import CHANNEL_ATTENTIONS, DenseChain, ValueStem, conv
from .graph import GCNBlock, KNNGraph
from .knn import WINDOW_ALIGNS

_SCALES = {1: 1, 0.5: 2, 0.25: 4}  # scale of a database image -> downsampling factor


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """cv2.pyrDown: 5x5 binomial blur with reflect-101 borders, keep even rows/cols -> ceil(H/2) x ceil(W/2).

    The official loader builds O/2 and O/4 this way (on float images). Sides below 3 px cannot be
    reflected by 2 px, so they are edge-replicated instead.
    """
    g = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device) / 16
    kernel = (g[:, None] * g[None, :]).expand(x.shape[1], 1, 5, 5)
    mode = "reflect" if min(x.shape[-2:]) >= 3 else "replicate"
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode=mode), kernel, stride=2, groups=x.shape[1])


class MSGNN(nn.Module):
    """MSGNN; forward(x, exemplar) with x [B,3,H,W] RGB in [0,1] and the exemplar [B or 1,3,h,w].

    ``needs_exemplar`` (set per instance: False without the exemplar branch or the graph) tells the
    engine to pass the exemplar, a rainy image of any size from another file; its ground truth is never used.
    """

    needs_exemplar: bool = True
    cpu_channels_last: bool = True  # layout of CPU training (see _layout); False = the NCHW path GPUs take

    def __init__(self, n_subnets: int = 4, blocks: int = 12, channels: int = 32, exemplar: bool = True,
                 fusion: str = "1x1", channel_attention: str = "ct", fusion_connection: bool = True,
                 graph: bool = True, k: int = 5, patch: int = 3, stride: int = 3, window: int = 30,
                 scales: Sequence[float] = (1, 0.5, 0.25), window_align: str = "centered",
                 shared_embedding: bool = True, train_embedding: bool = True, official_unused: bool = True,
                 knn_budget: int | None = None) -> None:
        super().__init__()
        self.graph = graph
        self.needs_exemplar = bool(graph and exemplar)  # tells the engine to pass an exemplar
        self.head = conv(3, channels, 3, act=False)
        # the last sub-network's fusion output has no next sub-network to go to
        self.subnets = nn.ModuleList(
            DenseChain(channels, blocks, channel_attention,
                       fusion_connection and (official_unused or i < n_subnets - 1), official_unused=official_unused)
            for i in range(n_subnets))
        self.branches = [f"scale{_SCALES[s]}" for s in sorted(scales, reverse=True)] if graph else []
        if graph and exemplar:
            self.branches.append("exemplar")
        if graph:
            factor = {"scale1": 1, "scale2": 2, "scale4": 4, "exemplar": 1}
            common = dict(k=k, patch=patch, stride=stride)
            self.stems = nn.ModuleDict({b: ValueStem(channels) for b in self.branches})
            if not exemplar and official_unused:  # the official code builds ``convert_guide`` whenever graph=True
                self.stems["exemplar"] = ValueStem(channels)
            self.graphs = nn.ModuleDict({
                b: KNNGraph(channels, window=window, scale=factor[b], window_align=window_align,
                            shared_embedding=shared_embedding, train_embedding=train_embedding,
                            knn_budget=knn_budget, official_unused=official_unused, **common) for b in self.branches})
            self.gcns = nn.ModuleDict({b: GCNBlock(channels, scale=factor[b], official_unused=official_unused,
                                                   budget=knn_budget, **common) for b in self.branches})
            kf = 1 if fusion == "1x1" else 5
            n_in = channels * (1 + len(self.branches))
            # the fuse after the last sub-network is built by the official code, its output discarded
            n_fuse = n_subnets if official_unused else n_subnets - 1
            self.fuse = nn.ModuleList(
                nn.Sequential(conv(n_in, channels, kf, act=True), conv(channels, channels, kf, act=False))
                for _ in range(n_fuse))
        self.tail = nn.Sequential(conv(channels, channels, 3, act=True), conv(channels, 3, 1, act=False))

    def _check(self, x: torch.Tensor, exemplar: torch.Tensor | None) -> torch.Tensor | None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"MSGNN expects a [B,3,H,W] RGB tensor, got {shape}")
        if not self.needs_exemplar:
            return None
        if exemplar is None:
            raise ValueError("MSGNN with exemplar=True needs forward(x, exemplar=[B or 1,3,h,w]); "
                             "build it with exemplar=False for the exemplar-free variant")
        if exemplar.dim() == 3:
            exemplar = exemplar[None]
        if exemplar.dim() != 4 or exemplar.shape[1] != 3 or exemplar.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"exemplar must be [B,3,h,w] or [1,3,h,w] for input {tuple(x.shape)}, "
                             f"got {tuple(exemplar.shape)}")
        return exemplar.to(device=x.device, dtype=x.dtype).expand(x.shape[0], -1, -1, -1)

    def graph_maps(self, x: torch.Tensor, exemplar: torch.Tensor | None) -> list[torch.Tensor]:
        """The aggregated 32-channel map of every graph, at the full resolution of x."""
        db = {"scale1": x, "exemplar": exemplar}
        if "scale2" in self.branches or "scale4" in self.branches:
            db["scale2"] = pyr_down(x)
            db["scale4"] = pyr_down(db["scale2"])
        maps = []
        for b in self.branches:
            edges = self.graphs[b](db[b], x)
            maps.append(self.gcns[b](self.stems[b](db[b]), edges).contiguous(memory_format=_layout(x)))
        return maps

    def forward(self, x: torch.Tensor, exemplar: torch.Tensor | None = None) -> torch.Tensor:
        exemplar = self._check(x, exemplar)
        xin = x.contiguous(memory_format=_layout(x))
        if exemplar is not None:
            exemplar = exemplar.contiguous(memory_format=_layout(x))
        maps = self.graph_maps(xin, exemplar) if self.graph else []
        feat, fus = self.head(xin), None
        last = len(self.subnets) - 1
        graph_terms = None
        if self.graph and maps and not torch.is_grad_enabled():
            graph_terms = self._graph_terms(maps)
            del maps[:]
        for i, subnet in enumerate(self.subnets):
            body, fus = subnet(feat, fus, compute_fusion=i < last)
            if i == last:
                break
            if not self.graph:
                feat = body
            elif graph_terms is None:
                feat = self.fuse[i](torch.cat([body, *maps], 1))
            else:
                first, act, second = self.fuse[i][0][0], self.fuse[i][0][1], self.fuse[i][1]
                feat = second(act(first._conv_forward(body, first.weight[:, :body.shape[1]], None) + graph_terms[i]))
        return x - self.tail(body)

    def _graph_terms(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """Inference: the graph maps' share of every fuse's first conv (which is linear in its input
        channels), computed once. Only these 32-channel maps are then kept across the sub-networks,
        not the four graph maps plus a concatenation of them with each body."""
        g = torch.cat(maps, 1)
        c = self.head.out_channels
        firsts = [f[0][0] for f in self.fuse[:len(self.subnets) - 1]]
        return [conv_._conv_forward(g, conv_.weight[:, c:], conv_.bias) for conv_ in firsts]


def _layout(x: torch.Tensor) -> torch.memory_format:
    """channels_last for CPU training: oneDNN's convolutions and their backward run markedly faster in
    NHWC there. Inference stays NCHW, where the dense-connection buffer's channel prefixes are contiguous."""
    if x.device.type == "cpu" and torch.is_grad_enabled() and MSGNN.cpu_channels_last:
        return torch.channels_last
    return torch.contiguous_format


FUSIONS = ("1x1", "5x5", "official")


@register_model("msgnn")
def msgnn(n_subnets: int = 4, blocks: int = 12, exemplar: bool = True, fusion: str = "1x1",
          channel_attention: str = "ct", fusion_connection: bool = True, graph: bool = True, k: int = 5,
          patch: int = 3, stride: int = 3, window: int = 30, scales: Sequence[float] = (1, 0.5, 0.25),
          window_align: str = "centered", shared_embedding: bool = True, train_embedding: bool = True,
          official_unused: bool = True, channels: int = 32, knn_budget: int | None = None) -> MSGNN:
    """MSGNN with the paper's method (exemplar branch on) and the released code's layer sizes.

    ``fusion`` is the form of the two fuse convs, independent of ``exemplar`` so that an exemplar
    ablation changes one thing: "1x1" (default; the released default model, exemplar on: 2,061,579
    parameters; exemplar off: 1,968,169), "5x5", or "official": the released code's pairing, 1x1
    with the exemplar and 5x5 without it (exemplar off: 2,459,689 = the paper's "2.46M").
    ``window_align``/``shared_embedding``/``train_embedding`` = "official"/False/False reproduce
    the released code's graph construction (see the Deviations table in the README).
    """
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; valid: {', '.join(FUSIONS)}")
    if fusion == "official":  # the released code ties the fusion form to ``guide`` (the exemplar)
        fusion = "1x1" if exemplar else "5x5"
    if channel_attention not in CHANNEL_ATTENTIONS:
        raise ValueError(f"unknown channel_attention {channel_attention!r}; valid: {', '.join(CHANNEL_ATTENTIONS)}")
    if window_align not in WINDOW_ALIGNS:
        raise ValueError(f"unknown window_align {window_align!r}; valid: {', '.join(WINDOW_ALIGNS)}")
    bad = [s for s in scales if s not in _SCALES]
    if bad or len(set(scales)) != len(scales):
        raise ValueError(f"scales must be distinct values from (1, 0.5, 0.25), got {list(scales)}")
    if graph and not scales and not exemplar:
        raise ValueError("graph=True needs at least one scale or the exemplar")
    if n_subnets < 1 or blocks < 1:
        raise ValueError(f"n_subnets and blocks must be >= 1, got {n_subnets}, {blocks}")
    if not (1 <= stride <= patch) or k < 1 or window < 1:
        raise ValueError(f"need 1 <= stride <= patch, k >= 1 and window >= 1; got stride={stride}, patch={patch}, "
                         f"k={k}, window={window}")
    return MSGNN(n_subnets, blocks, channels, exemplar, fusion, channel_attention, fusion_connection, graph, k, patch,
                 stride, window, tuple(scales), window_align, shared_embedding, train_embedding, official_unused,
                 knn_budget)
