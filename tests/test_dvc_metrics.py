"""What DVC parses as metrics stays small (issue 27: `dvc exp show` had 748 columns).

Only ``headline.json`` files (PSNR/SSIM per set in the paper's protocol) are DVC metrics; every
``metrics.json`` and the ablation summaries are plain ``cache: false`` outputs, still committed to
git (so they travel with experiments) but never turned into columns.
"""
from __future__ import annotations

import json
import subprocess

import yaml

from benchmark.evaluation import headline
from pipelines import prepare, replicate

from .conftest import REPO
from .test_ablations import ablation_params  # noqa: F401  (fixture)


def _stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _paths(entries) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def test_only_headline_files_are_dvc_metrics():
    metrics = {n: _paths(st.get("metrics")) for n, st in _stages().items() if st.get("metrics")}
    assert set(metrics) == {"evaluate_msgnn", "evaluate", "evaluate_input", "replicate_msgnn", "replicate",
                            "ablation"}
    for name, paths in metrics.items():
        assert len(paths) == 1 and paths[0].endswith("headline.json"), name
        outs = _stages()[name]["outs"]
        plain = [e for e in outs if isinstance(e, dict) and next(iter(e)).endswith(".json")]
        # the full file is still an output of the stage, kept out of the cache (it is in git)
        assert len(plain) == 1 and next(iter(plain[0].values())) == {"cache": False}, name


def test_metric_files_are_committed_not_ignored(tmp_path):
    paths = ["runs/eval/prenet-rain-synth/metrics.json", "runs/eval/prenet-rain-synth/headline.json",
             "runs/eval/ablation-all-s0.json", "runs/eval/ablation-all-s0.headline.json"]
    out = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=REPO, capture_output=True, text=True)
    assert out.stdout == "", out.stdout  # none ignored
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "runs/eval/prenet-rain-synth/per_image.csv"],
                             cwd=REPO, capture_output=True, text=True)
    assert ignored.stdout.strip() == "runs/eval/prenet-rain-synth/per_image.csv"  # the rule still bites


def test_headline_is_the_paper_protocol_per_set():
    results = {"rain200h": {"psnr:msgnn": 31.234567, "ssim:msgnn": 0.912345, "psnr_y": 33.0, "lpips": 0.1},
               "real": {"n_images": 3, "ground_truth": False}}
    assert headline.of_results("msgnn-rain200h", results) == {"msgnn-rain200h": {"rain200h": {"psnr": 31.235,
                                                                                         "ssim": 0.9123}}}


def test_stages_write_the_headline_files(tmp_path, monkeypatch, ablation_params):  # noqa: F811
    """The ablation stage runs the evaluate body per variant: both writers in one short run."""
    monkeypatch.chdir(tmp_path)
    prepare.prepare("rain-synth", ablation_params)
    summary = replicate.run_group("all", 0, params=ablation_params, progress=False)
    top = json.loads((tmp_path / "runs/eval/ablation-all-s0.headline.json").read_text())
    keys = {f"msgnn.{v}-rain-synth-s0": v for v in ("tiny", "tiny-graph")}
    assert set(top) == set(keys)  # run keys: unique across files, so DVC's columns stay short
    for key, v in keys.items():
        res = summary["variants"][v]["results"]["rain-synth"]
        assert top[key] == {"rain-synth": {"psnr": round(res["psnr:msgnn"], 3), "ssim": round(res["ssim:msgnn"], 4)}}
        per_run = tmp_path / f"runs/eval/ablation-all-s0/{key}"
        assert json.loads((per_run / "headline.json").read_text()) == {key: top[key]}
        full = json.loads((per_run / "metrics.json").read_text())
        assert len(json.dumps(top[key])) < len(json.dumps(full)) / 10  # the small file is small
