"""``msgnn-bench grid``: parallel stages on a real DVC repository, recorded in dvc.lock afterwards."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.tools.grid import collect, grid_main

DVC = [sys.executable, "-m", "dvc"]

# two independent "train" stages that each record their device and run time, and a stage reading both
STAGE_PY = """import json, os, sys, time
t0 = time.time()
time.sleep(1.5)
json.dump({"dev": os.environ["CUDA_VISIBLE_DEVICES"], "t0": t0, "t1": time.time()}, open(sys.argv[1], "w"))
"""
STAGE = f"{sys.executable} stage.py"
DVC_YAML = f"""stages:
  train:
    matrix:
      m: [a, b]
    cmd: {STAGE} out_${{item.m}}.json
    deps: [src.txt, stage.py]
    outs:
      - out_${{item.m}}.json
  report:
    cmd: cat out_a.json out_b.json > report.txt
    deps: [out_a.json, out_b.json]
    outs: [report.txt]
"""


@pytest.fixture
def repo(tmp_path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    for cmd in (["git", "init", "-q"], DVC + ["init", "-q"]):
        subprocess.run(cmd, cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    (tmp_path / "src.txt").write_text("x")
    (tmp_path / "stage.py").write_text(STAGE_PY)
    return tmp_path


def test_collect_orders_stages_by_their_dependencies(repo):
    jobs = {j.name: j for j in collect(repo, ["train*", "report"])}
    assert set(jobs) == {"train@a", "train@b", "report"}
    assert jobs["report"].after == {"train@a", "train@b"} and not jobs["train@a"].after
    assert "out_a.json" in jobs["train@a"].cmd
    assert {j.name for j in collect(repo, ["train"])} == {"train@a", "train@b"}  # a matrix stage's group name


def test_two_workers_run_in_parallel_and_dvc_status_is_clean(repo, capsys):
    assert grid_main(["--root", str(repo), "--devices", "0,1", "train*", "report"]) == 0
    a, b = (json.loads((repo / f"out_{m}.json").read_text()) for m in "ab")
    assert {a["dev"], b["dev"]} == {"0", "1"}  # one device per worker
    assert a["t0"] < b["t1"] and b["t0"] < a["t1"]  # they overlapped in time
    assert (repo / "report.txt").exists()
    lock = (repo / "dvc.lock").read_text()
    assert "train@a" in lock and "report" in lock
    status = subprocess.run(DVC + ["status", "--json"], cwd=repo, capture_output=True, text=True, check=True)
    assert json.loads(status.stdout) == {}


def test_a_failing_stage_is_reported_and_not_committed(repo, capsys):
    (repo / "dvc.yaml").write_text(DVC_YAML.replace("cat out_a.json", "false && cat out_a.json"))
    assert grid_main(["--root", str(repo), "--devices", "cpu,cpu", "train*", "report"]) == 1
    assert "FAILED (exit 1) report" in capsys.readouterr().out
    lock = (repo / "dvc.lock").read_text()
    assert "train@b" in lock and "report:" not in lock


def test_unknown_target_is_one_clear_error(repo):
    with pytest.raises(ValueError, match="dvc.yaml.*nosuch"):
        collect(repo, ["nosuch"])


def test_slurm_array_script_runs_the_listed_stage_and_dvc_records_it(repo, capsys):
    # the job-array task script, run as SLURM would run task 1 (no scheduler here: see README)
    assert grid_main(["--root", str(repo), "--list", "train*"]) == 0
    listing = capsys.readouterr().out
    assert [ln.split("\t")[0] for ln in listing.splitlines()] == ["train@a", "train@b"]
    (repo / "stages.tsv").write_text(listing)
    script = Path(__file__).resolve().parents[1] / "pipelines/slurm/stage.sbatch"
    env = {"PATH": "/usr/bin:/bin", "SLURM_ARRAY_TASK_ID": "1", "MSGNN_REPO": str(repo), "CUDA_VISIBLE_DEVICES": "3"}
    subprocess.run(["bash", str(script), "stages.tsv"], cwd=repo, env=env, check=True, capture_output=True)
    assert json.loads((repo / "out_b.json").read_text())["dev"] == "3" and not (repo / "out_a.json").exists()
    subprocess.run(DVC + ["commit", "-f", "-q", "train@b"], cwd=repo, check=True)
    status = subprocess.run(DVC + ["status", "--json", "train@b"], cwd=repo, capture_output=True, text=True, check=True)
    assert json.loads(status.stdout) == {}


def test_commit_records_what_dvc_commit_does_with_one_lock_write(repo, tmp_path, monkeypatch):
    """`grid --commit` (also pipelines/slurm/record.sh) writes the dvc.lock `dvc commit -f` writes for the
    same stages, but rewrites the lock once: DVC's CLI rereads and rewrites it for every target."""
    for m in "ab":  # the stages' commands, run outside DVC (as grid's workers or SLURM tasks do)
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", m)
        subprocess.run(f"{STAGE} out_{m}.json", shell=True, cwd=repo, check=True)
    subprocess.run("cat out_a.json out_b.json > report.txt", shell=True, cwd=repo, check=True)
    twin = tmp_path / "twin"
    shutil.copytree(repo, twin)
    subprocess.run(DVC + ["commit", "-f", "-q", "train@a", "train@b", "report"], cwd=twin, check=True)

    import logging

    from dvc.dvcfile import Lockfile
    for h in logging.getLogger("dvc").handlers:  # DVC's handlers keep the stream of the test that set them up
        if isinstance(h, logging.StreamHandler):
            monkeypatch.setattr(h, "stream", sys.stderr)
    writes = []
    real = Lockfile.dump_stages
    monkeypatch.setattr(Lockfile, "dump_stages", lambda self, *a, **k: (writes.append(a), real(self, *a, **k))[1])
    assert grid_main(["--root", str(repo), "--commit", "train*", "report"]) == 0
    assert len(writes) == 1 and len(writes[0][0]) == 3  # one write holding the three stages
    assert (repo / "dvc.lock").read_text() == (twin / "dvc.lock").read_text()
    with pytest.raises(ValueError, match="no stage matches 'nosuch'"):
        grid_main(["--root", str(repo), "--commit", "report", "nosuch"])
    status = subprocess.run(DVC + ["status", "--json"], cwd=repo, capture_output=True, text=True, check=True)
    assert json.loads(status.stdout) == {}
