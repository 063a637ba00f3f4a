"""Issue 21's "done when", end to end through `dvc repro` in a scratch copy outside the repository.

The example package (examples/tiny_plugin, pip-installed into a folder of its own: entry point
tinycnn) and a local-file plugin (examples/local_model/widecnn.py, named in params.yaml) train and
evaluate through their DVC stages on a shrunk `ci` profile (MSGNN and the rainy input only, no
ablation grid, a few steps and images), beside a `results:` entry (a folder of output images scored by
stage score@). Then: Table 1, the HTML report, `models`, the gate, `perf` and the memory estimate show
them by name; editing either plugin's source makes `dvc status` report only that plugin's two stages.
No file of the suite is edited to add either model. Minutes on 2 cores: slow, run by .ci/run.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO
from .test_dvc_deps import _scratch_repo, _stale, _stale_after_edit

RESULT = "rainy-copy"  # published outputs: the rainy test inputs themselves, scored as a method's outputs


def _shrink(repo: Path) -> None:
    """The ci profile cut to what the plugin path needs (a user's own edit of params.yaml)."""
    from ruamel.yaml import YAML

    y = YAML(typ="rt")
    path = repo / "params.yaml"
    doc = y.load(path.read_text())
    ci = doc["profiles"]["ci"]
    del ci["ablation"]
    ci["train"].update({"iters": 2, "patch": 24, "batch": 2, "log_every": 1, "ckpt_every": 2, "val_images": 1})
    ci["dataset_overrides"]["rain-synth"].update({"n_train": 4, "n_test": 6, "train_size": 48, "test_size": [40, 48]})
    ci["eval"]["save_images"] = 1
    doc["baselines"], doc["trained_models"], doc["ablation_groups"] = [], ["msgnn"], []
    doc["plugins"] = {"widecnn": "examples/local_model/widecnn.py:build"}
    doc["results"] = {RESULT: {"rain-synth": f"published/{RESULT}"}}
    with path.open("w") as fh:
        y.dump(doc, fh)


@pytest.mark.slow
def test_plugins_run_through_dvc_repro_into_every_report(tmp_path):
    repo = _scratch_repo(tmp_path)
    assert REPO not in repo.parents and repo != REPO
    for kind in ("train", "eval"):  # the committed quick-profile runs: their cached files are not in a clone
        shutil.rmtree(repo / "runs" / kind)
    site = tmp_path / "site"
    shutil.copytree(REPO / "examples/tiny_plugin", tmp_path / "src")  # pip builds in place: not in the repository
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "--target",
                    str(site), str(tmp_path / "src")], check=True, capture_output=True)
    env = dict(os.environ, PYTHONPATH=str(site), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")

    def run(*args: str) -> str:
        out = subprocess.run(list(args), cwd=repo, env=env, capture_output=True, text=True)
        assert out.returncode == 0, f"{args}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        return out.stdout

    bench = (sys.executable, "-m", "benchmark.tools.cli")
    dvc = (sys.executable, "-m", "dvc")
    _shrink(repo)
    run(*bench, "profile", "ci")  # also writes plugin_runs / score_runs (what `plugins sync` writes)
    params = (repo / "params.yaml").read_text()
    for stage_key in ("tinycnn-rain-synth", "widecnn-rain-synth", f"{RESULT}-rain-synth"):
        assert f"{stage_key}:" in params

    run(*dvc, "repro", "prepare@rain-synth")
    published = repo / "published" / RESULT  # "outputs" of a method: the rainy test inputs as they are
    shutil.copytree(repo / "data/rain-synth/test/input", published)
    log = run(*dvc, "repro")  # everything the shrunk profile holds
    for stage in ("train_plugin@tinycnn-rain-synth", "evaluate_plugin@tinycnn-rain-synth",
                  "train_plugin@widecnn-rain-synth", "evaluate_plugin@widecnn-rain-synth",
                  f"score@{RESULT}-rain-synth", "report", "site"):
        assert f"Running stage '{stage}'" in log, stage
    assert _stale(repo) == set()

    # Table 1: the plugins under their declared names, the published outputs as such, in the tests vs MSGNN
    table = (repo / "reports/table1.md").read_text()
    head = next(line for line in table.splitlines() if line.startswith("| Dataset |"))
    assert "TinyCNN" in head and "WideCNN" in head and f"{RESULT} (published outputs, re-scored)" in head
    cols = [c.strip() for c in head.strip("|").split("|")]
    params_row = [c.strip() for c in next(line for line in table.splitlines()
                                          if line.startswith("| Parameters |")).strip("|").split("|")]
    assert params_row[cols.index(f"{RESULT} (published outputs, re-scored)")] == "–"
    assert params_row[cols.index("TinyCNN")] == f"{3 * 16 * 9 + 16 + 16 * 16 * 9 + 16 + 16 * 3 * 9 + 3:,}"
    tests = [line for line in table.splitlines() if line.startswith("| ") and " | PSNR | " in line]
    for name in ("TinyCNN", "WideCNN", f"{RESULT} (published outputs, re-scored)"):
        assert any(line.startswith(f"| {name} | rain-synth | PSNR | 6 (images)") for line in tests), name
    with (repo / "reports/table1.csv").open() as fh:
        rows = {r["model"]: r for r in csv.DictReader(fh)}
    assert {"msgnn", "input", "tinycnn", "widecnn", RESULT} <= set(rows)
    assert rows[RESULT]["p_wilcoxon_psnr"] and rows["tinycnn"]["p_wilcoxon_psnr"]

    # the HTML report (the site stage loads no plugin: the names come from the runs' metrics.json)
    page = (repo / "reports/index.html").read_text()
    assert "TinyCNN" in page and "WideCNN" in page and f"{RESULT} (published outputs, re-scored)" in page
    m = json.loads((repo / f"runs/eval/{RESULT}-rain-synth/metrics.json").read_text())
    assert m["source"]["fingerprint"] in page  # provenance of the scored folder

    # `models`, the gate (suite values gated, plugin values reported), `perf`, the memory estimate
    listed = {r["name"]: r for r in json.loads(run(*bench, "models", "--json"))}
    assert listed["tinycnn"]["plugin"] and listed["widecnn"]["display"] == "WideCNN"
    ref = tmp_path / "reference.json"
    gate = run(*bench, "check-metrics", "--update", "--reference", str(ref))
    saved = json.loads(ref.read_text())
    assert saved and all(k.startswith(("msgnn-", "input-")) for k in saved)
    assert "reported, not gated" in gate and "tinycnn-rain-synth/rain-synth/psnr_y" in gate
    assert f"{RESULT}-rain-synth/rain-synth/psnr_y" in gate
    assert "within tolerance" in run(*bench, "check-metrics", "--reference", str(ref))
    run(*bench, "check-metrics", "--include-plugins", "--update", "--reference", str(tmp_path / "mine.json"))
    assert "tinycnn-rain-synth/params_total" in json.loads((tmp_path / "mine.json").read_text())
    perf = json.loads(run(*bench, "perf", "--models", "tinycnn,widecnn", "--cases", "none", "--json"))
    assert perf["work"]["tinycnn"]["params"] == int(listed["tinycnn"]["params_total"])
    assert perf["work"]["widecnn"]["gflop_321x481"] > 0
    code = ("from benchmark.tools import memory; print(memory.need('tinycnn', 321, 481), "
            "memory.need('widecnn', 321, 481))")
    assert all(int(v) > 0 for v in run(sys.executable, "-c", code).split())

    # editing a plugin's source re-runs only its own two stages
    def stale_after_edit(path: Path) -> set[str]:
        return _stale_after_edit(repo, path)

    assert stale_after_edit(repo / "examples/local_model/widecnn.py") == {
        "train_plugin@widecnn-rain-synth", "evaluate_plugin@widecnn-rain-synth"}
    assert stale_after_edit(site / "tiny_plugin/net.py") == {
        "train_plugin@tinycnn-rain-synth", "evaluate_plugin@tinycnn-rain-synth"}
    assert _stale(repo) == set()
