"""SPANet: SPatial Attentive Network for single-image deraining.

Wang, Yang, Xu, Chen, Zhang, Lau, "Spatial Attentive Single-Image Deraining with a High
Quality Real Rain Dataset", CVPR 2019. Official code: github.com/stevewongv/SPANet (read for
facts only).

A plain residual trunk of 17 bottlenecks; the middle 12 are gated by 1-channel attention maps.
Each map comes from one spatial attentive module (SAM, weights shared, called four times),
which gathers context along the four image directions with IRNN scans (ReLU recurrences
along rows and columns). The official IRNN is a CuPy CUDA kernel without a CPU path; here it
is plain PyTorch (a loop over one spatial axis, or a log-depth parallel scan, both vectorised
over batch, channels, the other axis and two opposite directions), so the network runs and
trains on CPU and GPU alike.
Default = the released model: 283,716 parameters.

Official-code facts kept on purpose (see the switches):
* the direction-attention branch of the SAM is computed but its products are discarded, so it
  has no effect; ``direction_attention=False`` reproduces that (the branch's 7,012 weights stay
  in the model for weight compatibility), ``True`` applies it as the paper intends;
* the official network sees OpenCV BGR in [0,1]; ``channel_order="bgr"`` flips RGB input to BGR
  before the network and the output back, so that RGB tensors reproduce the official BGR
  computation exactly (``from_official`` sets it). Models trained in this suite use "rgb".
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import check_rgb_batch, read_state, register_model, register_official, source_label, ssim


# Order of the four IRNN outputs, as the official SAM concatenates them. Official names are the
# direction the recurrence travels ("up" starts at the bottom row and moves up).
DIRECTIONS = ("from_bottom", "from_left", "from_top", "from_right")
_OFFICIAL_DIRECTION = {"from_bottom": "up", "from_left": "right", "from_top": "down", "from_right": "left"}


class _ReluScan(torch.autograd.Function):
    """h_0 = relu(x_0), h_t = relu(w * h_{t-1} + b + x_t) along dim 0 of x [L,D,B,C,K].

    w, b: [D,C] (one recurrence per direction D and channel C). The border step has no bias,
    as in the official CUDA kernel. Forward and backward are explicit loops over L that write
    into preallocated buffers: two tensor ops per step and no autograd graph per step, which
    is what makes the scan usable for training on CPU.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d, c = w.shape
        w5, b5 = w.reshape(d, 1, c, 1), b.reshape(1, d, 1, c, 1)
        xb = x + b5
        h = torch.empty_like(x)
        torch.clamp_min(x[0], 0, out=h[0])
        for t in range(1, x.shape[0]):
            torch.addcmul(xb[t], w5, h[t - 1], out=h[t])
            h[t].relu_()
        ctx.save_for_backward(h, w)
        return h

    @staticmethod
    def backward(ctx, grad_h: torch.Tensor):
        h, w = ctx.saved_tensors
        d, c = w.shape
        w5 = w.reshape(d, 1, c, 1)
        active = (h > 0).to(h.dtype)  # a float mask multiplies much faster than a bool one
        # grad_x[t] = dL/d(pre-activation at t) = (grad_h[t] + w * grad_x[t+1]) * [h_t > 0]
        grad_x = torch.empty_like(grad_h)
        last = h.shape[0] - 1
        torch.mul(grad_h[last], active[last], out=grad_x[last])
        for t in range(last - 1, -1, -1):
            torch.addcmul(grad_h[t], w5, grad_x[t + 1], out=grad_x[t])
            grad_x[t].mul_(active[t])
        # Weights and biases act from step 1 on: reduce over everything but (direction, channel).
        grad_w = (grad_x[1:] * h[:-1]).sum(dim=(0, 2, 4)) if last else torch.zeros_like(w)
        grad_b = grad_x[1:].sum(dim=(0, 2, 4)) if last else torch.zeros_like(w)
        return grad_x, grad_w, grad_b


def _compose_levels(length: int):
    """Hillis-Steele offsets 1, 2, 4, ... below ``length`` (log2 depth)."""
    s = 1
    while s < length:
        yield s
        s *= 2


