"""Faster recurrences (issue 28): the parallel IRNN scan and the joint-convolution ConvGRU compute
the same numbers as the step-by-step forms they replace."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from baselines.common import ConvGRUCell
from baselines.spanet import relu_scan
from benchmark.core.registry import build_model


def _weights(d: int, c: int, kind: str, dtype: torch.dtype) -> torch.Tensor:
    w = torch.empty(d, c, dtype=dtype).uniform_(-1.0, 1.0)
    if kind == "nonneg":
        w = w.abs()
    w[0, 0] = 0.0  # zero weights: each step is a constant map
    if c > 2:
        w[-1, 1] = 1.0  # |w| = 1: no decay, the longest memory
        w[-1, 2] = -1.0
    return w


def _scan_and_grads(x, w, b, scan, probe):
    h = relu_scan(x, w, b, scan)
    return (h, *torch.autograd.grad((h * probe).sum(), (x, w, b)))


@pytest.mark.parametrize("length", [1, 2, 3, 7, 64, 65])
@pytest.mark.parametrize("kind", ["mixed", "nonneg"])
def test_parallel_scan_equals_sequential_float32(length, kind):
    torch.manual_seed(length)
    x = torch.randn(length, 2, 3, 5, 6, requires_grad=True)
    w = _weights(2, 5, kind, torch.float32).requires_grad_()
    b = torch.randn(2, 5, requires_grad=True)
    probe = torch.randn(length, 2, 3, 5, 6)
    seq = _scan_and_grads(x, w, b, "sequential", probe)
    par = _scan_and_grads(x, w, b, "parallel", probe)
    assert (seq[0] > 0).any() and (seq[0] == 0).any()  # both branches of the ReLU occur
    for name, s, p in zip(("h", "grad x", "grad w", "grad b"), seq, par):
        # 1e-6 relative to the size of the values compared (sums over many steps reach ~10-100)
        tol = 1e-6 * max(1.0, s.abs().max().item())
        assert (s - p).abs().max().item() <= tol, name


@pytest.mark.parametrize("kind", ["mixed", "nonneg"])
def test_parallel_scan_equals_sequential_float64(kind):
    torch.manual_seed(1)
    x = torch.randn(33, 4, 2, 6, 3, dtype=torch.double, requires_grad=True)
    w = _weights(4, 6, kind, torch.double).requires_grad_()
    b = torch.randn(4, 6, dtype=torch.double, requires_grad=True)
    probe = torch.randn(33, 4, 2, 6, 3, dtype=torch.double)
    for s, p in zip(_scan_and_grads(x, w, b, "sequential", probe), _scan_and_grads(x, w, b, "parallel", probe)):
        torch.testing.assert_close(p, s, rtol=0, atol=1e-12)


def test_parallel_scan_gradcheck():
    torch.manual_seed(2)
    x = torch.randn(9, 2, 1, 3, 2, dtype=torch.double, requires_grad=True)
    w = torch.tensor([[0.5, -0.7, 0.0], [-1.0, 0.3, 0.9]], dtype=torch.double, requires_grad=True)
    b = torch.randn(2, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: relu_scan(*t, scan="parallel"), (x, w, b))


def test_spanet_scans_agree_and_switch_is_checked():
    torch.manual_seed(3)
    seq = build_model("spanet", irnn_scan="sequential")
    par = build_model("spanet", irnn_scan="parallel")
    par.load_state_dict(seq.state_dict())
    with torch.no_grad():  # mixed-sign recurrent weights exercise both families of the scan
        for m in (seq, par):
            torch.manual_seed(4)
            m.sam.irnn1.weight.uniform_(-1, 1)
            m.sam.irnn2.weight.uniform_(-1, 1)
    x = torch.rand(2, 3, 19, 23)
    out_s, out_p = seq.train()(x), par.train()(x)
    for key in ("out", "attention"):
        torch.testing.assert_close(out_p[key], out_s[key], rtol=1e-5, atol=1e-6)
    loss_s = (out_s["out"] ** 2).mean() + out_s["attention"].mean()
    loss_p = (out_p["out"] ** 2).mean() + out_p["attention"].mean()
    loss_s.backward()
    loss_p.backward()
    for (name, ps), pp in zip(seq.named_parameters(), par.parameters()):
        if ps.grad is not None:
            scale = max(1.0, ps.grad.abs().max().item())
            assert (ps.grad - pp.grad).abs().max().item() <= 1e-5 * scale, name
    with pytest.raises(ValueError, match="scan"):
        build_model("spanet", irnn_scan="fast")
    with pytest.raises(ValueError, match="scan"):
        relu_scan(x.new_zeros(2, 1, 1, 1, 1), x.new_zeros(1, 1), x.new_zeros(1, 1), "fast")


def _gru_six_convs(cell: ConvGRUCell, x: torch.Tensor, h: torch.Tensor | None) -> torch.Tensor:
    """The gate formulas with each of the six convolutions applied on its own."""
    if h is None:
        return torch.sigmoid(cell.conv_xz(x)) * torch.tanh(cell.conv_xn(x))
    z = torch.sigmoid(cell.conv_xz(x) + cell.conv_hz(h))
    r = torch.sigmoid(cell.conv_xr(x) + cell.conv_hr(h))
    n = torch.tanh(cell.conv_xn(x) + cell.conv_hn(r * h))
    return (1 - z) * h + z * n


@pytest.mark.parametrize("dilation", [1, 4])
def test_gru_joint_convolutions_equal_six_convolutions(dilation):
    torch.manual_seed(5)
    cell = ConvGRUCell(3, 8, 3, dilation).double()
    x = torch.randn(2, 3, 11, 9, dtype=torch.double, requires_grad=True)
    h = torch.randn(2, 8, 11, 9, dtype=torch.double, requires_grad=True)
    for state in (None, h):
        got, ref = cell(x, state), _gru_six_convs(cell, x, state)
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
        inputs = [x, *cell.parameters()] + ([h] if state is not None else [])
        g_got = torch.autograd.grad(got.square().sum(), inputs, allow_unused=True)
        g_ref = torch.autograd.grad(ref.square().sum(), inputs, allow_unused=True)
        for a, b in zip(g_got, g_ref):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert F.mse_loss(cell(x, h), cell(x, None)) > 0  # the state matters
