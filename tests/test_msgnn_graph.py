"""MSGNN graph module: the chunked windowed kNN and the aggregation against straightforward
full-matrix references (written the way the official code computes them), patch ops, windows."""
from __future__ import annotations

import weakref

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from msgnn.graph import Edges, GCNBlock, KNNGraph
from msgnn.knn import (
    gather_rows,
    im2patch,
    neighbour_l1,
    patch2im,
    weighted_gather,
    window_shape,
    window_starts,
    windowed_knn,
)


def reference_knn(query, db, q_grid, db_grid, k, window, align, scale):
    """Full b x m x n distance matrix, then each query's window gathered, then topk (official train path).

    The window rule is written out per query here, independently of ``window_starts``.
    """
    (m1, m2), (n1, n2) = q_grid, db_grid
    sh, sw = window_shape(window, n1, n2, k)
    dist = (query.pow(2).sum(-1)[:, :, None] + db.pow(2).sum(-1)[:, None, :] - 2 * query @ db.transpose(1, 2))

    def start(i, q, n, side):
        if align == "official":
            s = i // 2 - side // scale
        else:
            s = ((2 * i + 1) * n) // (2 * q) - side // 2
        return min(max(s, 0), n - side)

    rows = [[start(i, m1, n1, sh) + a for a in range(sh)] for i in range(m1)]
    cols = [[start(j, m2, n2, sw) + c for c in range(sw)] for j in range(m2)]
    win = torch.tensor([[r * n2 + c for r in rows[i] for c in cols[j]] for i in range(m1) for j in range(m2)])
    d_win = dist.gather(2, win.expand(query.shape[0], -1, -1))
    best, pos = d_win.topk(min(k, sh * sw), dim=2, largest=False)
    return win.expand(query.shape[0], -1, -1).gather(2, pos), best


CASES = [  # q_grid, db_grid, window, align, scale, block, budget
    ((22, 22), (22, 22), 30, "centered", 1, 16, 1 << 24),  # 64x64 training crop, scale 1: global search
    ((22, 22), (11, 11), 30, "official", 2, 16, 1 << 24),
    ((13, 19), (9, 7), 5, "centered", 1, 4, 1 << 12),  # several blocks and groups
    ((13, 19), (9, 7), 5, "official", 1, 4, 1 << 12),
    ((17, 11), (30, 25), 6, "official", 4, 3, 1 << 10),
    ((9, 31), (31, 9), 4, "centered", 1, 2, 1 << 11),  # exemplar of the other orientation
    ((5, 4), (2, 1), 30, "centered", 1, 16, 1 << 24),  # database smaller than k patches
]


@pytest.mark.parametrize("q_grid,db_grid,window,align,scale,block,budget", CASES)
def test_chunked_knn_equals_full_matrix_reference(q_grid, db_grid, window, align, scale, block, budget):
    g = torch.Generator().manual_seed(0)
    b, e, k = 2, 12, 5
    query = torch.randn(b, q_grid[0] * q_grid[1], e, generator=g, dtype=torch.float64)
    db = torch.randn(b, db_grid[0] * db_grid[1], e, generator=g, dtype=torch.float64)
    idx, dist = windowed_knn(query, db, q_grid, db_grid, k, window, align, scale, block=block, budget=budget)
    ref_idx, ref_dist = reference_knn(query, db, q_grid, db_grid, k, window, align, scale)
    kk = ref_idx.shape[2]
    assert idx.shape == (b, query.shape[1], k)
    assert torch.equal(idx[..., :kk], ref_idx)
    torch.testing.assert_close(dist[..., :kk], ref_dist)
    if kk < k:  # too small a database: the farthest neighbour fills the remaining slots
        assert torch.equal(idx[..., kk:], ref_idx[..., -1:].expand(-1, -1, k - kk))


def test_chunked_knn_float32_matches_reference_distances():
    g = torch.Generator().manual_seed(1)
    query, db = torch.randn(1, 22 * 22, 288, generator=g), torch.randn(1, 11 * 11, 288, generator=g)
    idx, dist = windowed_knn(query, db, (22, 22), (11, 11), 5, 30, block=4, budget=1 << 14)
    ref_idx, ref_dist = reference_knn(query, db, (22, 22), (11, 11), 5, 30, "centered", 2)
    torch.testing.assert_close(dist, ref_dist, rtol=1e-4, atol=1e-3)
    assert (idx == ref_idx).float().mean() > 0.99  # float32 rounding may swap near-ties only


