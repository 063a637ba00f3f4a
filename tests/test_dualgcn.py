"""DualGCN (Fu et al., AAAI 2021): size, shapes, TF-checkpoint conventions, training signal."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from baselines.dualgcn import DualGCN
from benchmark.core.contract import count_params, effective_params
from benchmark.core.registry import build_model
from tests.helpers.training import assert_loss_falls, loss_curve, shared_loss

OFFICIAL_PARAMS = 2_731_071  # official model.py, = the 326 variables of model-Rain200H.index


def test_parameter_count_is_official():
    model = build_model("dualgcn")
    assert isinstance(model, DualGCN)
    assert count_params(model) == {"total": OFFICIAL_PARAMS, "trainable": OFFICIAL_PARAMS}
    assert effective_params(model, probe=8) == OFFICIAL_PARAMS


@pytest.mark.parametrize("h, w", [(67, 45), (45, 67)])
def test_any_shape_returns_input_shape(h, w):
    model = build_model("dualgcn").eval()
    x = torch.rand(1, 3, h, w)
    with torch.no_grad():
        assert model(x).shape == x.shape
    assert model.train()(x[..., :9, :7]).shape == (1, 3, 9, 7)


def test_bad_input_and_options_are_named():
    model = build_model("dualgcn", channels=8)
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        model(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match="init"):
        build_model("dualgcn", init="he")
    convs = [m for m in build_model("dualgcn", channels=8, init="tf").modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(torch.count_nonzero(m.bias) == 0 for m in convs)  # TF: zero biases, Glorot kernels
    glorot = (6 / (convs[1].weight[0].numel() + convs[1].weight[:, 0].numel())) ** 0.5
    assert convs[1].weight.abs().max() <= glorot and convs[1].weight.abs().max() > 0.9 * glorot


def test_tf_variable_names_follow_the_checkpoint_layout():
    model = build_model("dualgcn")
    names = model.tf_variable_names()
    params = dict(model.named_parameters())
    assert len(names) == 326 and len(set(names.values())) == 326 and set(names) == set(params)
    # spot checks against the variable list of the shipped model-Rain200H.index
    assert names["basic.f0.weight"] == "Generator/basic/conv2d/kernel"
    assert names["encoders.0.fuse.bias"] == "Generator/encoder0/conv2d_8/bias"  # 360 -> 72
    assert names["decoders.0.merge.weight"] == "Generator/decoder0/conv2d/kernel"  # 144 -> 72
    assert names["decoders.0.unit.cgcn.out.weight"] == "Generator/decoder0/conv2d_14/kernel"  # 18 -> 72
    assert names["reconstruct.out.weight"] == "Generator/reconstruct/conv2d_1/kernel"


# A literal NHWC re-statement of the official TF graph (tf.layers.conv2d 'SAME', HWIO kernels,
# row-major reshapes), used as the oracle for the weight-conversion conventions.
class _TFGraph:
    def __init__(self, variables: dict[str, np.ndarray]) -> None:
        self.v, self.scope, self.count = variables, "", 0

    def conv(self, x: torch.Tensor, cout: int, k: int = 1, d: int = 1, relu: bool = False) -> torch.Tensor:
        name = f"Generator/{self.scope}/conv2d" + (f"_{self.count}" if self.count else "")
        self.count += 1
        kern, bias = torch.from_numpy(self.v[name + "/kernel"]), torch.from_numpy(self.v[name + "/bias"])
        assert kern.shape[-1] == cout
        p = d * (k - 1) // 2
        xp = F.pad(x, (0, 0, p, p, p, p))
        h, w = x.shape[1:3]
        out = sum(xp[:, i * d:i * d + h, j * d:j * d + w, :] @ kern[i, j] for i in range(k) for j in range(k)) + bias
        return torch.relu(out) if relu else out

    def spatial(self, x):
        b, h, w, c = x.shape
        theta = self.conv(x, c // 2).reshape(b, h * w, c // 2)
        nu = self.conv(x, c // 2).reshape(b, -1).softmax(-1).reshape(b, h * w, c // 2)
        xi = self.conv(x, c // 2).reshape(b, -1).softmax(-1).reshape(b, h * w, c // 2)
        agg = (theta @ (nu.transpose(1, 2) @ xi)).reshape(b, h, w, c // 2)
        return self.conv(agg, c) + x

    def channel(self, x):
        b, h, w, c = x.shape
        cc, n = c // 2, c // 4
        zeta = self.conv(x, cc).reshape(b, -1, cc)
        kappa = self.conv(x, n).reshape(b, -1, n).transpose(1, 2)
        fc = (kappa @ zeta).reshape(b, n * cc).softmax(-1).reshape(b, 1, n, cc)
        fc = torch.relu(fc + self.conv(fc, cc)).permute(0, 3, 1, 2)  # [b, cc, 1, n]
        fc = self.conv(fc, n).reshape(b, cc, n)
        return self.conv((zeta @ fc).reshape(b, h, w, n), c) + x

    def unit(self, x):
        c = x.shape[-1]
        s = self.spatial(x)
        c1 = self.conv(s, c, 3, 1, True)
        c2 = self.conv(c1, c, 3, 1, True)
        c3 = self.conv(s, c, 3, 3, True)
        c4 = self.conv(c3, c, 3, 3, True)
        return self.channel(self.conv(torch.cat([s, c1, c2, c3, c4], -1), c, relu=True)) + x

    def enter(self, scope):
        self.scope, self.count = scope, 0

    def __call__(self, img, c):
        self.enter("basic")
        f0 = self.conv(img, c, 3)
        f1 = self.conv(f0, c, 3)
        enc, y = [], f1
        for k in range(5):
            self.enter(f"encoder{k}")
            y = self.unit(y)
            enc.append(y)
        self.enter("middle")
        y = self.unit(y)
        for k in reversed(range(5)):
            self.enter(f"decoder{k}")
            y = self.unit(self.conv(torch.cat([y, enc[k]], -1), c))
        self.enter("reconstruct")
        y = self.conv(torch.cat([y, f1], -1), c, 3, relu=True) + f0
        return img + self.conv(y, 3, 3)


def test_load_tf_variables_reproduces_the_tf_graph():
    c = 8  # same topology and names as the official 72-channel model, but fast
    model = build_model("dualgcn", channels=c).double().eval()
    rng = np.random.default_rng(0)
    variables = {}
    for ours, tf_name in model.tf_variable_names().items():
        shape = tuple(dict(model.named_parameters())[ours].shape)
        tf_shape = (shape[2], shape[3], shape[1], shape[0]) if len(shape) == 4 else shape
        fan_in = int(np.prod(tf_shape[:-1]))
        variables[tf_name] = rng.normal(0.0, 1.0 / np.sqrt(fan_in), size=tf_shape)  # float64
    model.load_tf_variables(variables)
    img = torch.rand(2, 11, 9, 3, dtype=torch.float64)  # NHWC, odd non-square
    with torch.no_grad():
        expected = _TFGraph(variables)(img, c)
        got = model(img.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    assert (expected - img).abs().mean() > 0.1  # the residual is far from zero, so the check bites
    assert torch.allclose(got, expected, atol=1e-9, rtol=1e-9)

    missing = dict(variables)
    del missing["Generator/middle/conv2d_5/kernel"]
    with pytest.raises(ValueError, match="1 missing: Generator/middle/conv2d_5/kernel"):
        model.load_tf_variables(missing)
    wrong = dict(variables, **{"Generator/basic/conv2d/bias": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="Generator/basic/conv2d/bias"):
        model.load_tf_variables(wrong)


def test_few_training_steps_reduce_shared_loss_on_rain_synth():
    torch.manual_seed(0)
    assert_loss_falls(loss_curve(build_model("dualgcn"), 8, loss=shared_loss()))  # shared settings
