"""Training losses (SSIM pinned to skimage) and the CI metric gate."""
from __future__ import annotations

import json

import pytest
import torch
from skimage.metrics import structural_similarity

from benchmark.tools import gate
from benchmark.training.losses import build_loss, ssim


def test_ssim_valid_windows_equal_skimage():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 40, 36, generator=g, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(1, 3, 40, 36, generator=g, dtype=torch.float64)).clamp(0, 1)
    ref = structural_similarity(x[0].numpy(), y[0].numpy(), channel_axis=0, data_range=1.0,
                                gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ssim(x, y, zero_pad=False).item() == pytest.approx(ref, abs=1e-10)


def test_ssim_loss_bounds_and_stage_reduction():
    x = torch.rand(2, 3, 24, 24)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-5)
    noisy = (x + 0.3 * torch.randn_like(x)).clamp(0, 1)
    last, total = build_loss("neg_ssim", "last"), build_loss("neg_ssim", "sum")
    assert last([noisy, x], x).item() == pytest.approx(-1.0, abs=1e-5)
    assert total([noisy, x], x).item() > -2.0 + 1e-3
    assert last({"out": x, "extra": noisy}, x).item() == pytest.approx(-1.0, abs=1e-5)
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("ssim2")


def _metrics(tmp_path, psnr):
    d = tmp_path / "runs" / "eval" / "prenet-rain-synth"
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.json").write_text(json.dumps({
        "model": "prenet", "dataset": "rain-synth", "params_total": 168963,
        "results": {"rain-synth": {"psnr_y": psnr, "ssim_y": 0.5, "psnr_rgb": 20.0, "ssim_rgb": 0.4}}}))


def test_gate_passes_within_and_fails_outside_tolerance(tmp_path, capsys):
    ref = tmp_path / "ref.json"
    _metrics(tmp_path, 22.0)
    args = ["--runs", str(tmp_path / "runs"), "--reference", str(ref)]
    assert gate.main(args) == 1  # no reference yet
    assert gate.main([*args, "--update"]) == 0
    _metrics(tmp_path, 22.0 + gate.TOLERANCE["psnr_y"] / 2)
    assert gate.main(args) == 0
    _metrics(tmp_path, 23.0)
    capsys.readouterr()
    assert gate.main(args) == 1
    err = capsys.readouterr().err
    assert "prenet-rain-synth/rain-synth/psnr_y" in err and "22.0000" in err and "23.0000" in err
    assert "--update" in err


def test_gate_flags_missing_runs(tmp_path):
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"rescan-rain-synth/rain-synth/psnr_y": 20.0}))
    _metrics(tmp_path, 22.0)
    bad = gate.compare(json.loads(ref.read_text()), gate.current(tmp_path / "runs"))
    assert any("missing in this run" in b[3] for b in bad)
    assert any("missing in reference" in b[3] for b in bad)


def test_dvc_yaml_stages_cover_every_model(repo_params):
    import yaml

    from tests.conftest import REPO

    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert set(dvc) == {"prepare", "train_msgnn", "train", "evaluate_msgnn", "evaluate", "evaluate_input",
                        "report", "site", "replicate_msgnn", "replicate", "ablation", "official", "official_report",
                        "train_plugin", "evaluate_plugin", "score"}
    assert dvc["ablation"]["matrix"] == {"group": "${ablation_groups}", "seed": "${seeds}"}
    assert dvc["train"]["matrix"]["model"] == "${baselines}"
    assert "baselines/${item.model}.py" in dvc["train"]["deps"]
    assert "models.${item.model}" in dvc["train"]["params"]
    cfg = (REPO / ".dvc" / "config").read_text()
    assert "analytics = false" in cfg


def test_dvc_resolves_the_stage_matrix():
    import subprocess
    import sys

    from tests.conftest import REPO

    out = subprocess.run([sys.executable, "-m", "dvc", "stage", "list"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    names = {line.split()[0] for line in out.stdout.splitlines() if line.strip()}
    assert {"prepare@rain-synth", "train_msgnn@rain-synth", "train@prenet-rain-synth",
            "evaluate_msgnn@rain-synth", "evaluate_input@rain-synth", "report"} <= names


def test_gate_compares_only_the_runs_of_the_current_profile(tmp_path):
    """A clone holds the committed metrics of the default profile beside the ci run's."""
    _metrics(tmp_path, 22.0)
    other = tmp_path / "runs" / "eval" / "msgnn.m1-rain-synth-s0"
    other.mkdir(parents=True)
    (other / "metrics.json").write_text(json.dumps({
        "model": "msgnn", "dataset": "rain-synth", "profile": "quick", "key": "msgnn.m1-rain-synth-s0",
        "params_total": 1, "results": {"rain-synth": {"psnr_y": 30.0}}}))
    assert not any(k.startswith("msgnn.m1") for k in gate.current(tmp_path / "runs", "ci"))
    assert any(k.startswith("msgnn.m1") for k in gate.current(tmp_path / "runs", "quick"))
    assert set(gate.current(tmp_path / "runs", "ci")) == {k for k in gate.current(tmp_path / "runs") if "m1" not in k}
