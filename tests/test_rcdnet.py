"""RCDNet (Wang et al., CVPR 2020): size, tied parameters, shapes, unused official parameters, kernel init,
training."""
from __future__ import annotations

import pytest
import torch

from baselines.rcdnet import RCDNet, rain_kernels, streak_kernel
from benchmark.core.contract import count_params, effective_params
from benchmark.core.registry import build_model
from tests.helpers.training import assert_loss_falls, loss_curve


@pytest.fixture(scope="module")
def model() -> RCDNet:
    torch.manual_seed(0)
    return build_model("rcdnet")


def test_parameter_count_is_official(model: RCDNet):
    assert isinstance(model, RCDNet) and model.stages == 17 and model.tied
    # the official sum(p.numel()), which counts every expanded view of a tied tensor
    assert count_params(model) == {"total": 3_166_355, "trainable": 3_166_355}
    # Without what the official code allocates but never uses: 15 kernel copies (116,640),
    # one M-net (74,528), one step size. Equals the count of the authors' RCDNet_simple.
    lean = build_model("rcdnet", official_unused=False)
    assert count_params(lean)["total"] == 2_975_186


def test_tied_default_trains_only_the_free_parameters(model: RCDNet):
    """Tied as trained: one kernel for C0 and C (7,776), one eta_M, one eta_B, one tau per M-net,
    one 3x3 Z filter. Untied: C0 and C apart (+7,776), 16 + 16 + 1 step sizes (+31), 32 taus per
    used M-net (+17 x 31), 32x3 Z filters (+855): 9,189 more free parameters."""
    assert sum(p.numel() for p in model.parameters()) == 3_040_494  # stored (unused M-net included)
    assert effective_params(model, probe=10) == 2_965_997
    untied = build_model("rcdnet", tied=False)
    assert count_params(untied) == count_params(model)
    assert effective_params(untied, probe=10) == 2_975_186
    assert effective_params(build_model("rcdnet", official_unused=False), probe=10) == 2_965_997
    assert {n for n, _ in untied.named_parameters()} - {n for n, _ in model.named_parameters()} == {
        "kernel0", "eta_b0", "unused_kernel_copies", "unused_eta_m0"}


def _tied_values_untied_model(stages: int) -> RCDNet:
    """An untied model whose views hold the values a tied model would (as in an official checkpoint)."""
    torch.manual_seed(1)
    untied = RCDNet(stages=stages, tied=False)
    with torch.no_grad():
        untied.kernel.mul_(torch.rand_like(untied.kernel) + 0.5)
        untied.kernel0.copy_(untied.kernel)
        untied.unused_kernel_copies.copy_(untied.kernel.expand_as(untied.unused_kernel_copies))
        untied.eta_m.fill_(1.7), untied.unused_eta_m0.fill_(1.7), untied.eta_b.fill_(4.2), untied.eta_b0.fill_(4.2)
        untied.z_filter.copy_(torch.rand(1, 1, 3, 3).expand_as(untied.z_filter))
        for net in list(untied.m_nets) + [untied.unused_m_net]:
            net.tau.fill_(torch.rand(()).item())
    return untied


