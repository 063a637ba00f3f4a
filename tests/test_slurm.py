"""(slow) The SLURM recipe on a real scheduler: a single-node cluster (pipelines/slurm/local_cluster.sh:
slurmctld + slurmd + munged on this machine), pipelines/slurm/submit.sh on the ci profile in a
scratch copy of the repository.

One submission is cancelled (scancel) once PReNet's training wrote its first checkpoint: nothing is
recorded and last.pt stays. The second submission resumes it; one injected failure (RESCAN with a
training patch larger than every image) is reported by the record job and neither it nor its evaluation is
committed; the stages that succeeded are in dvc.lock and `dvc status` calls them up to date. Then a
plain `dvc repro -f` of PReNet's chain from an empty run folder gives the same model and evaluation.

The stage subset (PReNet, RESCAN, the input baseline) keeps it to minutes on 2 CPU cores; the full
grid is the same commands, more array tasks. Needs root and Debian's slurm-wlm + munge (CI installs them).
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .conftest import REPO
from .test_dvc_deps import _git_commit, _scratch_repo

pytestmark = pytest.mark.slow
CLUSTER = REPO / "pipelines/slurm/local_cluster.sh"
KEY = "rain-synth"
# CPU-only node: override stage.sbatch's GPU/memory/CPU requests (command-line options win over #SBATCH)
SBATCH = ["--gres=none", "--cpus-per-task=1", "--mem=2G", "--time=30"]
WAIT_S = 1500  # the whole test; each wait below is bounded by it
SUBMITTED: list[str] = []  # job ids of this test: cancelled at the end, and only these


def _env() -> dict:
    # the venv's dvc/msgnn-bench first; one thread per task (2 tasks share 2 cores), the same for
    # the plain `dvc repro` compared with, so both runs do the same float arithmetic
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _run(repo: Path, *cmd: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    out = subprocess.run(list(cmd), cwd=repo, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert not check or out.returncode == 0, f"{cmd}: {out.stdout[-2000:]}{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def cluster():
    if shutil.which("slurmctld") is None or shutil.which("munged") is None:
        pytest.skip("slurm-wlm/munge not installed (CI: apt-get install slurm-wlm munge; .ci/run does it)")
    if os.geteuid() != 0:
        pytest.skip("a local SLURM cluster needs root (slurmd runs the jobs as their users)")
    up = subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr
    yield
    if SUBMITTED:  # nothing of ours left running (a failed assertion may leave jobs queued)
        subprocess.run(["scancel", *SUBMITTED], capture_output=True, timeout=30)
    subprocess.run(["bash", str(CLUSTER), "stop"], capture_output=True, timeout=60)


def _submit(repo: Path) -> list[str]:
    env_targets = {"MSGNN_SLURM_TRAIN": f"train@prenet-{KEY} train@rescan-{KEY}",
                   "MSGNN_SLURM_EVALUATE": f"evaluate@prenet-{KEY} evaluate@rescan-{KEY} evaluate_input@{KEY}"}
    out = subprocess.run(["bash", "pipelines/slurm/submit.sh", *SBATCH], cwd=repo, env={**_env(), **env_targets},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    words = out.stdout.split()  # "submitted: train array A (2 tasks), evaluate array B (3), record C"
    jobs = [words[words.index("array") + 1], words[words.index("array", words.index("array") + 1) + 1], words[-1]]
    SUBMITTED.extend(jobs)
    return jobs


def _wait(jobs: list[str], deadline: float) -> None:
    while True:
        q = subprocess.run(["squeue", "-h", "-j", ",".join(jobs), "-o", "%i %T %r"], capture_output=True, text=True)
        if not q.stdout.strip():
            return
        assert time.time() < deadline, f"jobs still queued: {q.stdout}"
        time.sleep(3)


def _md5s(folder: Path) -> dict[str, str]:
    # wall-clock content (sec_per_step in the log, which last.pt embeds) differs between any two runs
    skip = {"train_log.csv", "last.pt", "last.prev.pt", "mlflow_run.json"}
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in skip}


def _without_timings(folder: Path) -> dict[str, object]:
    """An evaluation folder's content less its wall-clock fields (``seconds`` per image and mean):
    the md5 of evaluate's outputs differs between any two runs through those alone, so the locked
    md5s cannot match; the metrics, the per-image rows and the sample images must."""
    def drop(x):
        if isinstance(x, dict):
            return {k: drop(v) for k, v in x.items() if k not in ("seconds", "git_commit")}
        return [drop(v) for v in x] if isinstance(x, list) else x

    out: dict[str, object] = {}
    for p in sorted(folder.rglob("*")):
        if p.suffix == ".json":
            out[p.name] = drop(json.loads(p.read_text()))
        elif p.suffix == ".csv":
            rows = list(csv.DictReader(p.open()))
            out[p.name] = [drop(r) for r in rows]
        elif p.is_file():
            out[str(p.relative_to(folder))] = hashlib.md5(p.read_bytes()).hexdigest()
    return out


def _lock_outs(repo: Path, stage: str) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {o["path"]: o["md5"] for o in lock[stage]["outs"]} if stage in lock else {}


def test_submit_cancel_resume_failure_and_plain_repro_agree(cluster, tmp_path):
    deadline = time.time() + WAIT_S
    repo = _scratch_repo(tmp_path)
    (repo / "dvc.lock").unlink(missing_ok=True)
    _run(repo, sys.executable, "-m", "benchmark.tools.cli", "profile", "ci")
    p = yaml.safe_load((repo / "params.yaml").read_text())
    p["tracking"]["enabled"] = False  # concurrent tracking has its own test (test_tracking_server.py)
    # the injected failure of one array task: valid settings (a bad builder argument is now refused when
    # the settings load, by every stage), but a training patch no rain-synth image holds, so RESCAN's
    # training fails when it starts reading patches
    p["profiles"]["ci"].setdefault("models", {}).setdefault("rescan", {})["train"] = {"patch": 4096}
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    _run(repo, sys.executable, "-m", "dvc", "repro", "-q", f"prepare@{KEY}")
    _git_commit(repo, "ci profile, prepared")
    run_dir = repo / f"runs/train/prenet-{KEY}"

    # 1. cancelled once PReNet has a checkpoint: nothing recorded, last.pt kept
    jobs = _submit(repo)
    while not (run_dir / "last.pt").exists():
        assert time.time() < deadline, "PReNet wrote no checkpoint"
        time.sleep(1)
    subprocess.run(["scancel", *jobs], check=True, timeout=30)
    _wait(jobs, deadline)
    assert (run_dir / "last.pt").exists() and not (run_dir / "model.pt").exists()
    assert not _lock_outs(repo, f"train@prenet-{KEY}")

    # 2. resubmitted: PReNet resumes, RESCAN fails and is reported, the rest is committed
    jobs = _submit(repo)
    _wait(jobs, deadline)
    logs = {f.name: f.read_text() for f in repo.glob("slurm-*.out")}
    record = logs[f"slurm-{jobs[2]}.out"]
    assert f"FAILED, not committed: train@rescan-{KEY}" in record, record
    assert f"FAILED, not committed: evaluate@rescan-{KEY}" in record, record
    assert any(f"resuming runs/train/prenet-{KEY} at step" in t for t in logs.values()), "PReNet did not resume"
    done = [f"train@prenet-{KEY}", f"evaluate@prenet-{KEY}", f"evaluate_input@{KEY}"]
    assert all(_lock_outs(repo, s) for s in done) and not _lock_outs(repo, f"train@rescan-{KEY}")
    status = json.loads(_run(repo, sys.executable, "-m", "dvc", "status", "--json", *done).stdout or "{}")
    assert status == {}, status

    # 3. the same chain by a plain `dvc repro` from an empty run folder: same model, same evaluation
    eval_dir = repo / f"runs/eval/prenet-{KEY}"
    slurm_train, slurm_eval = _md5s(run_dir), _without_timings(eval_dir)
    shutil.rmtree(run_dir)
    _run(repo, sys.executable, "-m", "dvc", "repro", "-q", "-f", "-s", f"train@prenet-{KEY}")
    _run(repo, sys.executable, "-m", "dvc", "repro", "-q", "-f", "-s", f"evaluate@prenet-{KEY}")
    assert _md5s(run_dir) == slurm_train
    assert _without_timings(eval_dir) == slurm_eval
    status = json.loads(_run(repo, sys.executable, "-m", "dvc", "status", "--json", *done).stdout or "{}")
    assert status == {}, status
