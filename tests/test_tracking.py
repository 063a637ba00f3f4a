"""Tracking faults: MLflow unreachable, runs killed mid-training, a copied clone's artifacts."""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from benchmark.tools import cli
from benchmark.core import config, tracking
from benchmark.core.config import TrackingCfg
from pipelines import prepare, train

from .conftest import REPO


@pytest.fixture(scope="session")
def empty_db(tmp_path_factory):
    """One migrated MLflow SQLite database, copied per test (creating one costs seconds)."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    tracking.list_runs(TrackingCfg(uri=f"sqlite:///{path}", experiment="test"))
    return path


@pytest.fixture
def workdir(tmp_path, monkeypatch, empty_db, tiny_params):
    monkeypatch.chdir(tmp_path)
    shutil.copy(empty_db, tmp_path / "mlflow.db")
    tiny_params["tracking"]["uri"] = "sqlite:///mlflow.db"  # relative, as in the repository's params.yaml
    prepare.prepare("rain-synth", tiny_params)
    return tmp_path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _steps(runs, name):
    r = [r for r in runs if r["name"] == name]
    assert len(r) == 1, runs
    return r[0]


def _history(uri, run_id, key="train/loss"):
    from mlflow.tracking import MlflowClient

    uri = tracking.store_uri(TrackingCfg(uri=uri))
    return sorted(m.step for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, key))


def test_a_server_that_does_not_answer_costs_seconds_not_minutes(tmp_path, capsys):
    with socket.socket() as s:  # accepts connections (backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        cfg = TrackingCfg(uri=f"http://127.0.0.1:{s.getsockname()[1]}", experiment="x")
        t = time.monotonic()
        with tracking.run(cfg, "x", {"a": 1}, {}, run_dir=tmp_path) as tr:
            tr.log({"m": 1.0}, 1)
        assert time.monotonic() - t < tracking.PROBE_TIMEOUT_S + 3
    assert tr.offline and capsys.readouterr().err.count("warning: tracking:") == 1
    assert json.loads((tmp_path / tracking.RECORD).read_text())["synced"] is False


def test_server_down_training_goes_on_and_sync_sends_later(workdir, tiny_params, capsys):
    good = tiny_params["tracking"]["uri"]
    tiny_params["tracking"]["uri"] = f"http://127.0.0.1:{_free_port()}"  # nobody listens there
    run_dir = workdir / "runs/train/ablation-all-s0/prenet-rain-synth"  # sync also finds a grouped stage's runs
    res = train.train("prenet", "rain-synth", params=tiny_params, progress=False, out=run_dir)
    err = capsys.readouterr().err
    assert res["finished"] and err.count("warning: tracking:") == 1 and "msgnn-bench tracking sync" in err
    rec = json.loads((run_dir / tracking.RECORD).read_text())
    assert rec["status"] == "FINISHED" and rec["synced"] is False
    # the server is back (here: the SQLite store), and the user syncs
    tiny_params["tracking"]["uri"] = good
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    assert cli.main(["tracking", "sync"]) == 0
    assert "1 run folder(s) handled" in capsys.readouterr().out
    cfg = config.resolve("prenet", "rain-synth", tiny_params).tracking
    run = _steps(tracking.list_runs(cfg), "train/prenet-rain-synth")
    assert run["status"] == "FINISHED" and run["params"]["train.batch"] == "2"
    assert _history(good, run["run_id"]) == [1, 2, 3]
    assert cli.main(["tracking", "sync"]) == 0  # nothing left to send: no second copy
    assert _history(good, run["run_id"]) == [1, 2, 3]


def test_store_failing_mid_run_warns_once_and_keeps_training(workdir, tiny_params, capsys, monkeypatch):
    from mlflow.tracking import MlflowClient

    real = MlflowClient.log_batch

    def broken(self, run_id, metrics=(), params=(), tags=()):
        if metrics:
            raise RuntimeError("database is locked")
        return real(self, run_id, metrics=metrics, params=params, tags=tags)

    monkeypatch.setattr(MlflowClient, "log_batch", broken)
    monkeypatch.setattr(tracking.MlflowTracker, "__init__", _small_flush(tracking.MlflowTracker.__init__))
    res = train.train("prenet", "rain-synth", params=tiny_params, progress=False)
    assert res["finished"] and capsys.readouterr().err.count("warning: tracking:") == 1
    rec = json.loads((workdir / "runs/train/prenet-rain-synth" / tracking.RECORD).read_text())
    assert rec["synced"] is False and rec["status"] == "FINISHED"


def _small_flush(init):
    def wrapped(self, *a, **k):
        init(self, *a, **k)
        self.flush_every = 1
    return wrapped


_KILLED_AT_STEP_5 = textwrap.dedent("""
    import os, signal, sys, yaml
    from benchmark.core import tracking
    from pipelines import train
    log = tracking.MlflowTracker.log
    def log_then_die(self, metrics, step):
        log(self, metrics, step)
        if step == 5:  # metrics of steps 1-5 are still in the buffer: lost with the process
            os.kill(os.getpid(), signal.SIGKILL)
    tracking.MlflowTracker.log = log_then_die
    train.train("prenet", "rain-synth", params=yaml.safe_load(open(sys.argv[1])), progress=False)
