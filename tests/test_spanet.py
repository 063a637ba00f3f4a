"""SPANet (Wang et al., CVPR 2019): size, IRNN scan, switches, training signal, official outputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from baselines.spanet import DIRECTIONS, IRNN, SPANet, from_official, official_to_ours
from benchmark.core.contract import count_params, effective_params
from benchmark.core.registry import build_model
from tests.helpers.training import assert_loss_falls, loss_curve

SHARED = Path(__file__).resolve().parents[2] / "shared"
WEIGHTS = SHARED / "official_weights" / "spanet" / "SPANet_SPA.pth"
EXPECTED = SHARED / "official_weights" / "expected.json"
IMAGES = SHARED / "data" / "RealWorld_Internet147" / "real_input"
needs_shared = pytest.mark.skipif(not (WEIGHTS.is_file() and EXPECTED.is_file() and IMAGES.is_dir()),
                                  reason=f"shared official SPANet weights/fixtures not found under {SHARED}")


def test_parameter_count_is_official():
    model = build_model("spanet")
    assert isinstance(model, SPANet)
    assert count_params(model) == {"total": 283_716, "trainable": 283_716}
    assert count_params(build_model("spanet", direction_attention=True))["total"] == 283_716
    # The official direction-attention branch (7,012 weights) gets no gradient unless switched on.
    assert effective_params(model, probe=12) == 283_716 - 7_012
    assert effective_params(build_model("spanet", direction_attention=True), probe=12) == 283_716


def _reference_irnn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Pixel-by-pixel statement of the official CUDA kernel: each direction starts at its border
    with relu(x) (no bias), then h = relu(w*h_prev + b + x)."""
    wd, bd = dict(zip(DIRECTIONS, weight)), dict(zip(DIRECTIONS, bias))

    def scan(seq, d):
        out = [seq[0].relu()]
        for s in seq[1:]:
            out.append((out[-1] * wd[d][None, :, None] + bd[d][None, :, None] + s).relu())
        return out

    rows = [x[:, :, i] for i in range(x.shape[2])]
    cols = [x[..., j] for j in range(x.shape[3])]
    res = {
        "from_top": torch.stack(scan(rows, "from_top"), 2),
        "from_bottom": torch.stack(scan(rows[::-1], "from_bottom")[::-1], 2),
        "from_left": torch.stack(scan(cols, "from_left"), 3),
        "from_right": torch.stack(scan(cols[::-1], "from_right")[::-1], 3),
    }
    return tuple(res[d] for d in DIRECTIONS)


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 2, 6, 6), (1, 2, 1, 4)])
def test_irnn_scan_matches_official_recurrence_and_gradients(shape):
    torch.manual_seed(0)
    irnn = IRNN(shape[1]).double()
    with torch.no_grad():
        irnn.weight.uniform_(-1.0, 1.0)  # also negative weights: every branch of the ReLU
    x = torch.randn(*shape, dtype=torch.double, requires_grad=True)
    got, ref = irnn(x), _reference_irnn(x, irnn.weight, irnn.bias)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=0, atol=1e-12)
    # Hand-written backward vs autograd through the reference, for input, weights and biases.
    probe = [torch.randn_like(r) for r in ref]
    params = [x, irnn.weight, irnn.bias]
    g_got = torch.autograd.grad(sum((g * p).sum() for g, p in zip(got, probe)), params)
    g_ref = torch.autograd.grad(sum((r * p).sum() for r, p in zip(ref, probe)), params)
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: torch.cat([o.flatten() for o in irnn(t)]), (x,))


@pytest.mark.parametrize("h, w", [(67, 45), (45, 67), (1, 1)])
def test_any_shape_returns_input_shape(h, w):
    model = build_model("spanet").eval()
    x = torch.rand(1, 3, h, w)
    with torch.no_grad():
        y = model(x)
    assert isinstance(y, torch.Tensor) and y.shape == x.shape


def test_train_mode_returns_image_and_first_attention_map():
    model = build_model("spanet").train()
    x = torch.rand(2, 3, 20, 13)
    out = model(x)
    assert set(out) == {"out", "attention"}
    assert out["out"].shape == x.shape and out["attention"].shape == (2, 1, 20, 13)
    assert ((out["attention"] > 0) & (out["attention"] < 1)).all()


def test_direction_attention_switch():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 16, 12)
    model = build_model("spanet").eval()
    with torch.no_grad():
        before = model(x)
        for p in model.sam.dir_weights.parameters():
            p.normal_()
        assert torch.equal(model(x), before)  # official behaviour: the branch has no effect
        model.sam.direction_attention = True
        assert not torch.allclose(model(x), before)