class _ParallelReluScan(torch.autograd.Function):
    """The recurrence of ``_ReluScan`` computed as a log-depth (Hillis-Steele) prefix scan.

    Why it is associative. Every step is the map f_t(h) = max(0, w*h + u_t) (u_t = x_t + b for
    t >= 1); step 0 is the constant map h -> max(0, x_0) (a = 0, u = x_0). All states are >= 0,
    so only the maps' restriction to h >= 0 matters. Consider the family
        F(a, d, lo, hi): h -> min(hi, max(lo, a*h + d)),   lo <= hi.
    Claim: F(a2, d2, lo2, hi2) o F(a1, d1, lo1, hi1) = F(a2*a1, a2*d1 + d2, lo', hi') with
        (L, H) = (a2*lo1 + d2, a2*hi1 + d2), swapped when a2 < 0,
        lo' = clamp(L, lo2, hi2),  hi' = clamp(H, lo2, hi2).
    Proof: y -> a2*y + d2 is affine and monotone, so it maps clamp(z, lo1, hi1) to
    clamp(a2*z + d2, L, H) (bounds swap when it is decreasing; L <= H either way). A clamp to
    [lo2, hi2] after a clamp to [L, H] is one clamp to [clamp(L), clamp(H)]: on [L, H] the first
    clamp is the identity, outside it gives L or H, and clamp(., lo2, hi2) is nondecreasing, so
    both sides agree piece by piece.
    Bounds stay finite. A channel with w >= 0 only ever composes maps with a >= 0; there hi is
    +inf for every map and the rule reduces to lo' = max(lo2, a2*lo1 + d2), so hi is not
    tracked. A channel with w < 0 has, on h >= 0, f_t(h) = clamp(w*h + u_t, 0, max(u_t, 0))
    (w*h <= 0), a finite upper bound; the rule keeps hi finite. Only when some channel of the
    call has w < 0 is hi computed, and it is applied to those channels only.
    After the scan every prefix contains step 0, so a = 0 and h_t = min(hi_t, max(lo_t, d_t)).

    Backward reuses the sequential rule g_t = [h_t > 0] * (grad_h_t + w*g_{t+1}) (the same
    subgradient choice as ``_ReluScan``), a linear recurrence scanned the same way from the
    end: pairs (m, c) with g_t = m_t*g_{t+1} + c_t compose as (m_t*m', m_t*c' + c_t).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        n, d_dirs, _, c, _ = x.shape
        w5, b5 = w.reshape(1, d_dirs, 1, c, 1), b.reshape(1, d_dirs, 1, c, 1)
        neg = w5 < 0
        track_hi = bool(neg.any())
        # a depends only on (step, direction, channel): w**len of the window, 0 once step 0 is in it.
        a = w5.expand(n, d_dirs, 1, c, 1).clone()
        a[0] = 0
        d = x + b5
        d[0] = x[0]  # the border step has no bias
        lo = torch.zeros_like(d)
        hi = d.clamp_min(0) if track_hi else None
        d2, lo2, hi2 = torch.empty_like(d), torch.empty_like(d), (torch.empty_like(d) if track_hi else None)
        tmp = torch.empty_like(d)
        for s in _compose_levels(n):
            al = a[s:]  # later map of each composed pair
            d2[:s], lo2[:s] = d[:s], lo[:s]
            torch.addcmul(d[s:], al, d[:-s], out=d2[s:])
            torch.addcmul(d[s:], al, lo[:-s], out=tmp[s:])  # L (before a possible swap)
            if track_hi:
                hi2[:s] = hi[:s]
                high = torch.addcmul(d[s:], al, hi[:-s])  # H
                swap = al < 0
                low = torch.where(swap, high, tmp[s:])
                high = torch.where(swap, tmp[s:], high)
                torch.maximum(low, lo[s:], out=lo2[s:])
                # clamp to the later map's upper bound only where it exists (w < 0 channels)
                torch.where(neg, torch.minimum(lo2[s:], hi[s:]), lo2[s:], out=lo2[s:])
                torch.minimum(torch.maximum(high, lo[s:]), hi[s:], out=hi2[s:])
                hi, hi2 = hi2, hi
            else:
                torch.maximum(tmp[s:], lo[s:], out=lo2[s:])
            a = torch.cat([a[:s], al * a[:-s]])
            d, d2 = d2, d
            lo, lo2 = lo2, lo
        h = torch.maximum(d, lo)
        if track_hi:
            h = torch.where(neg, torch.minimum(h, hi), h)
        ctx.save_for_backward(h, w)
        return h

    @staticmethod
    def backward(ctx, grad_h: torch.Tensor):
        h, w = ctx.saved_tensors
        n, d_dirs, _, c, _ = h.shape
        active = (h > 0).to(h.dtype)
        g = grad_h * active  # c_t
        m = active * w.reshape(1, d_dirs, 1, c, 1)  # m_t
        m[-1] = 0  # nothing after the last step
        g2, m2 = torch.empty_like(g), torch.empty_like(m)
        for s in _compose_levels(n):
            g2[-s:], m2[-s:] = g[-s:], m[-s:]
            torch.addcmul(g[:-s], m[:-s], g[s:], out=g2[:-s])
            torch.mul(m[:-s], m[s:], out=m2[:-s])
            g, g2 = g2, g
            m, m2 = m2, m
        grad_w = (g[1:] * h[:-1]).sum(dim=(0, 2, 4)) if n > 1 else torch.zeros_like(w)
        grad_b = g[1:].sum(dim=(0, 2, 4)) if n > 1 else torch.zeros_like(w)
        return g, grad_w, grad_b


SCANS = ("auto", "parallel", "sequential")


def relu_scan(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, scan: str = "auto") -> torch.Tensor:
    """Differentiable ReLU recurrence along dim 0 of x [L,D,B,C,K]; weight, bias [D,C].

    ``scan``: "parallel" (log-depth prefix scan), "sequential" (one step after the other) or
    "auto"; all compute the same function and the same gradients. "auto" picks by device: the
    parallel scan does O(L log L) memory-bound work in O(log L) kernel calls, which pays where
    kernel calls are the cost (GPU); on a 2-core CPU the sequential loop's O(L) work on
    cache-sized slices measured 2-8x faster per scan (forward 64-481 steps), so CPU tensors use it.
    Runs in the parameters' dtype: under autocast the features may arrive in half precision,
    and a long recurrence is better accumulated in float32 anyway.
    """
    if scan not in SCANS:
        raise ValueError(f"scan must be one of {SCANS}, got {scan!r}")
    if scan == "auto":
        # the meta device (FLOP counts, device checks) holds no values to branch on: the sequential path
        scan = "sequential" if x.device.type in ("cpu", "meta") else "parallel"
    fn = _ParallelReluScan if scan == "parallel" else _ReluScan
    return fn.apply(x.to(weight.dtype).contiguous(), weight, bias)


class IRNN(nn.Module):
    """Four-direction identity-initialised RNN: one per-channel weight and bias per direction.

    Returns the four context maps in ``DIRECTIONS`` order, each [B,C,H,W].
    """

    def __init__(self, channels: int, alpha: float = 0.2, scan: str = "auto") -> None:
        super().__init__()
        if scan not in SCANS:
            raise ValueError(f"IRNN scan must be one of {SCANS}, got {scan!r}")
        self.scan = scan
        # Rows follow DIRECTIONS. Recurrent weights start at 0.2 (official); biases use the
        # default init of a 1x1 depthwise conv (fan-in 1 -> uniform(-1, 1)), as the official
        # code builds them as such convs.
        self.weight = nn.Parameter(torch.full((4, channels), alpha))
        self.bias = nn.Parameter(torch.empty(4, channels).uniform_(-1.0, 1.0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # Scanned axis first: columns-as-sequence [H,B,C,W] and rows-as-sequence [W,B,C,H];
        # the opposite direction scans the same sequence reversed.
        down = x.permute(2, 0, 1, 3)  # from_top
        right = x.permute(3, 0, 1, 2)  # from_left
        seqs = {"from_top": down, "from_bottom": down.flip(0), "from_left": right, "from_right": right.flip(0)}
        idx = {name: k for k, name in enumerate(DIRECTIONS)}
        groups = [DIRECTIONS] if x.shape[2] == x.shape[3] else [("from_bottom", "from_top"), ("from_left", "from_right")]
        out = {}
        for names in groups:  # square inputs scan all four directions in one loop
            rows = [idx[n] for n in names]
            h = relu_scan(torch.stack([seqs[n] for n in names], 1), self.weight[rows], self.bias[rows], self.scan)
            for k, n in enumerate(names):
                y = h[:, k].flip(0) if n in ("from_bottom", "from_right") else h[:, k]
                out[n] = y.permute(1, 2, 0, 3) if n in ("from_top", "from_bottom") else y.permute(1, 2, 3, 0)
        return tuple(out[n] for n in DIRECTIONS)


class SpatialAttentiveModule(nn.Module):
    """SAM: conv -> IRNN -> conv -> IRNN -> conv -> 1x1 -> sigmoid, a 1-channel attention map."""

    def __init__(self, channels: int = 32, direction_attention: bool = False, scan: str = "auto") -> None:
        super().__init__()
        self.direction_attention = direction_attention
        self.conv_in = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.irnn1 = IRNN(channels, scan=scan)
        self.conv_mid = nn.Conv2d(4 * channels, channels, 3, padding=1, bias=False)
        self.irnn2 = IRNN(channels, scan=scan)
        self.conv_last = nn.Conv2d(4 * channels, channels, 3, padding=1, bias=False)
        self.to_map = nn.Conv2d(channels, 1, 1, bias=False)
        half = channels // 2
        # Per-direction weights (one channel per IRNN direction); only used when switched on.
        self.dir_weights = nn.Sequential(
            nn.Conv2d(channels, half, 3, padding=1), nn.ReLU(),
            nn.Conv2d(half, half, 3, padding=1), nn.ReLU(),
            nn.Conv2d(half, 4, 1), nn.Sigmoid(),
        )

    def _context(self, irnn: IRNN, x: torch.Tensor, dir_w: torch.Tensor | None) -> torch.Tensor:
        dirs = irnn(x)
        if dir_w is not None:
            dirs = [d * dir_w[:, k : k + 1] for k, d in enumerate(dirs)]
        return torch.cat(dirs, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Official code: computed, then multiplied out of place and thrown away -> skip it.
        dir_w = self.dir_weights(x) if self.direction_attention else None
        f = self.conv_mid(self._context(self.irnn1, self.conv_in(x), dir_w))
        f = F.relu(self.conv_last(self._context(self.irnn2, f, dir_w)))
        return torch.sigmoid(self.to_map(f))


class Bottleneck(nn.Module):
    """1x1 -> ReLU -> 3x3 (dilation 2) -> ReLU -> 1x1, no bias, no norm (the residual branch only)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=2, dilation=2, bias=False), nn.ReLU(),
            nn.Conv2d(channels, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SPANet(nn.Module):
    """Spatial attentive deraining network (RGB [0,1] in and out, any H x W).

    eval(): derained image. train(): {"out": image, "attention": first attention map A_1
    [B,1,H,W]} (A_1 is what the paper's mask loss supervises).
    """

    PLAIN_BEFORE, GATED_GROUPS, GROUP_SIZE, PLAIN_AFTER = 3, 4, 3, 2  # 3 + 4*3 + 2 = 17 blocks

    def __init__(self, channels: int = 32, direction_attention: bool = False, channel_order: str = "rgb",
                 irnn_scan: str = "auto") -> None:
        super().__init__()
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        self.channel_order = channel_order
        self.head = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        n_blocks = self.PLAIN_BEFORE + self.GATED_GROUPS * self.GROUP_SIZE + self.PLAIN_AFTER
        self.blocks = nn.ModuleList(Bottleneck(channels) for _ in range(n_blocks))
        self.sam = SpatialAttentiveModule(channels, direction_attention, irnn_scan)
        # No global skip: the network predicts the clean image directly (official).
        self.tail = nn.Conv2d(channels, 3, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        check_rgb_batch(x, "SPANet")
        if self.channel_order == "bgr":
            x = x.flip(1)
        f = F.relu(self.head(x))
        blocks = iter(self.blocks)
        for _ in range(self.PLAIN_BEFORE):
            f = F.relu(next(blocks)(f) + f)
        maps = []
        for _ in range(self.GATED_GROUPS):
            a = self.sam(f)  # one map gates the next three blocks
            maps.append(a)
            for _ in range(self.GROUP_SIZE):
                f = F.relu(next(blocks)(f) * a + f)
        for block in blocks:
            f = F.relu(block(f) + f)
        out = self.tail(f)
        if self.channel_order == "bgr":
            out = out.flip(1)
        return {"out": out, "attention": maps[0]} if self.training else out

    def own_loss(self, outputs: dict[str, torch.Tensor], rainy: torch.Tensor, clean: torch.Tensor,
                 mask_threshold: float = 0.5 / 255) -> torch.Tensor:
        """Official SPANet loss: L1 + (1 - SSIM) + MSE(A_1, M).

        M is the binary rain mask: 1 where rainy and clean differ in any channel. The official
        trainer computes it on uint8 images (any non-zero difference); on float tensors a
        difference above half a uint8 level is the same test for 8-bit data and ignores float
        noise. SSIM is the official training SSIM (Gaussian 11x11, sigma 1.5, zero padding).
        """
        if not isinstance(outputs, dict) or "attention" not in outputs:
            raise ValueError("SPANet.own_loss needs the train-mode output dict {'out', 'attention'}")
        out, att = outputs["out"], outputs["attention"]
        mask = ((rainy - clean).abs() > mask_threshold).any(dim=1, keepdim=True).to(att.dtype)
        return F.l1_loss(out, clean) + (1 - ssim(out, clean, zero_pad=True)) + F.mse_loss(att, mask)


def official_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official SPANet state_dict (SPANet.py of stevewongv/SPANet) to this module.

    Raises KeyError for a missing official key and ValueError for keys it does not know.
    """
    src = dict(state)
    take = src.pop
    out = {"head.weight": take("conv_in.0.weight"), "tail.weight": take("conv_out.0.weight")}
    for i in range(17):
        for j, conv in zip((0, 2, 4), ("conv1", "conv2", "conv3")):
            out[f"blocks.{i}.body.{j}.weight"] = take(f"res_block{i + 1}.group1.{conv}.weight")
    for ours, theirs in (("conv_in", "conv_in"), ("conv_mid", "conv2"), ("conv_last", "conv3"), ("to_map", "conv_out")):
        out[f"sam.{ours}.weight"] = take(f"SAM1.{theirs}.weight")
    for j, conv in zip((0, 2, 4), ("conv1", "conv2", "conv3")):
        for p in ("weight", "bias"):
            out[f"sam.dir_weights.{j}.{p}"] = take(f"SAM1.attention_layer.{conv}.{p}")
    for irnn in ("irnn1", "irnn2"):
        for p in ("weight", "bias"):
            # Official: one depthwise 1x1 conv per direction; ours: one [4, C] tensor (DIRECTIONS order).
            rows = [take(f"SAM1.{irnn}.{_OFFICIAL_DIRECTION[d]}_weight.{p}").reshape(-1) for d in DIRECTIONS]
            out[f"sam.{irnn}.{p}"] = torch.stack(rows)
    if src:
        raise ValueError(f"unexpected keys for an official SPANet state_dict: {sorted(src)}")
    return out


@register_official("spanet")
def from_official(path, direction_attention: bool = False, irnn_scan: str = "auto") -> SPANet:
    """Build SPANet with channel_order="bgr" and load an official checkpoint (e.g. model/latest).

    The released file is a training checkpoint {"net": state_dict, "clock": 40000, "opt": Adam
    state} holding CUDA tensors (loaded onto the CPU here); a bare state_dict and a ``module.``
    prefix (nn.DataParallel) are accepted too. Loading is strict.

    The official test script feeds cv2.imread's BGR bytes /255 (float32, full image, no channel
    swap) and writes the output clipped to [0,1], x255, rounded to uint8. With the returned
    model, pass the RGB image /255 and quantise the same way to get the official numbers.
    """
    state = read_state(path, "SPANet")
    try:
        mapped = official_to_ours(state)
    except ValueError as exc:  # unknown keys
        raise ValueError(f"{source_label(path)}: {exc}") from exc
    except KeyError as exc:
        raise ValueError(f"{source_label(path)}: not an official SPANet state_dict (missing key {exc})") from exc
    model = SPANet(direction_attention=direction_attention, channel_order="bgr", irnn_scan=irnn_scan)
    own = model.state_dict()
    bad = [f"{k}: {tuple(v.shape)} (expected {tuple(own[k].shape)})"
           for k, v in mapped.items() if v.shape != own[k].shape]
    if bad:
        raise ValueError(f"{source_label(path)}: not an official SPANet state_dict; shape mismatches {bad}")
    model.load_state_dict(mapped, strict=True)
    return model


@register_model("spanet")
def spanet(channels: int = 32, direction_attention: bool = False, channel_order: str = "rgb",
           irnn_scan: str = "auto") -> SPANet:
    """SPANet as released (283,716 parameters). ``direction_attention=True``: paper's intent.
    ``irnn_scan``: "auto", "parallel" or "sequential" IRNN scan (same results, see relu_scan)."""
    return SPANet(channels=channels, direction_attention=direction_attention, channel_order=channel_order,
                  irnn_scan=irnn_scan)
