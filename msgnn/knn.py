"""Patch operations and the windowed k-nearest-neighbour search behind MSGNN's graphs
(Wang et al., "Explore Internal and External Similarity for Single Image Deraining with Graph
Neural Networks", IJCAI 2024).

Facts from the official code (``graph/submodules.py``, ``graph/lib/ops.py``, adapted there from
IGNN and N3Net): l x l patches at stride s, zero padding split floor/ceil so that the patches tile
the padded map exactly; each query patch searches a square window of ``min(window, n1, n2)``
database patches for its k smallest squared Euclidean distances (hard kNN, no soft relaxation);
patch2im folds patches back and divides by the overlap count.

Why this file exists: the official training path builds the full b x m x n distance matrix
(quadratic in pixels) and gathers on a b x m x f x n expanded tensor whose backward allocates that
whole tensor. Here the search runs without autograd in blocks of neighbouring query patches: a
block's windows overlap almost entirely, so one small dense matmul against the union of its
windows gives every candidate distance, and a gather picks each query's own window. Memory is
bounded by ``budget`` floats per step (also when the whole database fits in one window: blocks
are then cut to the budget, not merged into one) and the total is linear in the number of pixels.
Gathers of neighbours use ``index_select`` on flat tables, whose backward is an index_add.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

WINDOW_ALIGNS = ("centered", "official")


def patch_padding(size: int, patch: int, stride: int) -> tuple[int, int]:
    """(before, after) zero padding of one dimension so that l x l patches at stride s tile it.

    Same rule as the official ``calc_padding`` (pad by ``-(size - l) mod s``, floor before, ceil
    after); a dimension smaller than one patch is first padded up to the patch size, where the
    official code would fail for l > s.
    """
    padded = max(size, patch)
    extra = padded - size + (-(padded - patch)) % stride
    return extra // 2, extra - extra // 2


def grid_size(size: int, patch: int, stride: int) -> int:
    """Number of patch positions along a dimension of ``size`` pixels."""
    lo, hi = patch_padding(size, patch, stride)
    return (size + lo + hi - patch) // stride + 1


def im2patch(x: torch.Tensor, patch: int, stride: int) -> tuple[torch.Tensor, tuple[int, int], tuple[int, ...]]:
    """Cut ``x`` [b,C,H,W] into patch vectors [b, n1*n2, C*l*l] (channel-major, row-major grid).

    Returns the vectors, the grid (n1, n2) and the padding (top, bottom, left, right).
    """
    b, c, h, w = x.shape
    top, bottom = patch_padding(h, patch, stride)
    left, right = patch_padding(w, patch, stride)
    xp = F.pad(x, (left, right, top, bottom))
    n1, n2 = grid_size(h, patch, stride), grid_size(w, patch, stride)
    if stride == patch:  # non-overlapping: a pure reshape, much cheaper than unfold
        cols = xp.reshape(b, c, n1, patch, n2, patch).permute(0, 2, 4, 1, 3, 5).reshape(b, n1 * n2, c * patch * patch)
    else:
        cols = F.unfold(xp, patch, stride=stride).transpose(1, 2)
    return cols, (n1, n2), (top, bottom, left, right)


def patch2im(cols: torch.Tensor, channels: int, grid: tuple[int, int], pads: tuple[int, ...], patch: int,
             stride: int) -> torch.Tensor:
    """Inverse of ``im2patch``: fold [b, n1*n2, C*l*l] vectors to [b,C,H,W], averaging overlaps."""
    b = cols.shape[0]
    n1, n2 = grid
    top, bottom, left, right = pads
    hp, wp = (n1 - 1) * stride + patch, (n2 - 1) * stride + patch
    if stride == patch:
        img = cols.reshape(b, n1, n2, channels, patch, patch).permute(0, 3, 1, 4, 2, 5).reshape(b, channels, hp, wp)
    else:
        img = F.fold(cols.transpose(1, 2), (hp, wp), patch, stride=stride)
        ones = torch.ones(1, patch * patch, n1 * n2, dtype=cols.dtype, device=cols.device)
        img = img / F.fold(ones, (hp, wp), patch, stride=stride)
    return img[:, :, top:hp - bottom, left:wp - right]


def window_starts(q: int, n: int, side: int, align: str, scale: int, device: torch.device) -> torch.Tensor:
    """First database row (or column) of each query row's (column's) search window.

    ``centered``: the window is centred on the query's proportional position in the database
    grid, so the query's own location is inside it at every scale and for any image size.
    ``official``: the released code's rule ``clamp(i // 2 - side // scale, 0, n - side)``; the
    ``i // 2`` comes from IGNN (database always half size) and leaves the scale-1 and exemplar
    windows above/left of the query once the image exceeds the window.
    Both are non-decreasing in the query position, which the block search relies on.
    """
    i = torch.arange(q, device=device)
    if align == "centered":
        centre = torch.div((2 * i + 1) * n, 2 * q, rounding_mode="floor")
        start = centre - side // 2
    elif align == "official":
        start = torch.div(i, 2, rounding_mode="floor") - side // scale
    else:
        raise ValueError(f"unknown window_align {align!r}; valid: {', '.join(WINDOW_ALIGNS)}")
    return start.clamp(0, n - side)


def window_shape(window: int, n1: int, n2: int, k: int) -> tuple[int, int]:
    """Rows x cols of every search window: the official square ``min(window, n1, n2)``; only when
    that holds fewer than k patches (databases under ~3 patches on a side) does it widen to
    ``min(window, n1) x min(window, n2)``, where the official code would fail in topk."""
    side = min(window, n1, n2)
    if side * side >= k:
        return side, side
    return min(window, n1), min(window, n2)


def _step_floats(b: int, cq: int, u: int, e: int, o: int) -> int:
    """Floats one query block holds at its peak: distances to its window union, the gathered query and
    union vectors, and each query's window (int64 positions = 2 floats, plus the gathered distances)."""
    return b * (cq * u + u * e + cq * e + 3 * cq * o)


