"""DCSFN re-implementation: official parameter count, sizes, output form, own loss, training.

The full model has 6.45M parameters and ~2,000 convolutions per training step, so tests that
only check structure use a 2-block model; count, shape and training tests use the official one
at 32-48 px, batch 1.
"""
from __future__ import annotations

import pytest
import torch

from baselines.dcsfn import DCSFN
from benchmark.training.losses import build_loss
from benchmark.core.registry import build_model
from benchmark.datasets.synth import make_batch
from tests.helpers.training import assert_loss_falls, loss_curve


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def official() -> DCSFN:
    torch.manual_seed(0)
    return build_model("dcsfn")


def test_parameter_count_matches_official(official: DCSFN) -> None:
    # reference/baselines.md section 4: GRU, c=20, 16 blocks, 4 scales
    assert isinstance(official, DCSFN)
    assert n_params(official) == 6_453_147
    # the two LSTM-only 1x1 fusions (2 x 820 weights) are part of that count
    assert n_params(build_model("dcsfn", official_unused=False)) == 6_453_147 - 2 * 820


def test_eval_returns_input_shape(official: DCSFN) -> None:
    official.eval()
    x = torch.rand(1, 3, 67, 45)  # odd, portrait
    with torch.no_grad():
        y = official(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("hw", [(40, 57), (33, 32), (45, 67)])
def test_eval_returns_input_shape_other_sizes(hw: tuple[int, int]) -> None:
    # sizes only meet the resizing/pooling code, which does not depend on the block count
    torch.manual_seed(0)
    model = build_model("dcsfn", blocks=2).eval()
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        assert model(x).shape == x.shape


def test_small_inputs_are_padded_or_rejected() -> None:
    torch.manual_seed(0)
    model = build_model("dcsfn", blocks=2).eval()
    with torch.no_grad():
        for hw in [(20, 33), (5, 3)]:  # reflect-padded; 5x3 is too small to reflect, replicate-padded
            assert model(torch.rand(1, 3, *hw)).shape == (1, 3, *hw)
    strict = build_model("dcsfn", blocks=2, small_input="error")
    with pytest.raises(ValueError, match=">= 32"):
        strict(torch.rand(1, 3, 31, 40))
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        strict(torch.rand(1, 4, 32, 32))


def test_padding_does_not_touch_inputs_of_32_or_more() -> None:
    torch.manual_seed(0)
    model = build_model("dcsfn", blocks=2).eval()
    x = torch.rand(1, 3, 32, 37)
    with torch.no_grad():
        torch.testing.assert_close(model(x), x - model.rain_map(x))


def test_train_mode_returns_one_image_with_gradients() -> None:
    torch.manual_seed(0)
    model = build_model("dcsfn", blocks=2).train()
    x = torch.rand(2, 3, 36, 33)
    y = model(x)
    assert isinstance(y, torch.Tensor) and y.shape == x.shape
    y.mean().backward()
    # Unused, as in the official code: the LSTM-only fusions, and in the two GRUs that start a
    # pass without a state, the reset gate and all state-to-state convolutions.
    stateless = ("gru_coarse_to_fine.2.", "gru_fine_to_coarse.0.")
    gates = ("conv_xr", "conv_hz", "conv_hr", "conv_hn")
    for name, p in model.named_parameters():
        unused = name.startswith("memory_fuse") or (name.startswith(stateless) and name.split(".")[2] in gates)
        assert (p.grad is None) == unused, name


def test_bgr_switch_only_permutes_colour_channels() -> None:
    torch.manual_seed(0)
    rgb = build_model("dcsfn", blocks=1).eval()
    bgr = build_model("dcsfn", blocks=1, channel_order="bgr").eval()
    bgr.load_state_dict(rgb.state_dict())
    x = torch.rand(1, 3, 32, 40)
    with torch.no_grad():
        torch.testing.assert_close(bgr(x), rgb(x.flip(1)).flip(1))


def test_own_loss_is_negative_zero_padded_ssim() -> None:
    rainy, clean = make_batch(2, 32, seed=2)
    model = build_model("dcsfn", blocks=1)
    torch.testing.assert_close(model.own_loss(clean, rainy, clean), torch.tensor(-1.0))
    loss = model.own_loss(rainy, rainy, clean)
    assert torch.isfinite(loss) and -1.0 < loss.item() < 0.0
    # the shared -SSIM uses the same zero-padded windows as the official cal_ssim
    torch.testing.assert_close(loss, build_loss("neg_ssim")(rainy, clean))


def _train_steps(model: DCSFN, steps: int) -> list[float]:
    return loss_curve(model, steps, lr=5e-4, batch=1, seed=3)  # official learning rate


def test_few_steps_reduce_own_loss_on_rain_synth() -> None:
    torch.manual_seed(0)
    assert_loss_falls(_train_steps(build_model("dcsfn", blocks=2), 6), window=2)


@pytest.mark.slow
def test_few_steps_reduce_own_loss_official_size(official: DCSFN) -> None:
    torch.manual_seed(0)
    assert_loss_falls(_train_steps(official, 6), window=2)
