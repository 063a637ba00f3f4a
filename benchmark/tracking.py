"""Experiment tracking. The ONLY module that imports mlflow.

The entry points (pipelines/train.py, pipelines/evaluate.py) open one run each through
``run(...)``; the engine only ever receives the yielded ``Tracker`` (or its ``log`` method), so
models and the engine stay free of tracking code. With tracking disabled the same object is a
no-op, which is what tests and CI use. Metrics are buffered and sent with ``log_batch``: one
SQLite write per flush instead of one per value.
"""
from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

from benchmark.config import TrackingCfg


def git_commit() -> str:
    """HEAD's hash, suffixed ``-dirty`` when tracked files have uncommitted changes."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class Tracker:
    """No-op tracker; ``MlflowTracker`` overrides the methods."""

    run_id: str | None = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        pass

    def flush(self) -> None:
        pass


class MlflowTracker(Tracker):
    def __init__(self, client, run_id: str, flush_every: int = 200):
        self.client, self.run_id, self.flush_every = client, run_id, flush_every
        self._buf: list = []

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self._buf.extend(Metric(k, float(v), ts, int(step)) for k, v in metrics.items() if v is not None)
        if len(self._buf) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        while self._buf:  # log_batch accepts at most 1000 metrics per call
            chunk, self._buf = self._buf[:1000], self._buf[1000:]
            self.client.log_batch(self.run_id, metrics=chunk)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), folder)
        elif path.is_file():
            self.client.log_artifact(self.run_id, str(path), folder)


def _client(cfg: TrackingCfg):
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(cfg.uri)
    client = MlflowClient(tracking_uri=cfg.uri)
    exp = client.get_experiment_by_name(cfg.experiment)
    if exp is None:
        # artifacts beside the database, in the repo (git-ignored), not wherever the first run's cwd was
        exp_id = client.create_experiment(cfg.experiment, artifact_location=Path("mlruns").resolve().as_uri())
    else:
        exp_id = exp.experiment_id
    return client, exp_id


@contextlib.contextmanager
def run(cfg: TrackingCfg, name: str, params: dict[str, Any], tags: dict[str, str]) -> Iterator[Tracker]:
    """Open a tracked run; marks it FAILED (and re-raises) if the body raises."""
    if not cfg.enabled:
        yield Tracker()
        return
    from mlflow.entities import Param

    client, exp_id = _client(cfg)
    all_tags = {"mlflow.runName": name, "git_commit": git_commit(), **tags}
    r = client.create_run(exp_id, run_name=name, tags={k: str(v) for k, v in all_tags.items()})
    tracker = MlflowTracker(client, r.info.run_id)
    plist = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(plist), 100):  # log_batch takes at most 100 params per call
        client.log_batch(r.info.run_id, params=plist[i:i + 100])
    try:
        yield tracker
    except BaseException:
        tracker.flush()
        client.set_terminated(r.info.run_id, status="FAILED")
        raise
    tracker.flush()
    client.set_terminated(r.info.run_id, status="FINISHED")


def list_runs(cfg: TrackingCfg) -> list[dict[str, Any]]:
    """Runs of the experiment as plain dicts (name, status, tags, metrics) — for tests and the CLI."""
    client, exp_id = _client(cfg)
    out = []
    for r in client.search_runs([exp_id], max_results=10000):
        out.append({"name": r.info.run_name, "status": r.info.status, "run_id": r.info.run_id,
                    "tags": dict(r.data.tags), "metrics": dict(r.data.metrics), "params": dict(r.data.params)})
    return out


def latest_run_id(cfg: TrackingCfg, name: str) -> str | None:
    """Id of the newest FINISHED run called ``name`` (e.g. ``train/<key>``), or None (none, or tracking off)."""
    if not cfg.enabled:
        return None
    client, exp_id = _client(cfg)
    for r in client.search_runs([exp_id], filter_string="attributes.status = 'FINISHED'",
                                order_by=["attributes.start_time DESC"], max_results=5000):
        if r.info.run_name == name:
            return r.info.run_id
    return None
