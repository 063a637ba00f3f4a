"""Dense 1x1 connections of MSGNN (Wang et al., IJCAI 2024) for training: no re-concatenation in the
forward pass, one gradient sum per feature in the backward pass.

In a sub-network, block output t_i is read by every later dense 1x1 (Conv1x1 + LReLU over the
concatenation of all earlier features) and by the fusion 1x1. Written plainly, every dense conv
concatenates (and autograd keeps) its whole input, up to 13 x 32 channels, and its backward writes
the gradient of that whole input, which is split and added into each feature's gradient: ~80
full-size copies, writes and adds per sub-network each way. Here the features are written once into
one buffer and each conv reads a channel range of it; each conv only stores its output gradient
dY_k in a shared stack, and the conv that reads a feature *first* in the forward pass (so runs *last*
in the backward pass) computes that feature's whole gradient as one matmul over the stacked dY of
all its readers. Same arithmetic, reordered; ``tests/test_msgnn.py`` checks it against autograd.
"""
from __future__ import annotations

import torch
import torch.nn as nn

_SLOPE = 0.2


def _is_nhwc(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last)


class DenseGrads:
    """One forward pass of one chain: a buffer holding every feature once (their concatenation, so the
    dense convs read channel ranges of it instead of re-concatenating), the ops' inputs and
    weights, and in the backward pass the stack of the ops' output gradients."""

    def __init__(self) -> None:
        self.buffer: torch.Tensor | None = None
        self.c = 0
        self.inputs: list[list[int]] = []  # op k -> feature indices it reads (a consecutive range)
        self.weights: list[torch.Tensor] = []  # op k -> [out, in] weight
        self.first_reader: dict[int, int] = {}  # feature -> op that reads it first (its gradient owner)
        self.stack: torch.Tensor | None = None

    def write(self, i: int, t: torch.Tensor, n_features: int) -> None:
        """Copy feature i into its slot (outside autograd: the ops take the features as inputs too)."""
        if self.buffer is None:
            self.c = t.shape[1]
            fmt = torch.channels_last if _is_nhwc(t) else torch.contiguous_format
            self.buffer = torch.empty((t.shape[0], n_features * self.c, *t.shape[2:]), dtype=t.dtype,
                                      device=t.device, memory_format=fmt)
        with torch.no_grad():
            self.buffer[:, i * self.c:(i + 1) * self.c] = t

    def add_op(self, features: list[int], weight: torch.Tensor) -> int:
        assert features == list(range(features[0], features[-1] + 1)), "ops read consecutive features"
        k = len(self.inputs)
        self.inputs.append(features)
        self.weights.append(weight)
        for i in features:
            self.first_reader.setdefault(i, k)
        return k

    def slot(self, k: int, b: int, o: int, hw: int, like: torch.Tensor) -> torch.Tensor:
        """Op k's block of the gradient stack, [P, O] (NHWC) or [B, O, HW] (NCHW), to be written by op k."""
        if self.stack is None:
            n = len(self.inputs)
            shape = (b * hw, o * n) if _is_nhwc(self.buffer) else (b, o * n, hw)
            self.stack = like.new_empty(shape)
            self.stored: set[int] = set()
        self.stored.add(k)
        return self.stack[:, o * k:o * (k + 1)]

    def feature_grad(self, i: int, c: int, o: int) -> torch.Tensor:
        """sum over the readers k of feature i of dY_k @ W_k[:, slot of i]: one matmul."""
        readers = [k for k, feats in enumerate(self.inputs) if i in feats]
        lo, hi = readers[0], readers[-1]
        assert readers == list(range(lo, hi + 1)), "a feature's readers must be consecutive ops"
        for k in readers:  # an op whose output does not reach the loss never stored a gradient
            if k not in self.stored:
                self.stack[:, o * k:o * (k + 1)] = 0
                self.stored.add(k)
        w = torch.cat([self.weights[k][:, self.inputs[k].index(i) * c:(self.inputs[k].index(i) + 1) * c]
                       for k in readers], 0)  # (O*F, c)
        s = self.stack[:, o * lo:o * (hi + 1)]
        return s @ w if s.dim() == 2 else torch.matmul(w.t(), s)


class _DenseLinear(torch.autograd.Function):
    """LReLU(Conv1x1(concat(features))) whose backward hands feature gradients to ``DenseGrads``."""

    @staticmethod
    def forward(ctx, state: DenseGrads, k: int, weight: torch.Tensor, bias: torch.Tensor,
                *feats: torch.Tensor) -> torch.Tensor:
        ids = state.inputs[k]
        # the concatenation, read in place from the buffer (features are written once, never changed)
        x = state.buffer[:, ids[0] * state.c:(ids[-1] + 1) * state.c]
        b, c, h, w = x.shape
        o = weight.shape[0]
        w2 = weight.view(o, c)
        if _is_nhwc(state.buffer):
            y = torch.empty((b, o, h, w), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
            torch.addmm(bias, x.permute(0, 2, 3, 1).reshape(-1, c), w2.t(), out=y.permute(0, 2, 3, 1).view(-1, o))
        else:
            y = torch.baddbmm(bias.view(1, o, 1).expand(b, o, h * w), w2.expand(b, o, c), x.reshape(b, c, h * w))
            y = y.view(b, o, h, w)
        torch.nn.functional.leaky_relu_(y, _SLOPE)
        # x is a view of the buffer, whose later slots are still to be written: kept as an attribute
        # (not save_for_backward, whose version check would object); its own channels never change
        ctx.state, ctx.k, ctx.x, ctx.feat_c = state, k, x, [f.shape[1] for f in feats]
        ctx.save_for_backward(weight, y)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy: torch.Tensor):
        weight, y = ctx.saved_tensors
        state, k, x = ctx.state, ctx.k, ctx.x
        b, c, h, w = x.shape
        o = weight.shape[0]
        # LReLU's gradient (from its in-place output) written straight into this op's stack block
        d = state.slot(k, b, o, h * w, dy)
        nhwc = _is_nhwc(state.buffer)
        d4 = d.view(b, h, w, o).permute(0, 3, 1, 2) if nhwc else d.view(b, o, h, w)
        torch.ops.aten.leaky_relu_backward.grad_input(dy, y, _SLOPE, True, grad_input=d4)
        if nhwc:
            dw = d.t() @ x.permute(0, 2, 3, 1).reshape(-1, c)
            db = d.sum(0)
        else:
            dw = torch.bmm(d, x.reshape(b, c, h * w).transpose(1, 2)).sum(0)
            db = d.sum((0, 2))
        grads = []
        for i, ci in zip(state.inputs[k], ctx.feat_c):
            if state.first_reader[i] != k:
                grads.append(None)  # its owner (an earlier op) adds this op's share later
                continue
            g = state.feature_grad(i, ci, o)
            grads.append(g.view(b, h, w, ci).permute(0, 3, 1, 2) if g.dim() == 2 else g.view(b, ci, h, w))
        return (None, None, dw.view_as(weight), db, *grads)


def dense_op(state: DenseGrads, layer: nn.Sequential, features: list[int], tensors: list[torch.Tensor]) -> torch.Tensor:
    """Apply ``layer`` (Conv1x1 + LReLU(0.2)) to the concatenation of ``tensors`` (feature ids ``features``)."""
    conv = layer[0]
    k = state.add_op(features, conv.weight.detach().view(conv.out_channels, -1))
    return _DenseLinear.apply(state, k, conv.weight, conv.bias, *tensors)