""")


def test_after_sigkill_the_resumed_training_continues_the_same_mlflow_run(workdir, tiny_params, capsys):
    tiny_params["profiles"]["ci"]["train"].update({"iters": 8, "ckpt_every": 2, "log_every": 1})
    tiny_params["models"]["prenet"]["args"] = {"stages": 2}
    (workdir / "p.yaml").write_text(yaml.safe_dump(tiny_params))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _KILLED_AT_STEP_5, "p.yaml"], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    uri, cfg = "sqlite:///mlflow.db", config.resolve("prenet", "rain-synth", tiny_params).tracking
    killed = _steps(tracking.list_runs(cfg), "train/prenet-rain-synth")
    assert killed["status"] == "RUNNING" and _history(uri, killed["run_id"]) == []  # buffer lost
    run_dir = workdir / "runs/train/prenet-rain-synth"
    assert [r["step"] for r in csv.DictReader(open(run_dir / "train_log.csv"))] == ["1", "2", "3", "4"]

    res = train.train("prenet", "rain-synth", params=tiny_params, progress=False)
    assert res["finished"] and "resuming" in capsys.readouterr().err
    runs = tracking.list_runs(cfg)
    assert len(runs) == 1 and runs[0]["run_id"] == killed["run_id"] and runs[0]["status"] == "FINISHED"
    assert _history(uri, killed["run_id"]) == list(range(1, 9))  # every step once, none missing
    assert _history(uri, killed["run_id"], "train/lr") == list(range(1, 9))


def test_sync_closes_a_killed_run_that_was_not_resumed(workdir, tiny_params, capsys):
    cfg = dataclasses.replace(config.resolve("prenet", "rain-synth", tiny_params).tracking)
    run_dir = workdir / "runs/train/prenet-rain-synth"
    run_dir.mkdir(parents=True)
    ctx = tracking.run(cfg, "train/prenet-rain-synth", {"a": 1}, {"model": "prenet"}, run_dir=run_dir)
    tr = ctx.__enter__()  # the process dies here: the context is never left, the buffer never sent
    tr.log({"train/loss": 0.5}, 1)
    (run_dir / "train_log.csv").write_text("step,loss,lr\n1,0.5,0.001\n2,0.25,0.001\n")
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    assert cli.main(["tracking", "sync"]) == 0
    out = capsys.readouterr().out
    assert "4 metric values sent" in out and "(KILLED)" in out
    run = _steps(tracking.list_runs(cfg), "train/prenet-rain-synth")
    assert run["run_id"] == tr.run_id and run["status"] == "KILLED"
    assert _history(cfg.uri, tr.run_id) == [1, 2]


def test_a_copied_clone_writes_artifacts_into_its_own_mlruns(tmp_path, monkeypatch, empty_db):
    first, copy = tmp_path / "first", tmp_path / "copy"
    first.mkdir()
    shutil.copy(empty_db, first / "mlflow.db")
    cfg = TrackingCfg(uri="sqlite:///mlflow.db", experiment="clone")
    monkeypatch.chdir(first)
    (first / "a.txt").write_text("first")
    with tracking.run(cfg, "one", {}, {}) as tr:
        tr.log_artifact(first / "a.txt")
    assert len(list((first / "mlruns").rglob("a.txt"))) == 1
    shutil.copytree(first, copy)  # the repository is copied (or moved) elsewhere, mlflow.db with it
    monkeypatch.chdir(copy)
    (copy / "a.txt").write_text("copy")
    with tracking.run(cfg, "two", {}, {}) as tr2:
        tr2.log_artifact(copy / "a.txt")
    landed = list((copy / "mlruns").rglob("a.txt"))
    assert len(list((first / "mlruns").rglob("a.txt"))) == 1  # nothing written into the first clone
    assert len(landed) == 2 and any(tr2.run_id in p.as_posix() and p.read_text() == "copy" for p in landed)


def test_a_locked_sqlite_store_costs_seconds_and_one_warning(tmp_path, empty_db, capsys):
    import sqlite3

    db = tmp_path / "locked.db"
    shutil.copy(empty_db, db)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the database: every write waits, then fails
    try:
        cfg = TrackingCfg(uri=f"sqlite:///{db}", experiment="test")
        t = time.monotonic()
        with tracking.run(cfg, "x", {"a": 1}, {}, run_dir=tmp_path) as tr:
            tr.log({"m": 1.0}, 1)
        took = time.monotonic() - t
    finally:
        holder.rollback()
        holder.close()
    assert tr.offline and capsys.readouterr().err.count("warning: tracking:") == 1
    assert took < 15, took  # SQLite's busy timeout (5 s), not MLflow's minutes of retries


def test_an_offline_training_after_a_finished_one_gets_its_own_run(workdir, tiny_params, capsys):
    """The folder's record still names the previous training's FINISHED run when the next training
    (other settings) starts with MLflow down: sync must create a new run, not append to the old one."""
    from mlflow.tracking import MlflowClient

    from benchmark.evaluation.run import evaluate

    good = tiny_params["tracking"]["uri"]
    cfg = config.resolve("prenet", "rain-synth", tiny_params).tracking
    run_dir = workdir / "runs/train/prenet-rain-synth"
    train.train("prenet", "rain-synth", params=tiny_params, progress=False)
    first = _steps(tracking.list_runs(cfg), "train/prenet-rain-synth")
    rec = json.loads((run_dir / tracking.RECORD).read_text())
    assert rec["run_id"] == first["run_id"] and first["tags"][tracking.FINGERPRINT_TAG] == rec["fingerprint"]
    before = _history(good, first["run_id"])

    tiny_params["profiles"]["ci"]["train"]["lr"] = 1e-3  # another training of the same folder ...
    tiny_params["tracking"]["uri"] = f"http://127.0.0.1:{_free_port()}"  # ... started while MLflow is down
    train.train("prenet", "rain-synth", params=tiny_params, progress=False)
    assert "warning: tracking:" in capsys.readouterr().err
    offline = json.loads((run_dir / tracking.RECORD).read_text())
    assert "run_id" not in offline and offline["synced"] is False and offline["fingerprint"] != rec["fingerprint"]

    tiny_params["tracking"]["uri"] = good
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    # evaluated before the sync: no link at all rather than a link to the older training's run
    assert evaluate("prenet", "rain-synth", params=tiny_params, progress=False)["train_run_id"] is None
    assert cli.main(["tracking", "sync"]) == 0
    trains = [r for r in tracking.list_runs(cfg) if r["name"] == "train/prenet-rain-synth"]
    assert len(trains) == 2
    new = next(r for r in trains if r["run_id"] != first["run_id"])
    assert new["status"] == "FINISHED" and new["params"]["train.lr"] == "0.001"
    assert new["tags"][tracking.FINGERPRINT_TAG] == offline["fingerprint"]
    old = MlflowClient(tracking_uri=tracking.store_uri(cfg)).get_run(first["run_id"])
    assert old.data.params["train.lr"] != "0.001" and _history(good, first["run_id"]) == before  # untouched
    assert _history(good, new["run_id"]) == before  # the new training's own steps, sent once
    assert json.loads((run_dir / tracking.RECORD).read_text())["run_id"] == new["run_id"]
    assert evaluate("prenet", "rain-synth", params=tiny_params, progress=False)["train_run_id"] == new["run_id"]


def test_a_killed_run_is_continued_only_by_the_same_training(tmp_path, empty_db):
    """A RUNNING run is resumed only with the fingerprint it was opened with; another one gets a new run."""
    db = tmp_path / "mlflow.db"
    shutil.copy(empty_db, db)
    cfg = TrackingCfg(uri=f"sqlite:///{db}", experiment="test")
    ctx = tracking.run(cfg, "train/x", {}, {}, run_dir=tmp_path, fingerprint={"train": 1})
    killed = ctx.__enter__()  # the process dies: the run stays RUNNING
    rows = [{"step": 1, "loss": 0.5}]
    with tracking.run(cfg, "train/x", {}, {}, run_dir=tmp_path, resume_rows=rows, fingerprint={"train": 2}) as other:
        pass
    assert other.run_id != killed.run_id
    status = {r["run_id"]: r["status"] for r in tracking.list_runs(cfg)}
    assert status == {killed.run_id: "KILLED", other.run_id: "FINISHED"}


@pytest.mark.parametrize("how", ["cp", "mv"])
def test_new_runs_of_a_copied_or_moved_clone_record_its_own_artifact_path(tmp_path, monkeypatch, empty_db, how):
    """The MLflow client (what the UI reads) lists the artifacts of old and new runs from the new place."""
    from mlflow.tracking import MlflowClient

    first, there = tmp_path / "first", tmp_path / "there"
    first.mkdir()
    shutil.copy(empty_db, first / "mlflow.db")
    cfg = TrackingCfg(uri="sqlite:///mlflow.db", experiment="clone")
    monkeypatch.chdir(first)
    (first / "a.txt").write_text("first")
    with tracking.run(cfg, "one", {}, {}) as one:
        one.log_artifact(first / "a.txt")
    monkeypatch.chdir(tmp_path)
    subprocess.run([how, "-a", str(first), str(there)] if how == "cp" else [how, str(first), str(there)], check=True)
    monkeypatch.chdir(there)
    (there / "b.txt").write_text("there")
    with tracking.run(cfg, "two", {}, {}) as two:
        two.log_artifact(there / "b.txt")
    client = MlflowClient(tracking_uri=tracking.store_uri(cfg))
    mlruns = (there / "mlruns").as_uri() + "/"
    for run, name in ((two, "b.txt"), (one, "a.txt")):
        info = client.get_run(run.run_id).info
        assert info.artifact_uri.startswith(mlruns), info.artifact_uri
        assert [f.path for f in client.list_artifacts(run.run_id)] == [name]
    assert client.get_experiment_by_name("clone").artifact_location == (there / "mlruns").as_uri()
    if how == "cp":  # the first clone's own store still names its own folder, and gained nothing
        first_client = MlflowClient(tracking_uri=f"sqlite:///{first / 'mlflow.db'}")
        assert first_client.get_run(one.run_id).info.artifact_uri.startswith((first / "mlruns").as_uri() + "/")
        assert sorted(p.name for p in (first / "mlruns").rglob("*.txt")) == ["a.txt"]


def test_sync_never_adds_a_folder_to_another_trainings_run(tmp_path, monkeypatch, empty_db):
    """A record naming a run of another fingerprint (e.g. written by an older version): a new run."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(empty_db, tmp_path / "mlflow.db")
    cfg = TrackingCfg(uri="sqlite:///mlflow.db", experiment="test")
    run_dir = tmp_path / "runs/train/prenet-rain-synth"
    with tracking.run(cfg, "train/prenet-rain-synth", {}, {}, run_dir=run_dir, fingerprint={"a": 1}) as older:
        older.log({"train/loss": 9.0}, 1)
    rec = json.loads((run_dir / tracking.RECORD).read_text())
    rec.update(fingerprint=tracking.identity({"a": 2}), synced=False)  # the folder now holds another training
    (run_dir / tracking.RECORD).write_text(json.dumps(rec))
    (run_dir / "train_log.csv").write_text("step,loss\n1,0.5\n2,0.25\n")
    lines = tracking.sync(cfg)
    assert len(lines) == 1 and "2 metric values sent" in lines[0] and older.run_id not in lines[0]
    new = next(r for r in tracking.list_runs(cfg) if r["run_id"] != older.run_id)
    assert new["tags"][tracking.FINGERPRINT_TAG] == rec["fingerprint"] and new["status"] == "FINISHED"
    assert _history(cfg.uri, older.run_id) == [1] and _history(cfg.uri, new["run_id"]) == [1, 2]
