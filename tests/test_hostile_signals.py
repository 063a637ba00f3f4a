"""Issue 26, faults from outside: SIGTERM/SIGINT and SIGKILL during the train stage, run as the real
``python -m pipelines.train`` process and killed with real signals. A stopped training checkpoints at
the next step boundary, releases its lock, closes its MLflow run as KILLED and exits 128 + the
signal; resumed, it ends in the weights and the ``train_log.csv`` of an uninterrupted run."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from benchmark.core import checkpoints, config, io, tracking

from .conftest import REPO, tiny_ci

ITERS = 150
KEY = "prenet-rain-synth"


def _params(repo_params: dict, root: Path, tracked: bool) -> dict:
    p = tiny_ci(repo_params, root / "mlflow.db", "signals", n_test=2, ckpt_every=7)
    # windows of 5 steps, checkpoints every 7: a resume starts inside a log window; validation at
    # the end only (deterministic, and a column of the log)
    p["profiles"]["ci"]["train"].update({"iters": ITERS, "log_every": 5, "val_every": 0, "val_images": 1})
    p["models"]["prenet"]["args"] = {"stages": 2}
    p["tracking"]["enabled"] = tracked
    return p


def _workdir(root: Path, params: dict, data: Path | None) -> Path:
    """A repository-like folder: params.yaml, and the generated data (copied with their times, so
    that two folders train on the same files)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if data is None:
        from pipelines import prepare

        cwd = os.getcwd()
        os.chdir(root)
        try:
            prepare.prepare("rain-synth", params)
        finally:
            os.chdir(cwd)
    else:
        shutil.copytree(data, root / "data", copy_function=shutil.copy2)
    return root


def _cmd() -> list[str]:
    return [sys.executable, "-m", "pipelines.train", "--model", "prenet", "--dataset", "rain-synth", "--device", "cpu"]


def _env() -> dict:
    # TQDM_DISABLE: the stage's progress bar would share stderr with the one line asserted on
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "TQDM_DISABLE": "1"}


def _run(cwd: Path) -> subprocess.CompletedProcess:
    r = subprocess.run(_cmd(), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return r


def _killed(cwd: Path, sig: int, cmd: list[str] | None = None,
            run_dir: Path | None = None) -> tuple[subprocess.CompletedProcess, int]:
    """Start the stage (or ``cmd``), let it write its first checkpoint, send ``sig``; (the process's
    result, the step of the checkpoint it had written when the signal went out)."""
    run_dir = run_dir or cwd / "runs/train" / KEY
    proc = subprocess.Popen(cmd or _cmd(), cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / checkpoints.LAST).exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.01)
        seen = io.load_torch(run_dir / checkpoints.LAST)["step"]
        os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert seen < ITERS, "the run finished before the signal: make ITERS larger"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), seen


def _weights(run_dir: Path) -> dict:
    return io.load_torch(run_dir / "model.pt")["state_dict"]


def _log(run_dir: Path) -> list[dict]:
    # sec_per_step is wall-clock time: it differs between any two runs, interrupted or not, and is
    # the one column left out; every other column (step, loss, lr, validation) must be equal
    rows = io.read_csv_rows(run_dir / "train_log.csv")
    assert rows and all("sec_per_step" in r for r in rows)
    return [{k: v for k, v in r.items() if k != "sec_per_step"} for r in rows]


@pytest.fixture(scope="module")
def straight(repo_params, tmp_path_factory) -> tuple[Path, dict, list[dict]]:
    """An uninterrupted run of the stage: (its data folder, weights, log)."""
    root = _workdir(tmp_path_factory.mktemp("straight"), _params(repo_params, tmp_path_factory.mktemp("db"), False),
                    None)
    _run(root)
    run_dir = root / "runs/train" / KEY
    return root / "data", _weights(run_dir), _log(run_dir)


def _same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_checkpoints_releases_lock_and_resumes_bit_identical(repo_params, tmp_path, straight, sig):
    data, weights, log = straight
    params = _params(repo_params, tmp_path, tracked=True)
    root = _workdir(tmp_path / "repo", params, data)
    run_dir = root / "runs/train" / KEY
    r, seen = _killed(root, sig)
    assert r.returncode == 128 + sig, r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "stopped by" in ln]
    assert len(lines) == 1, r.stderr
    state = io.load_torch(run_dir / checkpoints.LAST)
    step = state["step"]
    assert seen <= step < ITERS
    name = signal.Signals(sig).name
    assert lines[0] == (f"train {KEY}: stopped by {name} at step {step}/{ITERS}; its state is in "
                        f"runs/train/{KEY}/last.pt; run the same command again to resume from there")
    assert not (run_dir / checkpoints.LOCK).exists()  # released: the rerun needs no stale-lock takeover
    assert not (run_dir / "model.pt").exists()
    assert not list(run_dir.glob(".*.tmp"))
    cfg = config.resolve("prenet", "rain-synth", params).tracking
    runs = [x for x in tracking.list_runs(cfg) if x["name"] == f"train/{KEY}"]
    assert [x["status"] for x in runs] == ["KILLED"]

    r = _run(root)
    assert f"resuming runs/train/{KEY} at step {step}/{ITERS}" in r.stderr and "taking over" not in r.stderr
    _same_weights(_weights(run_dir), weights)
    assert _log(run_dir) == log
    runs = [x for x in tracking.list_runs(cfg) if x["name"] == f"train/{KEY}"]
    assert [x["status"] for x in runs] == ["FINISHED"]  # the same MLflow run, continued