def test_tied_equals_untied_for_equal_weights():
    untied = _tied_values_untied_model(stages=3)
    tied = RCDNet(stages=3)
    tied.load_state_dict(untied.state_dict(), strict=True)  # the untied layout collapses to one tensor each
    assert tied.eta_b.shape == (1,) and tied.z_filter.shape == (1, 1, 3, 3) and tied.m_nets[0].tau.numel() == 1
    x = torch.rand(1, 3, 13, 11)
    for m in (tied, untied):
        m.eval()
    with torch.no_grad():
        torch.testing.assert_close(tied(x), untied(x))
    # train mode: the tied kernel's gradient is the sum of the gradients of its untied uses
    tied.train(), untied.train()
    for m in (tied, untied):
        sum(t.sum() for t in m(x)["out"]).backward()
    torch.testing.assert_close(tied.kernel.grad, untied.kernel0.grad + untied.kernel.grad, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(tied.eta_b.grad, untied.eta_b0.grad + untied.eta_b.grad.sum(0), rtol=1e-4, atol=1e-3)
    assert untied.unused_kernel_copies.grad is None


def test_tied_model_refuses_untied_weights_that_differ():
    untied = _tied_values_untied_model(stages=3)
    with torch.no_grad():
        untied.eta_m[1] += 1
    with pytest.raises(ValueError, match="eta_m"):
        RCDNet(stages=3).load_state_dict(untied.state_dict())


@pytest.mark.parametrize("h, w", [(67, 45), (45, 67), (1, 1)])
def test_any_shape_returns_input_shape(model: RCDNet, h, w):
    model.eval()
    x = torch.rand(1, 3, h, w)
    with torch.no_grad():
        y = model(x)
    assert isinstance(y, torch.Tensor) and y.shape == x.shape and torch.isfinite(y).all()


def test_train_mode_outputs(model: RCDNet):
    model.train()
    x = torch.rand(1, 3, 17, 12)
    out = model(x)
    assert set(out) == {"out", "b0", "rain"}
    assert len(out["out"]) == 18 and len(out["rain"]) == 17  # 17 stages + the final net
    assert all(t.shape == x.shape for t in out["out"] + out["rain"] + [out["b0"]])
    small = RCDNet(stages=2).train()(x)
    assert len(small["out"]) == 3 and len(small["rain"]) == 2


@pytest.mark.parametrize("tied", [True, False])
def test_unused_official_parameters_do_not_change_outputs(tied):
    torch.manual_seed(0)
    full = RCDNet(stages=3, tied=tied).eval()
    lean = RCDNet(stages=3, official_unused=False, tied=tied).eval()
    state = {k: v for k, v in full.state_dict().items() if not k.startswith("unused_")}
    lean.load_state_dict(state, strict=True)
    x = torch.rand(1, 3, 13, 11)
    with torch.no_grad():
        torch.testing.assert_close(lean(x), full(x))


def test_works_on_the_0_255_scale_internally():
    """The official net sees [0,255]: B0's Z init and thresholds are scale-dependent, so the model
    must scale our [0,1] input by 255 and its outputs back."""
    torch.manual_seed(0)
    m = RCDNet(stages=2).train()
    x = torch.rand(1, 3, 9, 9)
    out = m(x)
    z0 = torch.nn.functional.conv2d(x * 255, m.z_filter.expand(32, 3, 3, 3), padding=1)
    ref_b0 = m.x_init(torch.cat((x * 255, z0), 1))[:, :3]
    torch.testing.assert_close(out["b0"], ref_b0 / 255)


def test_rain_kernel_initialisation():
    k = rain_kernels()
    assert k.shape == (3, 32, 9, 9)
    assert torch.equal(k[0], k[1]) and torch.equal(k[0], k[2])  # identical colour rows
    assert torch.equal(k, rain_kernels())  # fixed seed: the same init on every build
    sums = k[0].sum(dim=(1, 2))
    assert (sums > 0).all() and (sums <= 1).all() and sums.std() > 0.1  # scaled, not sum-1
    # Vertical streaks: more spread along y than along x, symmetric, peak in the centre.
    c = k[0]
    ys = torch.arange(-4, 5, dtype=torch.float32)
    var_y = (c.sum(2) * ys**2).sum(1) / c.sum((1, 2))
    var_x = (c.sum(1) * ys**2).sum(1) / c.sum((1, 2))
    assert (var_y > var_x).all()
    assert torch.equal(c, c.flip(1)) and torch.equal(c, c.flip(2))
    assert torch.equal(c[:, 4, 4], c.amax(dim=(1, 2)))
    # The MATLAB-script kernel itself is sum-1 and flat over its core.
    s = streak_kernel(9, long=4.0, plateau=1, std=0.5)
    assert s.sum().item() == pytest.approx(1.0) and s[3:6, 3:6].unique().numel() == 1


def test_own_loss_weights_on_0_255_scale():
    clean = torch.rand(1, 3, 8, 8)
    rainy = (clean + 0.1).clamp(max=1)
    rain = rainy - clean
    outputs = {"out": [clean] * 18, "b0": clean, "rain": [rain] * 17}
    m = RCDNet(stages=17, official_unused=False)
    assert m.own_loss(outputs, rainy, clean).item() == pytest.approx(0.0, abs=1e-9)
    # Off by 1/255 (one grey level) everywhere in the final estimate only: its MSE weight is 1.
    outputs["out"] = [clean] * 17 + [clean + 1 / 255]
    assert m.own_loss(outputs, rainy, clean).item() == pytest.approx(1.0, rel=1e-4)
    # ...and in the last rain layer: 0.1 (stage term) + 0.9 (final term).
    outputs = {"out": [clean] * 18, "b0": clean, "rain": [rain] * 16 + [rain + 1 / 255]}
    assert m.own_loss(outputs, rainy, clean).item() == pytest.approx(1.0, rel=1e-4)
    with pytest.raises(ValueError, match="b0"):
        m.own_loss(clean, rainy, clean)


def test_bad_input_is_named(model: RCDNet):
    with pytest.raises(ValueError, match="3"):
        model(torch.rand(1, 4, 16, 16))
    with pytest.raises(ValueError, match="stage"):
        RCDNet(stages=0)


def test_few_training_steps_reduce_own_loss_on_rain_synth():
    torch.manual_seed(0)
    model = build_model("rcdnet")
    assert_loss_falls(loss_curve(model, 8, lr=1e-3, batch=1, size=24))  # official learning rate
