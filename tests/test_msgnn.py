"""MSGNN model: official parameter counts, shapes, gradients, determinism, every builder switch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.training.losses import neg_ssim
from benchmark.core.registry import build_model
from msgnn.blocks import GCT, DenseChain
from msgnn.model import MSGNN, pyr_down
from tests.helpers.training import assert_loss_falls, loss_curve, shared_loss

OFFICIAL_GRAPH = dict(window_align="official", shared_embedding=False, train_embedding=False)
SMALL = dict(n_subnets=2, blocks=2)  # a two-sub-network, two-block model keeps the switch tests fast


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run(model: torch.nn.Module, x: torch.Tensor, ex: torch.Tensor | None = None) -> torch.Tensor:
    if model.needs_exemplar:
        return model(x, exemplar=x.flip(-1) if ex is None else ex)
    return model(x)


@pytest.mark.parametrize("overrides,count", [
    ({}, 2_061_579),  # released default: exemplar on, 1x1 fusion
    ({"fusion": "official"}, 2_061_579),  # the released pairing: 1x1 with the exemplar...
    ({"exemplar": False, "fusion": "official"}, 2_459_689),  # ...5x5 without: the paper's Table 1 "2.46M"
    ({"exemplar": False, "fusion": "5x5"}, 2_459_689),
    ({"exemplar": False}, 1_968_169),  # the exemplar ablation changes only the exemplar branch
    ({"exemplar": False, "n_subnets": 2, "fusion": "official"}, 1_547_625),  # the paper's Sec. 4.5 "1.55M"
    ({"n_subnets": 2}, 1_393_227),
    ({"n_subnets": 8}, 3_398_283),
    ({"graph": False}, 1_322_115),
    ({"graph": False, "channel_attention": "none"}, 1_317_507),
])
def test_parameter_counts_equal_the_official_model(overrides, count):
    assert n_params(build_model("msgnn", **overrides)) == count


def grads_after_backward(model: torch.nn.Module, size: int = 24) -> dict[str, bool]:
    torch.manual_seed(0)
    x = torch.rand(1, 3, size, size)
    neg_ssim(run(model.train(), x), x.flip(-2)).backward()
    return {n: p.grad is not None for n, p in model.named_parameters()}


def test_gradient_reaches_every_trainable_part_and_only_dead_modules_get_none():
    model = build_model("msgnn")
    got = grads_after_backward(model)
    dead = {n for n, has in got.items() if not has}
    expected_dead_prefixes = (
        [f"subnets.{i}.dense.11." for i in range(4)]  # last dense 1x1: computed by nobody
        + ["subnets.3.fusion.", "fuse.3."]  # the last sub-network's fusion output and fuse are discarded
        + [f"graphs.{b}.embed_db." for b in ("scale1", "scale2", "scale4", "exemplar")]  # shared embedding
        + [f"gcns.{b}.{m}." for b in ("scale1", "scale2", "scale4", "exemplar")
           for m in ("knn_downsample", "weightnet_lr")])
    assert dead == {n for n in got if n.startswith(tuple(expected_dead_prefixes))}
    live = sum(p.numel() for n, p in model.named_parameters() if got[n])
    assert live == 1_722_791


@pytest.mark.parametrize("overrides,effective", [
    (OFFICIAL_GRAPH, 1_645_223),  # reference/msgnn.md Sec. 3: 416,356 of 2,061,579 never get a gradient
    ({"exemplar": False, "fusion": "official", **OFFICIAL_GRAPH}, 1_918_246),
])
def test_official_graph_switches_reproduce_the_official_dead_weights(overrides, effective):
    model = build_model("msgnn", **overrides)
    got = grads_after_backward(model)
    assert sum(p.numel() for n, p in model.named_parameters() if got[n]) == effective


@pytest.mark.parametrize("hw,ex_hw", [((67, 45), (45, 67)), ((31, 20), (64, 64)), ((5, 3), (9, 9)), ((16, 48), (2, 1))])
def test_any_size_and_an_exemplar_of_another_size(hw, ex_hw):
    model = build_model("msgnn", n_subnets=2).eval()
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        y = model(x, exemplar=torch.rand(1, 3, *ex_hw))  # one exemplar shared by the batch
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_train_mode_returns_the_derained_image():
    model = build_model("msgnn", **SMALL).train()
    x = torch.rand(2, 3, 33, 27)
    y = model(x, exemplar=torch.rand(2, 3, 20, 40))
    assert y.shape == x.shape


@pytest.mark.parametrize("overrides", [{}, {"exemplar": False}, {"graph": False}])
def test_inference_path_equals_the_autograd_path(overrides):
    # without autograd, dense connections read a preallocated buffer (1x1 convs as GEMMs) and the graph
    # maps' share of each fuse conv is computed once; with it, the training path (channels_last on CPU)
    torch.manual_seed(1)
    model = build_model("msgnn", n_subnets=3, blocks=3, **overrides).eval()
    x, ex = torch.rand(2, 3, 29, 35), torch.rand(1, 3, 35, 29)
    with torch.no_grad():
        fast = run(model, x, ex)
    torch.testing.assert_close(fast, run(model, x, ex), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("stem", [False, True])
def test_dense_gradient_sums_equal_plain_autograd(layout, stem):
    # msgnn/dense.py reorders the backward of the dense 1x1 connections; it must give autograd's numbers
    torch.manual_seed(2)
    chain = DenseChain(8, 4, "none" if stem else "ct", fusion_connection=not stem, stem=stem).double()
    for p in chain.parameters():
        p.data.normal_(0, 0.3)
    x = torch.randn(2, 8, 7, 9, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    f = None if stem else torch.randn(2, 8, 7, 9, dtype=torch.float64, requires_grad=True)
    inputs = [x] + ([] if stem else [f]) + list(chain.parameters())
    results = []
    for fused in (True, False):
        chain.fused_grads = fused
        out, fus = chain(x, f)
        loss = out.sin().sum() + (0 if fus is None else fus.cos().sum())
        results.append((out, torch.autograd.grad(loss, inputs, allow_unused=True)))
    torch.testing.assert_close(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        assert (a is None) == (b is None)  # the last dense 1x1 of a sub-network is never run
        if a is not None:
            torch.testing.assert_close(a, b)


def test_gct_starts_as_the_identity_and_gates_per_channel():
    torch.manual_seed(3)
    x = torch.randn(2, 6, 5, 7)
    gct = GCT(6)
    torch.testing.assert_close(gct(x), x)  # gamma = beta = 0 at init
    for p in gct.parameters():
        p.data.normal_()
    ratio = gct(x) / x
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio), atol=1e-5)  # one gate per (image, channel)
    assert ((ratio >= 0) & (ratio <= 2)).all()  # 1 + tanh


def test_training_layouts_agree(monkeypatch):
    # CPU training runs channels_last; GPUs take the NCHW path: same numbers, gradients included
    torch.manual_seed(4)
    model = build_model("msgnn", n_subnets=2, blocks=2).train()
    x, ex = torch.rand(2, 3, 22, 19), torch.rand(2, 3, 19, 22)
    results = []
    for channels_last in (True, False):
        monkeypatch.setattr(MSGNN, "cpu_channels_last", channels_last)
        model.zero_grad()
        y = model(x, exemplar=ex)
        neg_ssim(y, x).backward()
        results.append((y.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_same_seed_same_output():
    x, ex = torch.rand(1, 3, 30, 26), torch.rand(1, 3, 26, 30)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = build_model("msgnn", **SMALL).eval()
        with torch.no_grad():
            outs.append(model(x, exemplar=ex))
            outs.append(model(x, exemplar=ex))
    assert all(torch.equal(outs[0], o) for o in outs[1:])


SWITCHES = [
    {"exemplar": False},
    {"exemplar": False, "fusion": "official"},  # 5x5 fusion, as the official guide=False path
    {"fusion": "5x5"},
    {"channel_attention": "se"},
    {"channel_attention": "eca"},
    {"channel_attention": "none"},
    {"fusion_connection": False},
    {"graph": False},
    {"fusion_connection": False, "channel_attention": "none", "graph": False},  # Table 2 M1
    {"k": 3}, {"k": 7},  # Table 5
    {"patch": 5, "stride": 5}, {"patch": 7, "stride": 3},  # Table 4
    {"stride": 1}, {"stride": 2},  # Table 3
    {"scales": [1]}, {"scales": [0.5, 0.25], "exemplar": False}, {"scales": []},  # Fig. 8
    {"window": 4},
    {"window_align": "official"}, {"shared_embedding": False}, {"train_embedding": False},
    {"official_unused": False},
    {"n_subnets": 1}, {"blocks": 1},  # Fig. 7 varies N
]


@pytest.mark.parametrize("overrides", SWITCHES, ids=[str(s) for s in SWITCHES])
def test_every_switch_builds_runs_and_trains(overrides):
    torch.manual_seed(0)
    model = build_model("msgnn", **{**SMALL, **overrides}).train()
    x = torch.rand(2, 3, 26, 21)
    y = run(model, x, torch.rand(2, 3, 17, 30))
    assert y.shape == x.shape and torch.isfinite(y).all()
    neg_ssim(y, x).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head.parameters())


@pytest.mark.parametrize("shared", [True, False])
def test_keep_unused_off_builds_only_what_gets_a_gradient(shared):
    model = build_model("msgnn", official_unused=False, shared_embedding=shared)
    got = grads_after_backward(model)
    assert all(got.values())
    unused = 4 * 13_344 + 12_320 + 6_208 + 4 * (44_128 + 3_201)
    if shared:  # the four database embedding CNNs (19,392 each) are left out too
        assert not any(hasattr(g, "embed_db") for g in model.graphs.values())
        assert n_params(model) == 2_061_579 - unused - 4 * 19_392 == 1_722_791
    else:
        assert n_params(model) == 2_061_579 - unused


def test_stride_one_on_a_64px_crop_trains_on_cpu():
    # the paper's Table 3 could not train s=1 at 64x64 ("out of our computer memory")
    torch.manual_seed(0)
    model = build_model("msgnn", stride=1).train()
    x = torch.rand(1, 3, 64, 64)
    y = model(x, exemplar=torch.rand(1, 3, 64, 64))
    neg_ssim(y, x).backward()
    assert y.shape == x.shape
    assert model.gcns["scale1"].weightnet_hr[0].weight.grad is not None


def test_a_few_steps_reduce_the_loss_on_rain_synth():
    torch.manual_seed(0)
    model = build_model("msgnn", n_subnets=1, blocks=2)
    assert_loss_falls(loss_curve(model, 12, loss=shared_loss(), exemplar=True))


def test_bad_input_is_named():
    model = build_model("msgnn", **SMALL)
    with pytest.raises(ValueError, match="RGB"):
        model(torch.rand(1, 1, 16, 16), exemplar=torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="exemplar"):
        model(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="exemplar"):
        model(torch.rand(2, 3, 16, 16), exemplar=torch.rand(3, 3, 16, 16))
    for bad in ({"channel_attention": "cbam"}, {"scales": [0.3]}, {"fusion": "3x3"}, {"stride": 4},
                {"window_align": "left"}):
        with pytest.raises(ValueError):
            build_model("msgnn", **bad)


def test_exemplar_flag_is_exposed_for_the_engine():
    assert build_model("msgnn").needs_exemplar is True
    assert build_model("msgnn", exemplar=False).needs_exemplar is False
    assert build_model("msgnn", graph=False).needs_exemplar is False


@pytest.mark.parametrize("hw", [(8, 8), (9, 14), (2, 5)])
def test_pyr_down_is_cv2_pyrdown(hw):
    ndimage = pytest.importorskip("scipy.ndimage")
    x = torch.rand(1, 2, *hw, dtype=torch.float64)
    g = np.array([1, 4, 6, 4, 1]) / 16
    ref = []
    for c in range(2):  # cv2.pyrDown = 5x5 binomial with BORDER_REFLECT_101 ('mirror'), then every other pixel
        blurred = ndimage.convolve(x[0, c].numpy(), np.outer(g, g), mode="mirror" if min(hw) >= 3 else "nearest")
        ref.append(blurred[::2, ::2])
    out = pyr_down(x)[0].numpy()
    assert out.shape == (2, (hw[0] + 1) // 2, (hw[1] + 1) // 2)
    np.testing.assert_allclose(out, np.stack(ref), atol=1e-12)
