"""Convolutional building blocks of MSGNN (Wang, Wang, Yu, Mu, "Explore Internal and External
Similarity for Single Image Deraining with Graph Neural Networks", IJCAI 2024).

Layer sizes are the facts of the official code (supersupercong/MSGNN, ``model.py``): 32 channels,
LeakyReLU(0.2), CTResBlock = channel attention on the input of a conv-LReLU-conv residual branch
whose skip uses the *un-gated* input. The channel attentions SE and ECA exist only for the
paper's ablation (Table 2); the official code never wires SE, and ECA not at all.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .dense import DenseGrads, dense_op


def conv(cin: int, cout: int, k: int, act: bool) -> nn.Sequential | nn.Conv2d:
    """Same-padded conv with bias, optionally followed by LeakyReLU(0.2) (the paper's activation)."""
    c = nn.Conv2d(cin, cout, k, padding=k // 2)
    # in place: the conv output is fresh, and LeakyReLU's backward can use its own result
    return nn.Sequential(c, nn.LeakyReLU(0.2, inplace=True)) if act else c


class GCT(nn.Module):
    """Gated Channel Transformation (Yang et al., CVPR 2020), 'l2' mode as in the official code.

    s_c = alpha_c * sqrt(sum_hw x_c^2 + eps)      (spatial *sum*, not mean)
    n_c = gamma_c / sqrt(mean_c' s_c'^2 + eps)
    y   = x * (1 + tanh(s_c * n_c + beta_c))
    gamma = beta = 0 at init, so the gate starts as the identity.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a hand-written backward of the image-sized part (fewer passes than autograd's) was tried and
        # measured: no gain on a 2-core CPU step (docs/operations.md), so autograd does it
        return x * _gate(x.pow(2).sum((2, 3), keepdim=True), self.alpha, self.gamma, self.beta, self.eps)


def _gate(sq: torch.Tensor, alpha: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
          eps: float) -> torch.Tensor:
    """1 + tanh(s n + beta) from the per-channel sums of squares ``sq`` [B,C,1,1] (GCT's formula)."""
    s = (sq + eps).sqrt() * alpha
    n = gamma / (s.pow(2).mean(1, keepdim=True) + eps).sqrt()
    return 1.0 + torch.tanh(s * n + beta)


class SE(nn.Module):
    """Squeeze-and-excitation (Hu et al., CVPR 2018) for the Table 2 ablation (M4).

    The MSGNN sources give no reduction ratio; 16 is the SE paper's default.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean((2, 3), keepdim=True))


class ECA(nn.Module):
    """Efficient channel attention (Wang et al., CVPR 2020) for the Table 2 ablation (M3).

    Kernel 5 and no bias, as in the unused ``eca_layer_avg`` of the official code.
    """

    def __init__(self, k: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean((2, 3))  # b, c
        y = torch.sigmoid(self.conv(y.unsqueeze(1))).squeeze(1)
        return x * y[:, :, None, None]


CHANNEL_ATTENTIONS = ("ct", "se", "eca", "none")


def channel_attention(kind: str, channels: int) -> nn.Module:
    if kind == "ct":
        return GCT(channels)
    if kind == "se":
        return SE(channels)
    if kind == "eca":
        return ECA()
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown channel_attention {kind!r}; valid: {', '.join(CHANNEL_ATTENTIONS)}")


class ResBlock(nn.Module):
    """x + Conv3x3(LReLU(Conv3x3(att(x)))): a CTResBlock when att is GCT, the plain block of the stems
    when att is the identity. The skip carries the un-gated x (official ``Residual_Block``)."""

    def __init__(self, channels: int, attention: str = "none") -> None:
        super().__init__()
        self.att = channel_attention(attention, channels)
        self.body = nn.Sequential(conv(channels, channels, 3, act=True), conv(channels, channels, 3, act=False))

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        h = self.body[0](self.att(x))  # written out so the gated copy is freed before the second conv
        r = self.body[1](h)
        del h
        return x + r if out is None else torch.add(x, r, out=out)


def conv1x1_lrelu(layer: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``layer`` (Conv1x1 + in-place LReLU) applied as one GEMM on the NCHW tensor ``x``.

    Used without autograd on channel slices of the dense buffer: the matmul reads the strided
    slice as it is, where a convolution would first copy or reorder all its input channels.
    """
    conv_, act = layer[0], layer[1]
    b, c, h, w = x.shape
    weight = conv_.weight.view(1, conv_.out_channels, c).expand(b, -1, -1)
    # bias-add fused into the GEMM; (b, out, c) @ (b, c, h*w) writes NCHW directly, no transpose
    y = torch.baddbmm(conv_.bias.view(1, -1, 1).expand(b, -1, h * w), weight, x.flatten(2))
    return act(y.view(b, -1, h, w))


class DenseChain(nn.Module):
    """M residual blocks with dense 1x1 connections.

    Block j sees ``cur`` (plus the incoming fusion map, if any); after it, ``cur`` becomes
    LReLU(Conv1x1(concat(input, t_0..t_j))). Used twice in the official code:

    * as a sub-network (``DenseConnection``): returns (t_{M-1}, fus), the output of the *last block*
      and the fusion connection LReLU(Conv1x1(concat(t_0..t_{M-1}))). The last dense 1x1 is built but
      its output is never read, so with ``official_unused`` it is built (official parameter count) and
      simply not run; the same holds for the last sub-network's fusion conv (``compute_fusion``).
    * as a value stem (``Dense(4)``, plain blocks, no fusion): returns the last dense 1x1 output.
    """

    fused_grads = True  # dense.py's per-feature gradient sums; False = plain autograd (same numbers)

    def __init__(self, channels: int, blocks: int, attention: str = "none", fusion_connection: bool = False,
                 stem: bool = False, official_unused: bool = True) -> None:
        super().__init__()
        self.stem = stem
        self.units = nn.ModuleList(ResBlock(channels, attention) for _ in range(blocks))
        # a sub-network never reads the last dense 1x1; a stem returns it
        n_dense = blocks if (stem or official_unused) else blocks - 1
        self.dense = nn.ModuleList(conv((j + 2) * channels, channels, 1, act=True) for j in range(n_dense))
        self.fusion = conv(blocks * channels, channels, 1, act=True) if fusion_connection else None

    def forward(self, x: torch.Tensor, fus_in: torch.Tensor | None = None,
                compute_fusion: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not torch.is_grad_enabled():
            return self._forward_buffered(x, fus_in, compute_fusion)
        feats = [x]
        cur = x
        last = len(self.units) - 1
        state = DenseGrads() if self.fused_grads else None
        if state is not None:
            state.write(0, x, last + 2)
        for j, unit in enumerate(self.units):
            t = unit(cur if fus_in is None else cur + fus_in)
            feats.append(t)
            if state is not None:
                state.write(j + 1, t, last + 2)
            if j < last or self.stem:
                cur = self._dense(state, self.dense[j], list(range(j + 2)), feats)
        if self.stem:
            return cur, None
        fus = None
        if self.fusion is not None and compute_fusion:
            fus = self._dense(state, self.fusion, list(range(1, last + 2)), feats[1:])
        return feats[-1], fus

    @staticmethod
    def _dense(state: DenseGrads | None, layer: nn.Sequential, ids: list[int],
               tensors: list[torch.Tensor]) -> torch.Tensor:
        if state is None:  # plain autograd (reference for the tests)
            return layer(torch.cat(tensors, 1))
        return dense_op(state, layer, ids, tensors)

    def _forward_buffered(self, x: torch.Tensor, fus_in: torch.Tensor | None,
                          compute_fusion: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Inference without autograd: block outputs are written once into one preallocated tensor and
        every dense 1x1 reads a channel prefix of it, instead of re-concatenating a growing list
        (same arithmetic; for a single NCHW image the prefixes are contiguous, so nothing is copied)."""
        c = x.shape[1]
        n = len(self.units)
        buf = x.new_empty(x.shape[0], (n + 1) * c, *x.shape[2:]).contiguous()
        buf[:, :c] = x
        cur = x
        for j, unit in enumerate(self.units):
            # cur is our own dense output after the first block, so the fusion map can be added in place
            inp = cur if fus_in is None else (cur + fus_in if j == 0 else cur.add_(fus_in))
            slot = buf[:, (j + 1) * c:(j + 2) * c]
            unit(inp, out=slot)
            del inp
            if j < n - 1 or self.stem:
                cur = conv1x1_lrelu(self.dense[j], buf[:, :(j + 2) * c])
        if self.stem:
            return cur, None
        fus = conv1x1_lrelu(self.fusion, buf[:, c:]) if (self.fusion is not None and compute_fusion) else None
        return slot.clone(), fus  # a copy, so the buffer is freed when this returns


class ValueStem(nn.Module):
    """Conv3x3(3->C)+LReLU, then Dense(4): the trainable features whose patches the GCN aggregates."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.head = conv(3, channels, 3, act=True)
        self.chain = DenseChain(channels, 4, stem=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.chain(self.head(x))[0]