@pytest.mark.slow
def test_sigkill_resume_gives_the_uninterrupted_log(repo_params, tmp_path, straight):
    # SIGKILL cannot be handled: the run resumes from its last periodic checkpoint, which lies inside
    # a log window (checkpoints every 7 steps, rows every 5); the resumed rows must still be the same
    data, weights, log = straight
    root = _workdir(tmp_path / "repo", _params(repo_params, tmp_path, tracked=False), data)
    run_dir = root / "runs/train" / KEY
    r, _ = _killed(root, signal.SIGKILL)
    assert r.returncode == -signal.SIGKILL
    step = io.load_torch(run_dir / checkpoints.LAST)["step"]
    assert step % 7 == 0 and step < ITERS
    r = _run(root)
    assert f"at step {step}/{ITERS}" in r.stderr
    _same_weights(_weights(run_dir), weights)
    assert _log(run_dir) == log


def test_signal_before_the_first_step_saves_nothing(synth_root, tmp_path):
    # in-process, with the handler the stage installs: a signal that arrives while the run is being
    # set up stops it at the first step boundary, before any step, and leaves no checkpoint
    from benchmark.core import signals
    from benchmark.core.registry import build_model
    from benchmark.data import loading as data
    from benchmark.training import engine

    cfg = config.TrainCfg(iters=5, patch=24, batch=2, ckpt_every=1, log_every=1)
    with signals.stopping():
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(signals.Stopped) as e:
            engine.fit(build_model("prenet", stages=2), data.TrainPatches(synth_root, 24, seed=3), cfg,
                       tmp_path, progress=False)
    assert e.value.exit_code == 143 and "before the first step" in str(e.value)
    assert not (tmp_path / checkpoints.LAST).exists() and not (tmp_path / checkpoints.LOCK).exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the previous handler is back


@pytest.mark.slow
def test_sigterm_during_evaluate_leaves_no_half_written_output(repo_params, tmp_path):
    # evaluate has no step boundary: the signal stops it where it is; the atomic writes remove their
    # temporary files on the way out, no metrics.json appears, the MLflow run is KILLED, exit 143
    from pipelines import train

    params = _params(repo_params, tmp_path, tracked=True)
    params["profiles"]["ci"]["train"]["iters"] = 2
    params["profiles"]["ci"]["dataset_overrides"]["rain-synth"].update({"n_test": 60, "test_size": [64, 96]})
    root = _workdir(tmp_path / "repo", params, None)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        train.train("prenet", "rain-synth", params=params, progress=False)
    finally:
        os.chdir(cwd)
    out = root / "runs/eval" / KEY
    cmd = [sys.executable, "-m", "pipelines.evaluate", "--model", "prenet", "--dataset", "rain-synth",
           "--device", "cpu"]
    proc = subprocess.Popen(cmd, cwd=root, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob("samples/rain-synth/*.png")):  # the first image is done, 59 to go
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert "Traceback" not in err and [ln for ln in err.splitlines() if "stopped by SIGTERM" in ln] == [
        f"evaluate {KEY}: stopped by SIGTERM; no output is half-written; rerun the stage to evaluate"], err
    assert not (out / "metrics.json").exists() and not (out / "per_image.csv").exists()
    assert not [p for p in (root / "runs").rglob("*.tmp")]
    cfg = config.resolve("prenet", "rain-synth", params).tracking
    assert [x["status"] for x in tracking.list_runs(cfg) if x["name"] == f"evaluate/{KEY}"] == ["KILLED"]


@pytest.mark.slow
def test_sigterm_stops_msgnn_bench_train_on_an_own_folder_as_the_stage(repo_params, tmp_path, straight):
    # `msgnn-bench train --data DIR` (outside DVC) runs the same training: the same clean stop
    data, _, _ = straight
    root = _workdir(tmp_path / "repo", _params(repo_params, tmp_path, tracked=False), data)
    cmd = [sys.executable, "-m", "benchmark.tools.cli", "train", "--model", "prenet", "--data",
           "data/rain-synth", "--device", "cpu"]
    run_dir = root / "runs/own" / KEY
    r, _ = _killed(root, signal.SIGTERM, cmd, run_dir)
    assert r.returncode == 143, r.stderr
    assert "Traceback" not in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if "stopped by SIGTERM" in ln]) == 1, r.stderr
    assert (run_dir / checkpoints.LAST).exists() and not (run_dir / checkpoints.LOCK).exists()
    assert not (run_dir / "model.pt").exists()


def test_signal_during_the_last_step_stops_before_the_model_is_saved(synth_root, tmp_path):
    # a signal that arrives during the last step (or its validation) still stops the run: last.pt holds
    # the finished state and the caller saves no model.pt; the rerun resumes at the end and returns
    from benchmark.core import signals
    from benchmark.core.registry import build_model
    from benchmark.data import loading as data
    from benchmark.training import engine

    cfg = config.TrainCfg(iters=3, patch=24, batch=2, ckpt_every=1, log_every=1)

    def validate(model):  # the last step's validation: where the signal arrives
        os.kill(os.getpid(), signal.SIGTERM)
        return {}

    with signals.stopping():
        with pytest.raises(signals.Stopped) as e:
            engine.fit(build_model("prenet", stages=2), data.TrainPatches(synth_root, 24, seed=3), cfg,
                       tmp_path, progress=False, validate=validate)
    assert e.value.exit_code == 143 and "at step 3/3" in str(e.value)
    assert io.load_torch(tmp_path / checkpoints.LAST)["step"] == 3
    assert not (tmp_path / checkpoints.LOCK).exists()
    res = engine.fit(build_model("prenet", stages=2), data.TrainPatches(synth_root, 24, seed=3), cfg, tmp_path,
                     progress=False)
    assert res["finished"] and res["step"] == 3
