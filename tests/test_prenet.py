"""PReNet (Ren et al., CVPR 2019): size, shapes, training signal, official-checkpoint equality."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from baselines.prenet import PReNet, from_official, official_to_ours, ours_to_official
from benchmark.training.losses import ssim as ssim_same_padding
from benchmark.core.contract import count_params, effective_params
from benchmark.evaluation.metrics import psnr_y, ssim_y, to_uint8
from benchmark.core.registry import build_model
from tests.helpers.training import assert_loss_falls, loss_curve

SHARED = Path(__file__).resolve().parents[2] / "shared"
WEIGHTS = SHARED / "official_weights" / "prenet"
EXPECTED = SHARED / "official_weights" / "expected.json"
needs_shared = pytest.mark.skipif(not (WEIGHTS.is_dir() and EXPECTED.is_file()),
                                  reason=f"shared official weights/fixtures not found under {SHARED}")


def test_parameter_count_is_official():
    model = build_model("prenet")
    assert isinstance(model, PReNet) and model.stages == 6
    assert count_params(model) == {"total": 168_963, "trainable": 168_963}
    assert effective_params(model, probe=16) == 168_963  # every weight is used in forward


@pytest.mark.parametrize("h, w", [(67, 45), (45, 67), (1, 1)])
def test_any_shape_eval_returns_final_image(h, w):
    model = build_model("prenet").eval()
    x = torch.rand(1, 3, h, w)
    with torch.no_grad():
        y = model(x)
    assert isinstance(y, torch.Tensor) and y.shape == x.shape


def test_train_mode_returns_six_stage_estimates():
    model = build_model("prenet").train()
    x = torch.rand(2, 3, 24, 20)
    out = model(x)
    assert isinstance(out, list) and len(out) == 6
    assert all(o.shape == x.shape for o in out)
    assert len(build_model("prenet", stages=3).train()(x)) == 3


def test_bad_input_is_named():
    model = build_model("prenet")
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        model(torch.rand(1, 4, 16, 16))
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        model(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="stage"):
        PReNet(stages=0)


def test_own_loss_is_negative_ssim_of_final_stage_only():
    torch.manual_seed(0)
    clean = torch.rand(1, 3, 20, 20)
    rainy = torch.rand(1, 3, 20, 20)
    model = build_model("prenet")
    assert model.own_loss([rainy] * 5 + [clean], rainy, clean).item() == pytest.approx(-1.0, abs=1e-6)
    # earlier stages do not enter the official loss
    assert model.own_loss([clean] * 5 + [rainy], rainy, clean).item() == pytest.approx(
        -ssim_same_padding(rainy, clean).item(), abs=1e-7)
    # A 1x1 image: the zero-padded window sees only its centre tap w0 = (1 / sum_k g_k)^2, so the
    # SSIM terms are closed-form; this pins the official zero-padding ('same') convention.
    w0 = (1.0 / sum(math.exp(-k * k / (2 * 1.5**2)) for k in range(-5, 6))) ** 2
    a, b, c1, c2 = 0.4, 0.6, 1e-4, 9e-4
    mu_a, mu_b = a * w0, b * w0
    va, vb, cov = a * a * w0 - mu_a**2, b * b * w0 - mu_b**2, a * b * w0 - mu_a * mu_b
    by_hand = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    got = ssim_same_padding(torch.full((1, 1, 1, 1), a), torch.full((1, 1, 1, 1), b)).item()
    assert got == pytest.approx(by_hand, rel=1e-5)


def test_few_training_steps_reduce_own_loss_on_rain_synth():
    torch.manual_seed(0)
    model = build_model("prenet")
    assert_loss_falls(loss_curve(model, 12, lr=1e-3, batch=2, size=32))  # official learning rate


@needs_shared
@pytest.mark.parametrize("name", ["PReNet6_Rain100L.pth", "PReNet6_Rain100H.pth"])
def test_from_official_round_trip(name):
    path = WEIGHTS / name
    original = torch.load(path, map_location="cpu", weights_only=True)
    model = from_official(path)
    back = ours_to_official(model.state_dict())
    assert back.keys() == original.keys()
    assert all(torch.equal(back[k], original[k]) for k in original)
    assert sum(v.numel() for v in official_to_ours(original).values()) == 168_963


@needs_shared
def test_from_official_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        from_official(tmp_path / "nope.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes((WEIGHTS / "PReNet6_Rain100L.pth").read_bytes()[:5000])
    with pytest.raises(ValueError, match="corrupt.pth"):
        from_official(corrupt)
    state = torch.load(WEIGHTS / "PReNet6_Rain100L.pth", map_location="cpu", weights_only=True)
    partial = dict(state)
    del partial["conv_f.0.weight"]
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"partial\.pth.*conv_f\.0\.weight"):
        from_official(tmp_path / "partial.pth")
    wrong = dict(state, **{"conv.0.bias": torch.zeros(4)})
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match=r"wrong\.pth.*to_image\.bias"):
        from_official(tmp_path / "wrong.pth")
    # nn.DataParallel checkpoints carry a 'module.' prefix; they load too
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.pth")
    assert torch.equal(from_official(tmp_path / "dp.pth").fuse.weight, state["conv0.0.weight"])


def _read(path: Path) -> np.ndarray:
    # PIL gives the same RGB bytes as the official cv2.imread + BGR->RGB
    return np.array(Image.open(path).convert("RGB"))


@needs_shared
def test_official_weights_reproduce_official_outputs_rain100l():
    """Images 1-10 of Rain100L with the official weights: the numbers the official network gives.

    Official test protocol: full image, RGB in [0, 1] float32, output clamped to [0, 1] and stored
    as uint8 by truncation. expected.json's Y metrics follow PReNet's MATLAB statistic script
    (rgb2ycbcr of the double image, no rounding of Y), i.e. y_mode="float".
    """
    data = SHARED / "data" / "Rain100L_test"
    if not data.is_dir():
        pytest.skip(f"fixtures not found at {data}")
    expected = json.loads(EXPECTED.read_text())["PReNet"]["Rain100L"]["per_image"]
    model = from_official(WEIGHTS / "PReNet6_Rain100L.pth").eval()
    for row in expected[:10]:
        rainy, clean = _read(data / "input" / row["image"]), _read(data / "target" / row["image"])
        x = torch.from_numpy(rainy).permute(2, 0, 1)[None].float() / 255.0
        with torch.inference_mode():
            out = model(x).clamp(0.0, 1.0)
        assert out.mean().item() == pytest.approx(row["out_float_mean"], abs=1e-6), row["image"]
        for mode, key in (("truncate", "truncated_uint8"), ("round", "rounded_uint8")):
            u8 = to_uint8(out[0], mode)
            assert psnr_y(u8, clean, y_mode="float") == pytest.approx(row[key]["y_psnr"], abs=0.01), (row["image"], mode)
            assert ssim_y(u8, clean, y_mode="float") == pytest.approx(row[key]["y_ssim"], abs=1e-4), (row["image"], mode)