def _block_shape(m1: int, m2: int, r0: torch.Tensor, c0: torch.Tensor, sh: int, sw: int,
                 block: int, b: int = 1, e: int = 1, budget: int | None = None) -> tuple[int, int]:
    """Pick the query block size with the fewest distance evaluations (padding included),
    preferring larger blocks (bigger, more efficient matmuls) unless they cost >25 % more.

    Only blocks whose step fits in ``budget`` floats compete: a small database fits one window, so
    every block's union is the whole database and one block of all queries would cost no more
    distance evaluations, but it would hold queries x database distances at once (770 MiB for a 720p
    query against a 64x64 exemplar). If even ``block`` does not fit, smaller blocks are tried."""
    sizes = sorted({max(m1, m2), 4 * block, 2 * block, block}, reverse=True)
    smaller = [s for s in (block // 2, block // 4, block // 8, block // 16, 1) if 1 <= s < block]
    best, best_cost, last = None, None, (1, 1)
    for bq in sizes + sorted(set(smaller), reverse=True):
        if best is not None and bq < block:
            break  # a block of the preferred sizes fits: no need to go smaller
        bh, bw = min(bq, m1), min(bq, m2)
        nbh, nbw = -(-m1 // bh), -(-m2 // bw)
        first_r, first_c = torch.arange(nbh) * bh, torch.arange(nbw) * bw
        uh = int((r0[(first_r + bh - 1).clamp(max=m1 - 1)] - r0[first_r]).max()) + sh
        uw = int((c0[(first_c + bw - 1).clamp(max=m2 - 1)] - c0[first_c]).max()) + sw
        last = (bh, bw)
        if budget is not None and _step_floats(b, bh * bw, uh * uw, e, sh * sw) > budget:
            continue
        cost = nbh * nbw * bh * bw * uh * uw
        if best_cost is None or cost * 1.25 < best_cost:
            best, best_cost = (bh, bw), cost
    return best if best is not None else last


def _sq_norms(x: torch.Tensor, budget: int) -> torch.Tensor:
    """Squared L2 norm of every row of x [b, m, e], in chunks: x.pow(2) whole would be a copy of x."""
    step = max(1, budget // (x.shape[0] * x.shape[2]))
    return torch.cat([x[:, s:s + step].pow(2).sum(-1) for s in range(0, x.shape[1], step)], 1)


@torch.no_grad()
def windowed_knn(query: torch.Tensor, db: torch.Tensor, q_grid: tuple[int, int], db_grid: tuple[int, int], k: int,
                 window: int, align: str = "centered", scale: int = 1, block: int = 16,
                 budget: int = 1 << 24) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest database patches of every query patch inside its search window.

    query [b, m1*m2, e] and db [b, n1*n2, e] are patch vectors on row-major grids. Returns
    (idx, dist): [b, m, k] flat database indices and squared distances, nearest first. A database
    with fewer than k patches in total repeats its farthest neighbour to fill the k slots.
    """
    b, m, e = query.shape
    (m1, m2), (n1, n2) = q_grid, db_grid
    sh, sw = window_shape(window, n1, n2, k)
    kk = min(k, sh * sw)
    dev = query.device
    r0 = window_starts(m1, n1, sh, align, scale, torch.device("cpu"))
    c0 = window_starts(m2, n2, sw, align, scale, torch.device("cpu"))
    bh, bw = _block_shape(m1, m2, r0, c0, sh, sw, block, b, e, budget)
    nbh, nbw = -(-m1 // bh), -(-m2 // bw)
    # query rows/cols of every block; the last block repeats the last row/col instead of padding
    qi = torch.clamp(torch.arange(nbh)[:, None] * bh + torch.arange(bh), max=m1 - 1)  # nbh, bh
    qj = torch.clamp(torch.arange(nbw)[:, None] * bw + torch.arange(bw), max=m2 - 1)  # nbw, bw
    # one common union size for all blocks, its start clamped inside the database grid
    uh = min(n1, int((r0[qi[:, -1]] - r0[qi[:, 0]]).max()) + sh)
    uw = min(n2, int((c0[qj[:, -1]] - c0[qj[:, 0]]).max()) + sw)
    ur0, uc0 = r0[qi[:, 0]].clamp(max=n1 - uh), c0[qj[:, 0]].clamp(max=n2 - uw)
    r0, c0, qi, qj, ur0, uc0 = (t.to(dev) for t in (r0, c0, qi, qj, ur0, uc0))
    ar_sh, ar_sw, ar_uh, ar_uw = (torch.arange(v, device=dev) for v in (sh, sw, uh, uw))
    ar_bh, ar_bw = torch.arange(bh, device=dev), torch.arange(bw, device=dev)

    cq, u, o = bh * bw, uh * uw, sh * sw
    group = max(1, budget // _step_floats(b, cq, u, e, o))
    nblk = nbh * nbw
    q_sq, db_sq = _sq_norms(query, budget), _sq_norms(db, budget)  # b, m / b, n
    # results go to a padded query grid where every block position is unique, so the repeated
    # edge queries never race for the same output slot
    pw = nbw * bw
    idx_out = query.new_empty(b, nbh * bh * pw, kk, dtype=torch.long)
    dist_out = query.new_empty(b, nbh * bh * pw, kk)
    for g0 in range(0, nblk, group):
        blk = torch.arange(g0, min(nblk, g0 + group), device=dev)
        ng = len(blk)
        bi, bj = blk // nbw, blk % nbw
        rows, cols = qi[bi], qj[bj]  # G, bh / G, bw
        qflat = (rows[:, :, None] * m2 + cols[:, None, :]).reshape(ng, cq)
        uflat = ((ur0[bi, None, None] + ar_uh[:, None]) * n2 + uc0[bj, None, None] + ar_uw).reshape(ng, u)
        dist = torch.matmul(query[:, qflat], db[:, uflat].transpose(-1, -2)).mul_(-2)  # b, G, cq, u
        dist += db_sq[:, uflat][:, :, None, :]
        dist += q_sq[:, qflat][..., None]
        # each query's own window, as indices into its block's union (row-major over the window)
        wr = (r0[rows] - ur0[bi, None])[:, :, None] + ar_sh  # G, bh, sh
        wc = (c0[cols] - uc0[bj, None])[:, :, None] + ar_sw  # G, bw, sw
        local = (wr[:, :, None, :, None] * uw + wc[:, None, :, None, :]).reshape(1, ng, cq, o)
        best, pos = torch.topk(torch.gather(dist, 3, local.expand(b, -1, -1, -1)), kk, dim=3, largest=False)
        # window position -> database grid position
        grow = r0[rows][:, :, None].expand(-1, -1, bw).reshape(1, ng, cq, 1) + torch.div(pos, sw, rounding_mode="floor")
        gcol = c0[cols][:, None, :].expand(-1, bh, -1).reshape(1, ng, cq, 1) + pos % sw
        slot = ((bi[:, None, None] * bh + ar_bh[:, None]) * pw + bj[:, None, None] * bw + ar_bw).reshape(-1)
        idx_out[:, slot] = (grow * n2 + gcol).reshape(b, -1, kk)
        dist_out[:, slot] = best.reshape(b, -1, kk)
    idx_out = idx_out.view(b, nbh * bh, pw, kk)[:, :m1, :m2].reshape(b, m, kk)
    dist_out = dist_out.view(b, nbh * bh, pw, kk)[:, :m1, :m2].reshape(b, m, kk)
    if kk < k:
        fill = torch.full((k - kk,), kk - 1, device=dev)
        idx_out = torch.cat([idx_out, idx_out[..., fill]], -1)
        dist_out = torch.cat([dist_out, dist_out[..., fill]], -1)
    return idx_out, dist_out


def gather_rows(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """table [b, n, f], idx [b, ...] -> [b, ..., f] via one index_select on the flat (b*n) x f table.

    Unlike gathering from an expanded view, the backward is an index_add into b*n*f floats.
    """
    b, n, f = table.shape
    offs = (torch.arange(b, device=idx.device) * n).view(b, *([1] * (idx.dim() - 1)))
    out = table.reshape(b * n, f).index_select(0, (idx + offs).reshape(-1))
    return out.view(*idx.shape, f)


def neighbour_l1(query: torch.Tensor, db: torch.Tensor, idx: torch.Tensor, channels: int,
                 budget: int = 1 << 24) -> torch.Tensor:
    """Per-channel L1 distance between each query patch and each of its k neighbours.

    query [b,m,C*L], db [b,n,C*L], idx [b,m,k] -> [b,m,k,C]: sum over the L = l*l patch positions
    of |query - neighbour| (the official "difference map" before it is spread over the patch).
    """
    b, m, f = query.shape
    k = idx.shape[2]
    out = []
    step = max(1, budget // (2 * b * k * f))
    for s in range(0, m, step):
        nb = gather_rows(db, idx[:, s:s + step])  # b, mc, k, f
        out.append((query[:, s:s + step, None, :] - nb).abs().view(*nb.shape[:3], channels, -1).sum(-1))
    return torch.cat(out, 1) if len(out) > 1 else out[0]


def weighted_gather(values: torch.Tensor, idx: torch.Tensor, weight: torch.Tensor,
                    budget: int = 1 << 24) -> torch.Tensor:
    """sum_r weight[b,q,r] * values[b, idx[b,q,r]]: values [b,n,f], idx/weight [b,m,k] -> [b,m,f]."""
    b, m, k = idx.shape
    f = values.shape[2]
    out = []
    step = max(1, budget // (b * k * f))
    for s in range(0, m, step):
        nb = gather_rows(values, idx[:, s:s + step])  # b, mc, k, f
        out.append(torch.matmul(weight[:, s:s + step, None, :], nb).squeeze(2))
    return torch.cat(out, 1) if len(out) > 1 else out[0]


def spread_patches(per_patch: torch.Tensor, patch: int) -> torch.Tensor:
    """[b, m, k, C] per-patch values -> [b, m, k, C*l*l], constant over each patch (channel-major)."""
    return per_patch.unsqueeze(-1).expand(*per_patch.shape, patch * patch).flatten(-2)
