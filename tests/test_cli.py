"""The msgnn-bench command line: models, evaluate, derain and their errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from benchmark.tools import cli
from benchmark.data import loading as data
from benchmark.evaluation import metrics


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_models_json_lists_exact_counts(capsys):
    code, out, _ = run(capsys, "models", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0
    assert rows["prenet"]["params_total"] == 168963 == rows["prenet"]["params_trainable"]
    assert rows["input"]["params_total"] == 0


def test_evaluate_input_row_on_real_fixture(shared, capsys):
    code, out, _ = run(capsys, "evaluate", "--model", "input", "--data", str(shared / "data/Rain100L_test"), "--json")
    res = json.loads(out)
    assert code == 0 and res["n_images"] == 20 and res["model"] == "input"
    # independent check of image 1: Y of MATLAB rgb2ycbcr on uint8, skimage PSNR
    y = [np.round(16 + (65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2]) / 255.0)
         for a in (data.load_image(shared / f"data/Rain100L_test/{s}/1.png").astype(np.float64)
                   for s in ("input", "target"))]
    assert res["per_image"][0]["name"] == "1"
    assert res["per_image"][0]["psnr_y"] == pytest.approx(peak_signal_noise_ratio(y[1], y[0], data_range=255))
    assert set(res) == {"model", "n_images", "psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "per_image"}


def test_evaluate_official_prenet(shared, two_pairs, capsys):
    root = two_pairs
    w = shared / "official_weights/prenet/PReNet6_Rain100L.pth"
    code, out, _ = run(capsys, "evaluate", "--model", "prenet", "--official", str(w), "--data", str(root),
                       "--quantise", "truncate", "--y-mode", "float", "--json")
    assert code == 0
    expected = json.loads((shared / "official_weights/expected.json").read_text())["PReNet"]["Rain100L"]
    got = json.loads(out)["per_image"]
    for g, e in zip(got, expected["per_image"][:2]):
        assert g["psnr_y"] == pytest.approx(e["truncated_uint8"]["y_psnr"], abs=0.01)


def test_derain_writes_pngs(shared, tmp_path, capsys):
    w = shared / "official_weights/prenet/PReNet6_Rain100L.pth"
    src = shared / "data/Rain100L_test/input/1.png"
    code, out, _ = run(capsys, "derain", "--model", "prenet", "--official", str(w), str(src), "-o", str(tmp_path))
    assert code == 0
    img = data.load_image(tmp_path / "1.png")
    assert img.shape == data.load_image(src).shape
    assert metrics.psnr(img, data.load_image(src)) < 60  # it changed the image


@pytest.mark.parametrize("argv,needle", [
    (["evaluate", "--model", "nosuch", "--data", "."], "unknown model 'nosuch'; valid names"),
    (["evaluate", "--model", "prenet", "--data", "."], "needs weights"),
    (["evaluate", "--model", "input", "--data", "/no/such/dir"], "/no/such/dir: dataset folder not found"),
    (["evaluate", "--model", "prenet", "--checkpoint", "/no/model.pt", "--data", "."], "/no/model.pt"),
])
def test_errors_are_one_clear_line(capsys, argv, needle):
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_corrupt_checkpoint_is_named(shared, tmp_path, capsys):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"\x00" * 10)
    img = str(shared / "data/Rain100L_test/input/1.png")  # inputs are checked first: give a good one
    code, _, err = run(capsys, "derain", "--model", "prenet", "--checkpoint", str(bad), img, "-o", str(tmp_path / "o"))
    assert code == 1 and f"{bad}: not a readable checkpoint" in err


def test_derain_bad_image_writes_nothing(shared, tmp_path, capsys):
    good = shared / "data/Rain100L_test/input/1.png"
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"nope")
    out = tmp_path / "out"
    code, _, err = run(capsys, "derain", "--model", "input", str(good), str(bad), "-o", str(out))
    assert code == 1 and "broken.png: not a readable image" in err
    assert not out.exists()  # all inputs are validated before the first output is written