def test_channel_order_bgr_runs_the_network_on_flipped_channels():
    torch.manual_seed(0)
    rgb = build_model("spanet").eval()
    bgr = build_model("spanet", channel_order="bgr").eval()
    bgr.load_state_dict(rgb.state_dict())
    x = torch.rand(1, 3, 14, 10)
    with torch.no_grad():
        torch.testing.assert_close(bgr(x), rgb(x.flip(1)).flip(1))
    with pytest.raises(ValueError, match="channel_order"):
        SPANet(channel_order="bgra")


def test_bad_input_is_named():
    model = build_model("spanet")
    with pytest.raises(ValueError, match="3"):
        model(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match="SPANet"):
        model(torch.rand(3, 16, 16))


def test_own_loss_terms():
    model = build_model("spanet")
    clean = torch.rand(1, 3, 12, 12)
    rainy = clean.clone()
    rainy[:, 1, 2:5, 3] += 0.2  # rain in one channel only still marks the pixel
    mask = torch.zeros(1, 1, 12, 12)
    mask[:, :, 2:5, 3] = 1
    perfect = {"out": clean, "attention": mask}
    assert model.own_loss(perfect, rainy, clean).item() == pytest.approx(0.0, abs=1e-6)
    half = {"out": clean, "attention": torch.full_like(mask, 0.5)}
    assert model.own_loss(half, rainy, clean).item() == pytest.approx(0.25, abs=1e-6)
    with pytest.raises(ValueError, match="attention"):
        model.own_loss(clean, rainy, clean)


def test_few_training_steps_reduce_own_loss_on_rain_synth():
    torch.manual_seed(0)
    model = build_model("spanet")
    assert_loss_falls(loss_curve(model, 10, lr=5e-4, batch=2, size=32))


@needs_shared
def test_from_official_round_trip_and_errors(tmp_path):
    ckpt = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert set(ckpt) == {"net", "clock", "opt"} and ckpt["clock"] == 40000
    model = from_official(WEIGHTS).eval()
    assert model.channel_order == "bgr"
    assert sum(v.numel() for v in official_to_ours(ckpt["net"]).values()) == 283_716
    fresh = SPANet(channel_order="bgr").eval()
    fresh.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 21, 17)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    # A bare state_dict with an nn.DataParallel prefix loads to the same weights.
    torch.save({f"module.{k}": v for k, v in ckpt["net"].items()}, tmp_path / "dp.pth")
    assert torch.equal(from_official(tmp_path / "dp.pth").sam.irnn1.weight, model.sam.irnn1.weight)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        from_official(tmp_path / "nope.pth")
    partial = dict(ckpt["net"])
    del partial["SAM1.irnn2.left_weight.bias"]
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"partial\.pth.*left_weight\.bias"):
        from_official(tmp_path / "partial.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        from_official(tmp_path / "junk.pth")


def _official_numbers(model: SPANet, name: str) -> tuple[float, float]:
    """Official test protocol (main.py): the image as read (no channel swap, the network sees
    BGR; from_official handles that for our RGB tensors), /255 float32, full image, output
    clipped to [0,1] and rounded to uint8 when written."""
    rgb = np.array(Image.open(IMAGES / name).convert("RGB"))
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    with torch.inference_mode():
        out = model(x)[0].permute(1, 2, 0).double().numpy()
    u8 = np.rint(np.clip(out, 0.0, 1.0) * 255.0)
    return float(np.abs(u8 - rgb).mean()), float(out.mean())


def _check_images(names: list[str]) -> None:
    expected = {r["image"]: r for r in json.loads(EXPECTED.read_text())["SPANet"]["RealWorld_Internet147"]["per_image"]}
    model = from_official(WEIGHTS).eval()
    for name in names:
        mad, mean = _official_numbers(model, name)
        assert mad == pytest.approx(expected[name]["mean_abs_diff_u8"], abs=0.05), name
        assert mean == pytest.approx(expected[name]["out_float_mean"], abs=1e-5), name  # raw output mean


@needs_shared
def test_official_weights_reproduce_official_output_one_image():
    _check_images(["9.jpg"])  # the smallest of images 1-10 (550x364)


@needs_shared
@pytest.mark.slow
def test_official_weights_reproduce_official_outputs_images_1_to_10():
    _check_images([f"{i}.jpg" for i in range(1, 11)])