def test_large_grid_is_searched_in_bounded_chunks():
    # a 481x321 image at stride 3: 161 x 107 query patches; the full m x n matrix would be 3e8 floats
    q_grid = (107, 161)
    g = torch.Generator().manual_seed(2)
    query = torch.randn(1, q_grid[0] * q_grid[1], 4, generator=g)
    idx, dist = windowed_knn(query, query, q_grid, q_grid, 5, 30, budget=1 << 22)
    assert idx.shape == (1, q_grid[0] * q_grid[1], 5)
    # spot-check a few queries against a brute-force search of their window
    r0 = window_starts(q_grid[0], q_grid[0], 30, "centered", 1, torch.device("cpu"))
    c0 = window_starts(q_grid[1], q_grid[1], 30, "centered", 1, torch.device("cpu"))
    for q in [0, 5000, 12345, q_grid[0] * q_grid[1] - 1]:
        i, j = divmod(q, q_grid[1])
        cand = torch.tensor([r * q_grid[1] + c for r in range(r0[i], r0[i] + 30) for c in range(c0[j], c0[j] + 30)])
        d = (query[0, cand] - query[0, q]).pow(2).sum(-1)
        assert set(idx[0, q].tolist()) == set(cand[d.topk(5, largest=False).indices].tolist())
        assert idx[0, q, 0] == q  # the query itself is its own nearest neighbour


class PeakTensorBytes(TorchDispatchMode):
    """Peak bytes held at once by the tensors that the operations run inside this mode create
    (each storage counted once, released when its last tensor is freed). Measures what a function
    allocates on any device, the CPU included, where torch keeps no allocator statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, list[int]] = {}  # storage address -> [bytes, tensors referring to it]
        self.now = self.peak = 0

    def _release(self, ptr: int) -> None:
        entry = self.live[ptr]
        entry[1] -= 1
        if entry[1] == 0:
            self.now -= entry[0]
            del self.live[ptr]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outside = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in self.live:
                if ptr in outside:
                    continue  # a view of a tensor created before the mode
                self.live[ptr] = [storage.nbytes(), 0]
                self.now += storage.nbytes()
                self.peak = max(self.peak, self.now)
            self.live[ptr][1] += 1
            weakref.finalize(t, self._release, ptr)
        return out


def test_search_memory_stays_in_budget_when_the_database_fits_one_window():
    """A large query against a small database (an exemplar crop, a 1/4-scale image): the whole
    database is inside every window, so all queries share one union. The search used to run them
    as one block (770 MiB for a 720p query against a 64x64 exemplar); it must keep to the budget."""
    g = torch.Generator().manual_seed(3)
    q_grid, db_grid, budget = (100, 120), (20, 20), 1 << 18  # 1 MiB of floats
    query = torch.randn(1, q_grid[0] * q_grid[1], 8, generator=g)
    db = torch.randn(1, db_grid[0] * db_grid[1], 8, generator=g)
    with PeakTensorBytes() as small:
        idx, dist = windowed_knn(query, db, q_grid, db_grid, 5, 30, budget=budget)
    out_bytes = idx.numel() * idx.element_size() + dist.numel() * dist.element_size()
    one_block = q_grid[0] * q_grid[1] * db_grid[0] * db_grid[1] * 4  # the queries x database distances
    assert small.peak <= out_bytes + 1.5 * budget * 4 and small.peak < one_block / 4
    with PeakTensorBytes() as large:  # the same search with room for one block: it uses it
        idx2, dist2 = windowed_knn(query, db, q_grid, db_grid, 5, 30, budget=1 << 26)
    assert large.peak > one_block
    assert torch.equal(idx, idx2) and torch.equal(dist, dist2)
    ref_idx, _ = reference_knn(query[:, :500], db, (5, 100), db_grid, 5, 30, "centered", 1)
    assert torch.equal(idx[:, :500], ref_idx)


def test_official_window_misses_the_query_at_test_size():
    # reference/msgnn.md 2.5.3: at 321x481 only 5.2 % of the scale-1 queries lie in their own window
    m1, m2 = 107, 161
    inside = {}
    for align in ("official", "centered"):
        r0 = window_starts(m1, m1, 30, align, 1, torch.device("cpu"))
        c0 = window_starts(m2, m2, 30, align, 1, torch.device("cpu"))
        ir = (torch.arange(m1) >= r0) & (torch.arange(m1) < r0 + 30)
        ic = (torch.arange(m2) >= c0) & (torch.arange(m2) < c0 + 30)
        inside[align] = (ir[:, None] & ic[None, :]).float().mean().item()
    assert abs(inside["official"] - 0.052) < 0.001
    assert inside["centered"] == 1.0


@pytest.mark.parametrize("patch,stride", [(3, 3), (3, 1), (3, 2), (5, 3)])
@pytest.mark.parametrize("hw", [(7, 11), (16, 16), (2, 1)])
def test_patch2im_inverts_im2patch(patch, stride, hw):
    x = torch.randn(2, 4, *hw)
    cols, grid, pads = im2patch(x, patch, stride)
    assert cols.shape == (2, grid[0] * grid[1], 4 * patch * patch)
    torch.testing.assert_close(patch2im(cols, 4, grid, pads, patch, stride), x)


def test_gathers_match_expanded_gather_in_value_and_gradient():
    g = torch.Generator().manual_seed(3)
    b, m, n, k, c, L = 2, 30, 17, 4, 3, 9
    q = torch.randn(b, m, c * L, generator=g, dtype=torch.float64, requires_grad=True)
    db = torch.randn(b, n, c * L, generator=g, dtype=torch.float64, requires_grad=True)
    idx = torch.randint(0, n, (b, m, k), generator=g)
    w = torch.rand(b, m, k, generator=g, dtype=torch.float64, requires_grad=True)

    def reference(q, db, w):  # the official way: gather on a b x m x f x n expanded view
        nb = db.transpose(1, 2)[:, None].expand(b, m, c * L, n).gather(3, idx[:, :, None].expand(b, m, c * L, k))
        diff = (q[..., None] - nb).abs().view(b, m, c, L, k).sum(3).permute(0, 1, 3, 2)
        return diff, (nb * w[:, :, None, :]).sum(-1)

    ours = (neighbour_l1(q, db, idx, c, budget=64), weighted_gather(db, idx, w, budget=64))
    ref = reference(q, db, w)
    for a, r in zip(ours, ref):
        torch.testing.assert_close(a, r)
    grads = torch.autograd.grad(sum(t.pow(2).sum() for t in ours), (q, db, w))
    ref_grads = torch.autograd.grad(sum(t.pow(2).sum() for t in ref), (q, db, w))
    for a, r in zip(grads, ref_grads):
        torch.testing.assert_close(a, r)
    assert torch.equal(gather_rows(db, idx)[1, 2, 3], db[1, idx[1, 2, 3]])


def reference_gcn(block: GCNBlock, values, edges: Edges, patch, stride):
    """Official GCNBlock: fold every neighbour's value patches and spread differences, weigh per pixel."""
    b, c = values.shape[:2]
    h, w = edges.q_size
    k = edges.idx.shape[2]
    vp, _, _ = im2patch(values, patch, stride)
    nb = gather_rows(vp, edges.idx)  # b, m, k, f
    diff = edges.diff[..., None].expand(*edges.diff.shape, patch * patch).flatten(-2)
    maps = []
    for t in (nb, diff):
        per_k = [patch2im(t[:, :, r], c, edges.q_grid, edges.q_pads, patch, stride) for r in range(k)]
        maps.append(torch.stack(per_k, 1))  # b, k, c, h, w
    logits = torch.stack([block.weightnet_hr(maps[1][:, r]) for r in range(k)], 1)
    return (maps[0] * F.softmax(logits, dim=1)).sum(1)


