"""A tiny run tree made by the real stages, for the site, figure and browser tests.

prepare (rain-synth, 3 test pairs) → train PReNet and RESCAN for 3 steps → evaluate them and the
rainy input → report → site, all in the current working folder with MLflow in a local SQLite file.
A third run whose model and training-dataset names are hostile HTML is a copy of PReNet's evaluation with
its names changed, so every string the page embeds is exercised.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from pipelines import evaluate, prepare, report, site, train
from tests.conftest import tiny_ci

HOSTILE = "<script>alert('x')</script>&\"q\""
REPO = Path(__file__).resolve().parents[2]


def tree_params(params: dict, workdir: Path) -> dict:
    """The repository's params on the ci profile, shrunk, tracking into ``workdir/mlflow.db``."""
    p = tiny_ci(params, workdir / "mlflow.db", "site", n_test=3, ckpt_every=3)
    p["report"] = {"images": {"rain-synth": ["2"]}, "crops": {"rain-synth/2": [0.2, 0.3, 0.5]}, "tile": 96,
                   "ablation_runs": ["prenet-rain-synth", "rescan-rain-synth"], "ablation_image": "rain-synth/2"}
    return p


def build(workdir: Path, params: dict) -> dict:
    """Run the stages in ``workdir`` (the caller has chdir'd there); writes and returns the params used."""
    p = tree_params(params, workdir)
    prepare.prepare("rain-synth", p)
    for m in ("prenet", "rescan"):
        train.train(m, "rain-synth", params=p, progress=False)
    for m in ("input", "prenet", "rescan"):
        evaluate.evaluate(m, "rain-synth", params=p, progress=False)
    evil = workdir / "runs/eval" / "evil-rain-synth"
    shutil.copytree(workdir / "runs/eval/prenet-rain-synth", evil)
    m = json.loads((evil / "metrics.json").read_text())
    m["model"], m["dataset"], m["mlflow_run_id"] = HOSTILE, HOSTILE + "d", HOSTILE
    m["key"] = evil.name  # a run of its own: a folder holding another run's key is refused as a copy
    (evil / "metrics.json").write_text(json.dumps(m))
    assert report.main(["--reference", str(REPO / "reports/paper_reference.yaml")]) == 0
    (workdir / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    assert site.main(["--reference", str(REPO / "reports/paper_reference.yaml")]) == 0
    return p
