"""RCDNet (Wang et al., CVPR 2020): size, shapes, unused official parameters, kernel init, training."""
from __future__ import annotations

import pytest
import torch

from baselines.rcdnet import RCDNet, rain_kernels, streak_kernel
from benchmark.metrics import count_params, effective_params
from benchmark.registry import build_model
from tests.training import assert_loss_falls, loss_curve


@pytest.fixture(scope="module")
def model() -> RCDNet:
    torch.manual_seed(0)
    return build_model("rcdnet")


def test_parameter_count_is_official(model: RCDNet):
    assert isinstance(model, RCDNet) and model.stages == 17
    assert count_params(model) == {"total": 3_166_355, "trainable": 3_166_355}
    # Without what the official code allocates but never uses: 15 kernel copies (116,640),
    # one M-net (74,528), one step size. Equals the count of the authors' RCDNet_simple.
    lean = build_model("rcdnet", official_unused_params=False)
    assert count_params(lean)["total"] == 2_975_186
    assert effective_params(model, probe=10) == 2_975_186


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


def test_unused_official_parameters_do_not_change_outputs():
    torch.manual_seed(0)
    full = RCDNet(stages=3).eval()
    lean = RCDNet(stages=3, official_unused_params=False).eval()
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
    ref_b0 = m.x_init(torch.cat((x * 255, torch.nn.functional.conv2d(x * 255, m.z_filter, padding=1)), 1))[:, :3]
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
    m = RCDNet(stages=17, official_unused_params=False)
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
