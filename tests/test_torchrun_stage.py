"""(slow) `torchrun --nproc_per_node 2 -m pipelines.train` — the train stage itself under torchrun
(gloo, 2 CPU processes) on the ci profile's tiny settings, for MSGNN and PReNet.

* one run folder, one model.pt, one MLflow run (rank 0 only), and the weights equal those of one
  process with the same global batch (to float rounding): the two ranks computed the same step;
* one rank SIGKILLed mid-run: torchrun stops the other, the rerun resumes from last.pt, continues
  the same MLflow run and finishes with every step logged.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from benchmark.core import tracking
from benchmark.core.config import TrackingCfg

from .conftest import REPO, tiny_ci

pytestmark = pytest.mark.slow
TIMEOUT = 420


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def _torchrun(cwd: Path, model: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pipelines.train", "--model", model, "--dataset", "rain-synth", "--device", "cpu"]
    # own session for the launcher; a timeout kills it and both ranks (no orphaned processes)
    return subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = TIMEOUT) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in _rank_pids(proc.pid, "0") + _rank_pids(proc.pid, "1"):  # workers have sessions of their own
            os.kill(pid, signal.SIGKILL)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"torchrun did not finish within {timeout} s") from None
    return proc.returncode, err


@pytest.fixture
def stage_dir(tmp_path, repo_params):
    """A working folder as the stage sees it: params.yaml (ci profile, tiny), data/rain-synth, SQLite store."""
    p = tiny_ci(repo_params, tmp_path / "mlflow.db", "ddp", n_test=1, ckpt_every=2)
    p["profiles"]["ci"]["train"].update({"iters": 6, "val_images": 1})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    subprocess.run([sys.executable, "-m", "pipelines.prepare", "--dataset", "rain-synth"], cwd=tmp_path, env=_env(),
                   check=True, capture_output=True, timeout=300)
    return tmp_path


def _rank_pids(launcher: int, rank: str) -> list[int]:
    """Children of the launcher whose environment says RANK=<rank> (torchrun's workers; they run in
    sessions of their own, so the launcher's session does not hold them)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) != launcher:  # field 4: parent pid
                continue
            env = dict(e.split("=", 1) for e in (d / "environ").read_bytes().decode(errors="replace").split("\0")
                       if "=" in e)
        except (OSError, IndexError, ValueError):
            continue
        if env.get("RANK") == rank and "TORCHELASTIC_RUN_ID" in env:
            found.append(int(d.name))
    return found


def _runs(d: Path) -> list[dict]:
    return tracking.list_runs(TrackingCfg(uri=f"sqlite:///{d / 'mlflow.db'}", experiment="ddp"))


@pytest.mark.parametrize("model", ["msgnn", "prenet"])
def test_stage_under_torchrun_is_one_run_equal_to_one_process(stage_dir, model):
    rc, err = _finish(_torchrun(stage_dir, model))
    assert rc == 0, err[-3000:]
    assert [p.name for p in (stage_dir / "runs/train").iterdir()] == [f"{model}-rain-synth"]
    ddp = torch.load(stage_dir / f"runs/train/{model}-rain-synth/model.pt", weights_only=True)["state_dict"]
    runs = _runs(stage_dir)
    assert [(r["name"], r["status"]) for r in runs] == [(f"train/{model}-rain-synth", "FINISHED")]
    # the same stage in one process, global batch unchanged: the ranks' shared result equals it
    one = stage_dir / "one"
    one.mkdir()
    for f in ("params.yaml", "data"):
        os.symlink(stage_dir / f, one / f)
    out = subprocess.run([sys.executable, "-m", "pipelines.train", "--model", model, "--dataset", "rain-synth",
                          "--device", "cpu"], cwd=one, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-3000:]
    ref = torch.load(one / f"runs/train/{model}-rain-synth/model.pt", weights_only=True)["state_dict"]
    worst = max((ref[k].float() - ddp[k].float()).abs().max().item() for k in ref)
    assert worst < 1e-4, worst


def test_a_killed_rank_leaves_a_run_that_resumes(stage_dir):
    run_dir = stage_dir / "runs/train/prenet-rain-synth"
    proc = _torchrun(stage_dir, "prenet")
    deadline = time.time() + TIMEOUT
    while not (run_dir / "last.pt").exists():  # first checkpoint (step 2 of 6)
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.5)
    rank1 = _rank_pids(proc.pid, "1")
    assert rank1, "rank 1 not found among the launcher's processes"
    os.kill(rank1[0], signal.SIGKILL)
    rc, _ = _finish(proc)
    assert rc != 0 and not (run_dir / "model.pt").exists()
    rc, err = _finish(_torchrun(stage_dir, "prenet"))
    assert rc == 0, err[-3000:]
    assert "resuming runs/train/prenet-rain-synth at step" in err
    runs = _runs(stage_dir)
    assert [(r["name"], r["status"]) for r in runs] == [("train/prenet-rain-synth", "FINISHED")]
    client, _ = tracking._client(TrackingCfg(uri=f"sqlite:///{stage_dir / 'mlflow.db'}", experiment="ddp"))
    assert sorted(m.step for m in client.get_metric_history(runs[0]["run_id"], "train/loss")) == list(range(1, 7))
