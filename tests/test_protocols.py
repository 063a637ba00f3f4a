"""Named scoring protocols: each definition checked against an independent computation."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from benchmark.tools import cli, gate
from benchmark.training import losses
from benchmark.evaluation import metrics, protocols


def _pair(seed=0, shape=(40, 52, 3)):
    rng = np.random.default_rng(seed)
    target = (rng.random(shape) * 255).astype(np.uint8)
    # an output that overshoots [0, 1] a little, as unclamped networks do
    out = (target / 255.0 + rng.normal(0, 0.05, shape)).astype(np.float32)
    return out, target


def test_protocol_names_and_sources():
    assert protocols.ALL == ("matlab-y", "prenet", "msgnn", "skimage-default", "ntire-crop")
    assert all(p.source for p in protocols.PROTOCOLS.values())
    with pytest.raises(ValueError, match="unknown scoring protocol 'nope'"):
        protocols.get("nope")


def test_matlab_y_and_prenet_are_the_y_metrics_of_the_quantised_output():
    out, tgt = _pair()
    r = protocols.score_all(out, tgt)
    rounded = metrics.image_metrics(metrics.to_uint8(out, "round"), tgt, y_mode="uint8")
    truncated = metrics.image_metrics(metrics.to_uint8(out, "truncate"), tgt, y_mode="float")
    assert r["psnr:matlab-y"] == pytest.approx(rounded["psnr_y"], abs=1e-12)
    assert r["ssim:matlab-y"] == pytest.approx(rounded["ssim_y"], abs=1e-12)
    assert r["psnr:prenet"] == pytest.approx(truncated["psnr_y"], abs=1e-12)
    assert r["ssim:prenet"] == pytest.approx(truncated["ssim_y"], abs=1e-12)
    assert r["psnr:prenet"] != r["psnr:matlab-y"]


def test_msgnn_protocol_matches_its_eval_script():
    out, tgt = _pair(1)
    ps, ss = protocols.score(protocols.get("msgnn"), out, tgt)
    # config/eval.py: clip both to [0, 255] after x255, MSE of the /255 values, 20 log10(1 / sqrt(mse))
    a, b = np.clip(out.astype(np.float64) * 255, 0, 255) / 255.0, tgt / 255.0
    assert ps == pytest.approx(20 * math.log10(1 / math.sqrt(np.mean((a - b) ** 2))), abs=1e-9)
    # cal_ssim.SSIM: zero-padded depthwise Gaussian conv on the UNCLIPPED output
    x = torch.from_numpy(out.astype(np.float64)).permute(2, 0, 1)[None]
    y = torch.from_numpy(tgt / 255.0).permute(2, 0, 1)[None]
    assert ss == pytest.approx(float(losses.ssim(x, y, zero_pad=True)), abs=1e-10)
    clipped = float(losses.ssim(x.clamp(0, 1), y, zero_pad=True))
    assert abs(ss - clipped) > 1e-5  # the protocol really scores SSIM before clipping
    # identical images: the script returns 100, not inf
    black = np.zeros((16, 16, 3), np.uint8)
    assert protocols.score(protocols.get("msgnn"), black.astype(np.float32), black)[0] == 100.0


def test_skimage_default():
    out, tgt = _pair(2)
    r = protocols.score_all(out, tgt)
    a = np.clip(out.astype(np.float64), 0, 1)
    exp_ssim = structural_similarity(a, tgt / 255.0, win_size=7, channel_axis=-1, data_range=2.0,
                                     gaussian_weights=False, use_sample_covariance=True)
    assert r["ssim:skimage-default"] == pytest.approx(exp_ssim, abs=1e-12)
    assert r["psnr:skimage-default"] == pytest.approx(r["psnr:msgnn"], abs=1e-9)  # both RGB, unquantised
    # ntire-crop, prenet and matlab-y are checked against transcriptions of their sources on real pairs
    # in tests/test_protocol_sources.py


def test_bad_inputs_are_clear_errors():
    out, tgt = _pair()
    with pytest.raises(ValueError, match="differ in shape"):
        protocols.score_all(out[:-1], tgt)
    with pytest.raises(ValueError, match="uint8"):
        protocols.score_all(out, tgt.astype(np.float32))
    with pytest.raises(ValueError, match="too small"):
        protocols.score(protocols.get("ntire-crop"), out[:8, :8], tgt[:8, :8])


def test_gate_covers_protocol_keys():
    assert gate.tolerance("psnr:msgnn") == 0.05 and gate.tolerance("ssim:prenet") == 0.002
    assert gate.tolerance("seconds") is None and gate.tolerance("psnr_y") == 0.05


def test_official_prenet_under_prenet_protocol_reproduces_expected(shared, two_pairs, capsys):
    root = two_pairs
    w = shared / "official_weights/prenet/PReNet6_Rain100L.pth"
    code = cli.main(["evaluate", "--model", "prenet", "--official", str(w), "--data", str(root),
                     "--protocol", "prenet", "--json"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0 and list(res["protocols"]) == ["prenet"]
    expected = json.loads((shared / "official_weights/expected.json").read_text())["PReNet"]["Rain100L"]
    for got, exp in zip(res["per_image"], expected["per_image"][:2]):
        assert got["psnr:prenet"] == pytest.approx(exp["truncated_uint8"]["y_psnr"], abs=1e-6)
        assert got["ssim:prenet"] == pytest.approx(exp["truncated_uint8"]["y_ssim"], abs=1e-6)


def test_evaluate_protocol_matrix_and_unknown_name(shared, two_pairs, capsys):
    root = two_pairs
    code = cli.main(["evaluate", "--model", "input", "--data", str(root), "--protocol", "all"])
    out = capsys.readouterr().out
    assert code == 0
    assert all(n in out for n in protocols.ALL)
    code = cli.main(["evaluate", "--model", "input", "--data", str(root), "--protocol", "nope"])
    err = capsys.readouterr().err
    assert code == 1 and "unknown scoring protocol 'nope'" in err and "%|" not in err  # before any image


def test_gate_keys_runs_by_run_key(tmp_path):
    from benchmark.core import io

    for key, variant in (("msgnn-rain-synth", None), ("msgnn.m5-rain-synth-s0", "m5")):
        io.write_json(tmp_path / "eval" / key / "metrics.json",
                      {"model": "msgnn", "dataset": "rain-synth", "key": key, "variant": variant, "params_total": 1,
                       "results": {"rain-synth": {"psnr_y": 20.0, "psnr:msgnn": 19.0, "seconds": 1.0}}})
    now = gate.current(tmp_path)
    assert now["msgnn.m5-rain-synth-s0/rain-synth/psnr:msgnn"] == 19.0
    assert now["msgnn-rain-synth/rain-synth/psnr_y"] == 20.0 and "msgnn-rain-synth/rain-synth/seconds" not in now
