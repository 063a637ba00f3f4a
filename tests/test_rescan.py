"""RESCAN re-implementation: official parameter counts, shapes, output forms, own loss, training."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from baselines.rescan import RESCAN
from benchmark.core.contract import stage_outputs
from benchmark.core.registry import build_model
from benchmark.datasets.synth import make_batch
from tests.helpers.training import assert_loss_falls, loss_curve, shared_loss


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# counts measured on the official code (reference/baselines.md, section 1)
@pytest.mark.parametrize("unit, expected", [("GRU", 149_823), ("LSTM", 197_367), ("RNN", 54_735), ("Conv", 28_695)])
def test_parameter_counts_match_official(unit: str, expected: int) -> None:
    assert n_params(build_model("rescan", unit=unit)) == expected


def test_builds_by_name_with_official_defaults() -> None:
    model = build_model("rescan")
    assert isinstance(model, RESCAN)
    assert model.stages == 4 and model.frame == "Full" and len(model.layers) == 5
    with pytest.raises(ValueError, match="rescan"):
        build_model("rescan", no_such_option=1)


@pytest.mark.parametrize("hw", [(67, 45), (45, 67), (33, 33), (7, 5)])
def test_eval_returns_input_shape(hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_model("rescan").eval()
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("frame", ["Full", "Add"])
def test_train_output_is_per_stage_derained_and_rain(frame: str) -> None:
    torch.manual_seed(0)
    model = build_model("rescan", frame=frame).train()
    x = torch.rand(2, 3, 24, 20)
    out = model(x)
    assert len(out["out"]) == 4 and len(out["rain"]) == 4
    for derained, rain in zip(out["out"], out["rain"]):
        assert derained.shape == x.shape
        torch.testing.assert_close(derained, x - rain)
    # the shared loss sees the derained estimates, last stage last
    assert stage_outputs(out)[-1] is out["out"][-1]
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), out["out"][-1].detach())


def test_own_loss_is_sum_of_stage_rain_mse() -> None:
    torch.manual_seed(0)
    model = build_model("rescan").train()
    rainy, clean = make_batch(2, 32, seed=1)
    out = model(rainy)
    loss = model.own_loss(out, rainy, clean)
    expected = sum(F.mse_loss(r, rainy - clean) for r in out["rain"])
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, expected)
    # derained stage images alone give the same value (R_s = O - derained_s)
    torch.testing.assert_close(model.own_loss(out["out"], rainy, clean), loss, rtol=1e-5, atol=1e-7)
    loss.backward()
    assert all(p.grad is not None for p in model.decoder.parameters())


def test_bgr_switch_only_permutes_colour_channels() -> None:
    torch.manual_seed(0)
    rgb = build_model("rescan").eval()
    bgr = build_model("rescan", channel_order="bgr").eval()
    bgr.load_state_dict(rgb.state_dict())
    x = torch.rand(1, 3, 20, 28)
    with torch.no_grad():
        torch.testing.assert_close(bgr(x), rgb(x.flip(1)).flip(1))


def test_rejects_wrong_channel_count() -> None:
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        build_model("rescan")(torch.rand(1, 1, 16, 16))


@pytest.mark.parametrize("loss_name", ["own", "neg_ssim"])
def test_few_steps_reduce_loss_on_rain_synth(loss_name: str) -> None:
    torch.manual_seed(0)
    model = build_model("rescan")
    loss = None if loss_name == "own" else shared_loss("neg_ssim", reduce="last")
    assert_loss_falls(loss_curve(model, 8, loss=loss, lr=1e-3, seed=3))