@pytest.mark.parametrize("patch,stride", [(3, 3), (3, 1), (5, 5)])
def test_gcn_block_matches_per_pixel_reference(patch, stride):
    torch.manual_seed(4)
    graph = KNNGraph(8, k=3, patch=patch, stride=stride, window=6)
    block = GCNBlock(8, k=3, patch=patch, stride=stride)
    x, d = torch.rand(2, 3, 19, 14), torch.rand(2, 3, 10, 7)
    edges = graph(d, x)
    values = torch.randn(2, 8, 10, 7)
    out = block(values, edges)
    assert out.shape == (2, 8, 19, 14)
    torch.testing.assert_close(out, reference_gcn(block, values, edges, patch, stride), rtol=1e-5, atol=1e-5)


def test_shared_embedding_makes_the_query_its_own_nearest_neighbour():
    torch.manual_seed(5)
    x = torch.rand(1, 3, 60, 75)
    paper = KNNGraph(32, window=8)(x, x)
    m = paper.idx.shape[1]
    assert (paper.idx[0, :, 0] == torch.arange(m)).float().mean() > 0.99
    official = KNNGraph(32, window=8, window_align="official", shared_embedding=False)(x, x)
    assert (official.idx[0, :, 0] == torch.arange(m)).float().mean() < 0.5


def test_embedding_gradient_switch():
    torch.manual_seed(6)
    x = torch.rand(1, 3, 24, 24)
    for train in (True, False):
        graph, block = KNNGraph(8, window=30, train_embedding=train), GCNBlock(8)
        block(torch.randn(1, 8, 24, 24), graph(x, x)).sum().backward()
        assert all((p.grad is not None) == train for p in graph.embed_query.parameters())
        assert all(p.grad is None for p in graph.embed_db.parameters())  # shared: database CNN unused
        assert all(p.grad is not None for p in block.weightnet_hr.parameters())
