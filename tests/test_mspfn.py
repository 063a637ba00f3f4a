"""MSPFN (CVPR 2020): parameter counts, shape contract, TF-style alignment, own loss, training."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from baselines.mspfn import MSPFN, ConvLSTMCell, DownPReLU, UpPReLU, _pyr_down, laplacian
from benchmark.core.registry import build_model
from tests.helpers.training import assert_loss_falls, loss_curve


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def small() -> MSPFN:
    """A 1-iteration MSPFN: same layer types and wiring, cheap enough for CPU forward passes."""
    torch.manual_seed(0)
    return MSPFN(blocks=1, rcabs=(1, 1, 1))


def test_param_count_training_graph():
    # Table 1's 21.00M: the training graph model/MSPFN.py (M=17, RCABs 1/3/3). Built on the meta
    # device: shapes only, no memory or init time.
    with torch.device("meta"):
        assert n_params(build_model("mspfn")) == 20_995_776


def test_param_count_released_m17n1():
    with torch.device("meta"):
        assert n_params(build_model("mspfn", rcabs=(1, 1, 1))) == 15_823_424


def test_convlstm_zero_state_shortcut_matches_full_cell():
    """One step from h = c = 0 computed the full official way: conv over concat(x, h), gates i, j, f, o."""
    torch.manual_seed(0)
    cell = ConvLSTMCell(5, 6)
    torch.nn.init.normal_(cell.weight)
    torch.nn.init.normal_(cell.bias)
    x = torch.randn(2, 5, 9, 7)
    h = c = torch.zeros(2, 6, 9, 7)
    i, j, f, o = F.conv2d(torch.cat([x, h], 1), cell.weight, cell.bias, padding=1).chunk(4, 1)
    c_new = c * torch.sigmoid(f + 1.0) + torch.sigmoid(i) * torch.tanh(j)
    torch.testing.assert_close(cell(x), torch.tanh(c_new) * torch.sigmoid(o))


@pytest.mark.parametrize("hw", [(67, 45), (40, 24), (45, 67), (32, 32)])
def test_any_size_returns_input_shape(small: MSPFN, hw: tuple[int, int]):
    small.eval()
    x = torch.rand(1, 3, *hw)
    with torch.no_grad():
        y = small(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_gaussian_pyramid_switch():
    m = MSPFN(blocks=1, rcabs=(1, 1, 1), pyramid="gaussian").eval()
    for hw in [(21, 30), (4, 5)]:
        x = torch.rand(1, 3, *hw)
        with torch.no_grad():
            assert m(x).shape == x.shape
    flat = torch.full((1, 3, 16, 12), 0.3)
    torch.testing.assert_close(_pyr_down(flat), torch.full((1, 3, 8, 6), 0.3))
    with pytest.raises(ValueError, match="pyramid"):
        MSPFN(pyramid="laplace")


def test_full_model_forward_odd_size():
    """The real 17-iteration training graph runs end to end (about 2 s on one core)."""
    torch.manual_seed(0)
    m = build_model("mspfn").eval()
    x = torch.rand(1, 3, 23, 13)
    with torch.no_grad():
        assert m(x).shape == x.shape


def test_bad_input_errors(small: MSPFN):
    with pytest.raises(ValueError, match="3, H, W"):
        small(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match=">= 4"):
        small(torch.rand(1, 3, 3, 32))
    with pytest.raises(ValueError, match="channel_order"):
        MSPFN(channel_order="rbg")


def test_zero_rain_layer_is_identity_and_bgr_flip():
    """With a zero final conv the net predicts no rain, so the [0,1]<->[-1,1] BGR round trip must be exact."""
    m = MSPFN(blocks=1, rcabs=(1, 1, 1)).eval()
    torch.nn.init.zeros_(m.tail[1][0].weight)
    x = torch.rand(2, 3, 20, 28)
    with torch.no_grad():
        torch.testing.assert_close(m(x), x)
    # The network sees BGR in [-1, 1].
    torch.testing.assert_close(m._to_net(x)[:, 0], x[:, 2] * 2 - 1)


def test_stride2_ops_follow_tf_same_alignment():
    """TF 'SAME' stride-2 conv pads (0,1) on even sizes and (1,1) on odd ones; the transposed
    conv is its exact adjoint, which PyTorch's symmetric padding would not be."""
    torch.manual_seed(0)
    down, up = DownPReLU(4), UpPReLU(4, 4)
    for n in (8, 7):
        x = torch.randn(1, 4, n, n)
        pad = (0, 1, 0, 1) if n % 2 == 0 else (1, 1, 1, 1)
        ref = F.conv2d(F.pad(x, pad), down.conv.weight, stride=2)
        torch.testing.assert_close(down(x), down.act(ref))
        # Adjointness <conv(x), y> == <conv_T(y), x> pins the transposed-conv crop to the same grid.
        y = torch.randn_like(ref)
        # ConvTranspose2d weight [in, out, 3, 3] read as OIHW is the weight of its adjoint conv.
        conv_x = F.conv2d(F.pad(x, pad), up.conv.weight, stride=2)
        up_y = up.conv(y)[..., pad[0]:pad[0] + n, pad[2]:pad[2] + n]
        torch.testing.assert_close((conv_x * y).sum(), (up_y * x).sum(), rtol=1e-4, atol=1e-4)
        z = up(y, (n, n))
        assert z.shape[-2:] == (n, n)
        torch.testing.assert_close(z, up.act(up_y))


def test_init_conventions():
    m = MSPFN(blocks=1)
    assert all((p == 0).all() for mod in m.modules() if isinstance(mod, torch.nn.PReLU) for p in mod.parameters())
    assert m.coarse1.lstm.weight.shape == (4 * 256, 32 + 256, 3, 3)
    assert m.coarse1.lstm.weight.abs().max() <= 2e-3
    assert m.head1[0].bias is None and m.fine[0].unit1.up.conv.bias is None


def test_laplacian_matches_kernel():
    x = torch.zeros(1, 3, 5, 5)
    x[0, 1, 2, 2] = 1.0
    e = laplacian(x)
    assert e[0, 1, 2, 2] == 8.0 and e[0, 1, 1, 1] == -1.0 and e[0, 0].abs().sum() == 0


def test_own_loss_finite_and_official_scale(small: MSPFN):
    rainy, clean = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    small.train()
    loss = small.own_loss(small(rainy), rainy, clean)
    assert loss.ndim == 0 and torch.isfinite(loss)
    # Perfect output: both Charbonnier terms reduce to eps = 1e-3 (computed in [-1, 1] space).
    torch.testing.assert_close(small.own_loss(clean, rainy, clean), torch.tensor(1.05e-3))


def test_training_reduces_loss_on_rain_synth():
    torch.manual_seed(0)
    assert_loss_falls(loss_curve(MSPFN(blocks=1, rcabs=(1, 1, 1)), 8, batch=1))
