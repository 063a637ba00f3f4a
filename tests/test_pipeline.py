"""End to end on the ci profile in a temporary folder: prepare → train → evaluate → report,
with MLflow tracking into a temporary SQLite file."""
from __future__ import annotations

import json

import pytest

from benchmark.core import config, tracking
from pipelines import evaluate, prepare, report, train

from .conftest import REPO


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_pipeline_end_to_end_with_tracking(workdir, tiny_params):
    prepare.prepare("rain-synth", tiny_params)
    assert len(list((workdir / "data/rain-synth/train/input").glob("*.png"))) == 6
    res = train.train("prenet", "rain-synth", params=tiny_params, progress=False)
    assert res["finished"] and res["step"] == 3
    run_dir = workdir / "runs/train/prenet-rain-synth"
    assert {"model.pt", "last.pt", "train_log.csv", "config.yaml"} <= {p.name for p in run_dir.iterdir()}
    for name in ("prenet", "input"):
        evaluate.evaluate(name, "rain-synth", params=tiny_params, progress=False)
    m = json.loads((workdir / "runs/eval/prenet-rain-synth/metrics.json").read_text())
    assert m["params_total"] == 168963 and m["results"]["rain-synth"]["n_images"] == 2
    assert m["lpips_status"] != "ok" or "lpips" in m["results"]["rain-synth"]
    assert report.main(["--reference", str(REPO / "reports/paper_reference.yaml")]) == 0
    table = (workdir / "reports/table1.md").read_text()
    assert "PReNet" in table and "Rainy input" in table and "rain-synth" in table
    assert (workdir / "reports/figures/training_curves.png").stat().st_size > 1000

    runs = tracking.list_runs(config.resolve("prenet", "rain-synth", tiny_params).tracking)
    by_name = {r["name"]: r for r in runs}
    tr = by_name["train/prenet-rain-synth"]
    assert tr["status"] == "FINISHED"
    assert tr["tags"]["model"] == "prenet" and tr["tags"]["profile"] == "ci" and tr["tags"]["git_commit"]
    assert "train/loss" in tr["metrics"] and tr["params"]["train.batch"] == "2"
    ev = by_name["evaluate/prenet-rain-synth"]
    assert ev["metrics"]["test/rain-synth/psnr_y"] == pytest.approx(m["results"]["rain-synth"]["psnr_y"])


def test_failed_training_marks_run_failed(workdir, tiny_params):
    prepare.prepare("rain-synth", tiny_params)
    for f in (workdir / "data/rain-synth/train/input").glob("*.png"):
        # truncated pixel data with an intact header: passes the start-up header check, breaks
        # inside the training loop, after the run was opened
        f.write_bytes(f.read_bytes()[:120])
    with pytest.raises(ValueError, match="truncated or corrupt image"):
        train.train("prenet", "rain-synth", params=tiny_params, progress=False)
    runs = tracking.list_runs(config.resolve("prenet", "rain-synth", tiny_params).tracking)
    assert [r["status"] for r in runs if r["name"] == "train/prenet-rain-synth"] == ["FAILED"]


def test_tracking_disabled_is_a_no_op(workdir, tiny_params):
    tiny_params["tracking"]["enabled"] = False
    cfg = config.resolve("prenet", "rain-synth", tiny_params).tracking
    with tracking.run(cfg, "x", {"a": 1}, {}) as tr:
        tr.log({"m": 1.0}, 0)
    assert not (workdir / "mlflow.db").exists()


def test_stage_main_reports_bad_input(workdir, capsys):
    (workdir / "params.yaml").write_text((REPO / "params.yaml").read_text())
    assert train.main(["--model", "prenet", "--dataset", "rain-synth"]) == 1
    err = capsys.readouterr().err
    assert "data/rain-synth" in err and "not found" in err
    assert train.main(["--model", "nosuch", "--dataset", "rain-synth"]) == 1
    assert "'nosuch' is not a registered model" in capsys.readouterr().err


def test_only_tracking_imports_mlflow():
    offenders = [p.relative_to(REPO).as_posix() for d in ("benchmark", "baselines", "msgnn", "pipelines")
                 for p in (REPO / d).rglob("*.py") if "import mlflow" in p.read_text() or "from mlflow" in p.read_text()]
    assert offenders == ["benchmark/core/tracking.py"]



def test_rerun_after_a_switch_edit_retrains(workdir, tiny_params, capsys):
    # what `dvc repro` does after a params.yaml edit: the stage reruns in a folder that still holds
    # last.pt of the finished old run; the new setting must be trained, not "resumed" at its end
    tiny_params["tracking"]["enabled"] = False
    prepare.prepare("rain-synth", tiny_params)
    train.train("prenet", "rain-synth", params=tiny_params, progress=False)
    capsys.readouterr()
    train.train("prenet", "rain-synth", params=tiny_params, progress=False)
    assert "resuming" in capsys.readouterr().err  # same setting: the finished run is reused
    tiny_params["models"]["prenet"]["args"] = {"res_blocks": 4}
    res = train.train("prenet", "rain-synth", params=tiny_params, progress=False)
    err = capsys.readouterr().err
    assert res["finished"] and "resuming" not in err and "other model or builder arguments" in err
