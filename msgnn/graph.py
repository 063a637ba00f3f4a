"""The graph model of MSGNN (Wang et al., "Explore Internal and External Similarity for Single Image
Deraining with Graph Neural Networks", IJCAI 2024): nearest-neighbour search (``KNNGraph``) and
attentional aggregation (``GCNBlock``), Sec. 3.2 and Fig. 4 of the paper.

Facts from the official code (``graph/submodules.py``): each graph owns two 3-layer embedding CNNs
(Conv3x3+LReLU x3, one for the database image, one for the query image); the attention input of
neighbour r is the per-channel L1 distance between the query's and the neighbour's embedding
patches (32 numbers, constant over the patch); the attention CNN ``weightnet_hr`` is
Conv1x1 -> residual(Conv1x1, LReLU, Conv1x1) -> Conv1x1(->1), shared by the k neighbours, with a
softmax over k; the aggregated values are patches of a separate trainable stem, pasted at the
query's full resolution. ``knn_downsample`` and ``weightnet_lr`` are built but never run.

Deviations (switches): ``shared_embedding`` (paper: "a three-layer CNN" embeds both images, so the
query patch is its own closest neighbour; official: two different CNNs), ``train_embedding``
(paper: end-to-end, the difference map carries gradient into the CNN; official: detached, CNN
frozen at its random init) and ``window_align`` (see ``knn.window_starts``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .blocks import conv
from .knn import gather_rows, im2patch, neighbour_l1, patch2im, spread_patches, weighted_gather, windowed_knn


def work_budget(budget: int | None, like: torch.Tensor) -> int:
    """Floats per chunk of the search and the gathers: 64 MB on CPU (cache-friendly), 256 MB on GPU,
    where fewer, larger steps save kernel launches."""
    if budget is not None:
        return budget
    return 1 << 26 if like.is_cuda else 1 << 24


def embedding_cnn(channels: int) -> nn.Sequential:
    """The paper's "three-layer CNN": Conv3x3+LReLU three times (all three activated, as in the code)."""
    return nn.Sequential(conv(3, channels, 3, act=True), conv(channels, channels, 3, act=True),
                         conv(channels, channels, 3, act=True))


@dataclass
class Edges:
    """A k-nearest-neighbour graph from every query patch of O to patches of a database image."""

    idx: torch.Tensor  # b, m, k flat database patch indices, nearest first
    diff: torch.Tensor  # b, m, k, C per-channel L1 embedding distances (attention input)
    q_grid: tuple[int, int]
    q_pads: tuple[int, ...]
    q_size: tuple[int, int]


class KNNGraph(nn.Module):
    """Builds R(O, D)'s edges: embed both images, cut l x l patches at stride s, windowed hard kNN."""

    def __init__(self, channels: int = 32, k: int = 5, patch: int = 3, stride: int = 3, window: int = 30,
                 scale: int = 1, window_align: str = "centered", shared_embedding: bool = True,
                 train_embedding: bool = True, knn_budget: int | None = None, official_unused: bool = True) -> None:
        super().__init__()
        if not shared_embedding or official_unused:  # with one shared CNN the official second one never runs
            self.embed_db = embedding_cnn(channels)
        self.embed_query = embedding_cnn(channels)
        self.k, self.patch, self.stride, self.window, self.scale = k, patch, stride, window, scale
        self.window_align, self.shared, self.train_embedding = window_align, shared_embedding, train_embedding
        self.budget = knn_budget

    def _embed(self, db_img: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.embed_query(query)
        if self.shared:  # one CNN for both; a database that is O itself reuses the query embedding
            return (q if db_img is query else self.embed_query(db_img)), q
        return self.embed_db(db_img), q

    def forward(self, db_img: torch.Tensor, query: torch.Tensor) -> Edges:
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.train_embedding):
            de, qe = self._embed(db_img, query)
            c = qe.shape[1]
            dp, d_grid, _ = im2patch(de, self.patch, self.stride)
            qp, q_grid, q_pads = im2patch(qe, self.patch, self.stride)
            budget = work_budget(self.budget, qe)
            idx, _ = windowed_knn(qp.detach(), dp.detach(), q_grid, d_grid, self.k, self.window, self.window_align,
                                  self.scale, budget=budget)
            diff = neighbour_l1(qp, dp, idx, c, budget=budget)
        return Edges(idx, diff, q_grid, q_pads, tuple(query.shape[-2:]))


class AttentionCNN(nn.Sequential):
    """Edge-weight CNN of Eq. (6): Conv1x1, x + Conv1x1(LReLU(Conv1x1 x)), Conv1x1 -> one logit."""

    def __init__(self, channels: int) -> None:
        super().__init__(conv(channels, channels, 1, act=False), _Res1x1(channels), conv(channels, 1, 1, act=False))


class _Res1x1(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv(channels, channels, 1, act=True), conv(channels, channels, 1, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class GCNBlock(nn.Module):
    """Attentional aggregation (Eqs. 4-6): softmax over the k neighbours of the attention logits,
    weighted sum of the neighbours' value patches, patch2im to the query's full resolution."""

    def __init__(self, channels: int = 32, k: int = 5, patch: int = 3, stride: int = 3, scale: int = 1,
                 official_unused: bool = True, budget: int | None = None) -> None:
        super().__init__()
        self.weightnet_hr = AttentionCNN(channels)
        if official_unused:  # built by the official code, never run (kept for its parameter count)
            self.knn_downsample = nn.Sequential(nn.Conv2d(channels, channels, 5, stride=scale, padding=2),
                                                nn.LeakyReLU(0.2), conv(channels, channels, 3, act=True),
                                                conv(channels, channels, 3, act=False))
            self.weightnet_lr = AttentionCNN(channels)
        self.k, self.patch, self.stride, self.budget = k, patch, stride, budget

    def forward(self, values: torch.Tensor, edges: Edges) -> torch.Tensor:
        b, c = values.shape[:2]
        vp, _, _ = im2patch(values, self.patch, self.stride)  # b, n, C*l*l
        if self.stride == self.patch:
            # patches do not overlap, so the attention input (constant over a patch) and therefore the
            # weights are per patch: weigh patches, then fold; identical to the per-pixel form below
            logits = self.weightnet_hr(edges.diff.permute(0, 3, 1, 2))  # b, 1, m, k
            weight = torch.softmax(logits[:, 0], dim=-1)
            agg = weighted_gather(vp, edges.idx, weight, work_budget(self.budget, vp))
            return patch2im(agg, c, edges.q_grid, edges.q_pads, self.patch, self.stride)
        # overlapping patches (s < l): fold each neighbour's map, then weigh per pixel (official form)
        h, w = edges.q_size
        k = edges.idx.shape[2]

        def fold(per_nb: torch.Tensor) -> torch.Tensor:  # b, m, k, C*l*l -> b, k, C, H, W
            cols = per_nb.permute(0, 2, 1, 3).reshape(b * k, per_nb.shape[1], -1)
            return patch2im(cols, c, edges.q_grid, edges.q_pads, self.patch, self.stride).view(b, k, c, h, w)

        diff_map = fold(spread_patches(edges.diff, self.patch))
        weight = torch.softmax(self.weightnet_hr(diff_map.flatten(0, 1)).view(b, k, 1, h, w), dim=1)
        return (fold(gather_rows(vp, edges.idx)) * weight).sum(1)
