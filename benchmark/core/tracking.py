"""Experiment tracking. The ONLY module that imports mlflow.

The entry points (pipelines/train.py, pipelines/evaluate.py) open one run each through
``run(...)``; the engine only ever receives the yielded ``Tracker`` (or its ``log`` method), so
models and the engine stay free of tracking code. With tracking disabled the same object is a
no-op, which is what tests and CI use. Metrics are buffered and sent with ``log_batch``: one
SQLite write per flush instead of one per value.

Tracking never stops a training. The run folder's ``train_log.csv`` (and ``last.pt``) hold every
metric, so when MLflow is unreachable (server down, SQLite locked or read-only) the tracker warns
once and goes quiet; ``mlflow_run.json`` in the run folder records which MLflow run the folder
belongs to and whether it still has to be sent. ``sync`` (``msgnn-bench tracking sync``) sends
what MLflow lacks, and a resumed training (after SIGKILL) continues its own MLflow run and fills
in the steps the killed process had buffered.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

from benchmark.core import io
from benchmark.core.config import TrackingCfg, flatten

RECORD = "mlflow_run.json"
PROBE_TIMEOUT_S = 3.0
OPEN_TRIES = 2  # opening a run on a locked SQLite store: one retry (each try waits out the 5 s busy timeout)


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
    offline = False

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        pass

    def flush(self) -> None:
        pass


def _warn_offline(cfg: TrackingCfg, reason: str, run_dir: Path | None) -> None:
    where = f"{run_dir}/train_log.csv" if run_dir else "the run folder"
    print(f"warning: tracking: MLflow at {cfg.uri} is unavailable ({reason}); training goes on, metrics are kept "
          f"in {where}; send them later with `msgnn-bench tracking sync`", file=sys.stderr)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


class MlflowTracker(Tracker):
    def __init__(self, client, run_id: str, cfg: TrackingCfg, run_dir: Path | None = None,
                 seen: set[tuple[str, int]] | None = None, artifact_dir: Path | None = None,
                 flush_every: int = 200):
        self.client, self.run_id, self.cfg, self.run_dir = client, run_id, cfg, run_dir
        self.seen, self.artifact_dir, self.flush_every = seen or set(), artifact_dir, flush_every
        self._buf: list = []

    def _offline(self, exc: BaseException) -> None:
        """First failure: one warning, then no more MLflow calls in this process."""
        if not self.offline:
            self.offline = True
            self._buf.clear()
            _warn_offline(self.cfg, _short(exc), self.run_dir)
            _update_record(self.run_dir, synced=False)

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.offline:
            return
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self._buf.extend(Metric(k, float(v), ts, int(step)) for k, v in metrics.items()
                         if v is not None and (k, int(step)) not in self.seen)
        if len(self._buf) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        try:
            while self._buf and not self.offline:  # log_batch accepts at most 1000 metrics per call
                self.client.log_batch(self.run_id, metrics=self._buf[:1000])
                self._buf = self._buf[1000:]
        except Exception as exc:  # noqa: BLE001 - any MLflow/HTTP/SQLite failure: keep training
            self._offline(exc)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        path = Path(path)
        if self.offline or not path.exists():
            return
        try:
            if self.artifact_dir is not None:  # a local store: write into this clone's mlruns/
                dest = self.artifact_dir / (folder or "")
                dest.mkdir(parents=True, exist_ok=True)
                if path.is_dir():
                    shutil.copytree(path, dest / path.name, dirs_exist_ok=True)
                else:
                    shutil.copy2(path, dest / path.name)
            elif path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), folder)
            else:
                self.client.log_artifact(self.run_id, str(path), folder)
        except Exception as exc:  # noqa: BLE001
            self._offline(exc)


def _probe(uri: str) -> str:
    """'' when an HTTP tracking server answers within a few seconds, else why not. MLflow's own
    client retries for minutes before failing, which a training must not wait for. The bound is on
    the whole answer, not per read: a server trickling a byte a second costs ``PROBE_TIMEOUT_S``
    (the request runs in a daemon thread that is left behind if it has not finished by then)."""
    if not uri.startswith(("http://", "https://")):
        return ""
    import threading

    box: dict[str, str] = {}

    def ask() -> None:
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S).close()
            box["why"] = ""
        except urllib.error.HTTPError:
            box["why"] = ""  # it answered (an auth or path error is for MLflow to report)
        except Exception as exc:  # noqa: BLE001 - refused, timed out, garbage (http.client errors)
            box["why"] = f"no answer within {PROBE_TIMEOUT_S:g} s: {getattr(exc, 'reason', exc)}"

    worker = threading.Thread(target=ask, name="mlflow-probe", daemon=True)
    worker.start()
    worker.join(PROBE_TIMEOUT_S)
    if worker.is_alive():
        return f"no complete answer within {PROBE_TIMEOUT_S:g} s (a stalled or trickling server)"
    return box.get("why", "")


def artifact_root(cfg: TrackingCfg) -> Path:
    """``mlruns/`` beside a SQLite database (the repository root for the default ``sqlite:///mlflow.db``),
    else beside the working directory; resolved now, so a copied or moved clone uses its own."""
    if cfg.uri.startswith("sqlite:///"):
        return Path(cfg.uri[len("sqlite:///"):]).parent.resolve() / "mlruns"
    return Path("mlruns").resolve()


def store_uri(cfg: TrackingCfg) -> str:
    """The tracking URI with a relative SQLite path made absolute now: MLflow caches one store per
    URI string, so a relative one would keep writing to the database of the first working folder."""
    if cfg.uri.startswith("sqlite:///") and not cfg.uri.startswith("sqlite:////"):
        return "sqlite:///" + Path(cfg.uri[len("sqlite:///"):]).resolve().as_posix()
    return cfg.uri


def _client(cfg: TrackingCfg):
    # fail within seconds, not after MLflow's default minutes of HTTP retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = store_uri(cfg)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    with _init_lock(uri):
        return _experiment(client, cfg)


@contextlib.contextmanager
def _init_lock(uri: str) -> Iterator[None]:
    """Serialise the first use of a SQLite store between processes. MLflow creates and migrates the
    schema on first use, and two processes doing that on one fresh file (two grid workers, a SLURM
    array) leave it half-migrated and unusable ("table _alembic_tmp_latest_metrics already exists",
    measured with two workers in tests/test_tracking_server.py). An flock on ``<db>.lock`` beside the
    database makes the second process wait the seconds the first one needs."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    path = Path(uri[len("sqlite:///"):] + ".lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # read-only folder: no lock, the store itself will say what is wrong
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _experiment(client, cfg: TrackingCfg):
    exp = client.get_experiment_by_name(cfg.experiment)
    if exp is not None:
        return client, exp.experiment_id
    # a tracking server picks the artifact location itself (with --serve-artifacts: its own
    # --artifacts-destination, readable from every machine); a local store gets this clone's mlruns/
    remote = cfg.uri.startswith(("http://", "https://"))
    try:
        exp_id = client.create_experiment(cfg.experiment,
                                          artifact_location=None if remote else artifact_root(cfg).as_uri())
    except Exception:  # noqa: BLE001 - workers starting together: another one created it first
        exp = client.get_experiment_by_name(cfg.experiment)
        if exp is None:
            raise
        exp_id = exp.experiment_id
    return client, exp_id


def _local_artifacts(cfg: TrackingCfg, client, run_id: str) -> Path | None:
    """Where this clone keeps a run's artifacts, when the store is a local folder: the run's
    artifact path taken relative to the ``mlruns/`` it was created under and re-rooted in this
    clone's ``mlruns/`` (MLflow records absolute paths, which point into the first clone)."""
    uri = client.get_run(run_id).info.artifact_uri
    if not uri.startswith("file:") and "://" in uri:
        return None
    parts = Path(uri.removeprefix("file://").removeprefix("file:")).parts
    if "mlruns" not in parts:
        return None
    rel = parts[len(parts) - 1 - parts[::-1].index("mlruns") + 1:]
    return artifact_root(cfg).joinpath(*rel)


def _read_record(run_dir: Path | None) -> dict:
    try:
        return json.loads((run_dir / RECORD).read_text()) if run_dir else {}
    except (OSError, ValueError):
        return {}


def _update_record(run_dir: Path | None, **changes) -> None:
    if run_dir is not None:
        rec = _read_record(run_dir)
        rec.update(changes)
        try:
            io.write_json(run_dir / RECORD, rec)
        except OSError as exc:
            print(f"warning: {exc}", file=sys.stderr)


def rows_to_metrics(rows: list[dict]) -> list[tuple[str, float, int]]:
    """(metric, value, step) of train-log rows, named as the training logs them (``train/<column>``)."""
    out = []
    for row in rows:
        step = int(float(row["step"]))
        for k, v in row.items():
            if k != "step" and v not in (None, ""):
                out.append((f"train/{k}", float(v), step))
    return out


def _logged_steps(client, run_id: str, keys: set[str]) -> set[tuple[str, int]]:
    return {(k, m.step) for k in keys for m in client.get_metric_history(run_id, k)}


def _backfill(client, run_id: str, rows: list[dict]) -> tuple[set[tuple[str, int]], int]:
    """Send the rows' metrics MLflow does not have yet; returns (all (metric, step) now logged, number sent)."""
    from mlflow.entities import Metric

    triples = rows_to_metrics(rows)
    seen = _logged_steps(client, run_id, {k for k, _, _ in triples})
    ts = int(time.time() * 1000)
    todo = [Metric(k, v, ts, s) for k, v, s in triples if (k, s) not in seen]
    for i in range(0, len(todo), 1000):
        client.log_batch(run_id, metrics=todo[i:i + 1000])
    return seen | {(m.key, m.step) for m in todo}, len(todo)


def _open(cfg: TrackingCfg, name: str, params: dict, tags: dict, run_dir: Path | None, resume_rows: list | None):
    """Continue the folder's own MLflow run after a kill (when the training resumes), else a new run."""
    from mlflow.entities import Param

    client, exp_id = _client(cfg)
    rec = _read_record(run_dir)
    old = rec.get("run_id") if rec.get("uri") == cfg.uri and rec.get("experiment") == cfg.experiment else None
    old_run = None
    if old:
        with contextlib.suppress(Exception):
            old_run = client.get_run(old)
    if old_run is not None and resume_rows is not None and old_run.info.status != "FINISHED":
        run_id = old
        client.update_run(run_id, status="RUNNING")
    else:
        if old_run is not None and old_run.info.status == "RUNNING":  # killed, and not continued: close it
            client.set_terminated(old, status="KILLED")
        all_tags = {"mlflow.runName": name, "git_commit": git_commit(), **tags}
        run_id = client.create_run(exp_id, run_name=name, tags={k: str(v) for k, v in all_tags.items()}).info.run_id
        plist = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(plist), 100):  # log_batch takes at most 100 params per call
            client.log_batch(run_id, params=plist[i:i + 100])
    seen, _ = _backfill(client, run_id, resume_rows or [])
    return client, run_id, seen


@contextlib.contextmanager
def run(cfg: TrackingCfg, name: str, params: dict[str, Any], tags: dict[str, str], run_dir: str | Path | None = None,
        resume_rows: list[dict] | None = None) -> Iterator[Tracker]:
    """Open a tracked run; marks it FAILED (and re-raises) if the body raises.

    ``run_dir`` (a training's folder) records the MLflow run in ``mlflow_run.json``; ``resume_rows``
    (the log rows of the checkpoint a training resumes from) makes it continue that run and send the
    rows MLflow lacks. An unreachable MLflow gives a no-op tracker and one warning."""
    if not cfg.enabled:
        yield Tracker()
        return
    run_dir = Path(run_dir) if run_dir is not None else None
    base = {"uri": cfg.uri, "experiment": cfg.experiment, "name": name, "tags": tags}
    reason = _probe(cfg.uri)
    tracker: Tracker
    for attempt in range(OPEN_TRIES if not reason else 0):
        try:
            client, run_id, seen = _open(cfg, name, params, tags, run_dir, resume_rows)
            tracker = MlflowTracker(client, run_id, cfg, run_dir, seen, _local_artifacts(cfg, client, run_id))
            reason = ""
            break
        except Exception as exc:  # noqa: BLE001 - SQLite locked/read-only, server error, ...
            reason = _short(exc)
            # SQLite allows one writer: workers starting together (the grid, a SLURM array) collide
            # on "database is locked"; that clears within seconds, so wait and retry before going offline
            if "locked" not in reason or attempt == OPEN_TRIES - 1:
                break
            time.sleep(0.5 + random.random())
    if reason:
        _warn_offline(cfg, reason, run_dir)
        tracker = Tracker()
        tracker.offline = True
        _update_record(run_dir, **base, status="RUNNING", synced=False)
    else:
        _update_record(run_dir, **base, run_id=tracker.run_id, status="RUNNING", synced=True)

    def close(status: str) -> None:
        tracker.flush()
        if not tracker.offline:
            try:
                tracker.client.set_terminated(tracker.run_id, status=status)
            except Exception as exc:  # noqa: BLE001
                tracker._offline(exc)
        _update_record(run_dir, status=status)

    try:
        yield tracker
    except BaseException:
        close("FAILED")
        raise
    close("FINISHED")


def list_runs(cfg: TrackingCfg) -> list[dict[str, Any]]:
    """Runs of the experiment as plain dicts (name, status, tags, metrics) — for tests and the CLI."""
    client, exp_id = _client(cfg)
    out = []
    for r in client.search_runs([exp_id], max_results=10000):
        out.append({"name": r.info.run_name, "status": r.info.status, "run_id": r.info.run_id,
                    "tags": dict(r.data.tags), "metrics": dict(r.data.metrics), "params": dict(r.data.params)})
    return out


def _read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return io.read_csv_rows(path)


def sync(cfg: TrackingCfg, root: str | Path = "runs/train") -> list[str]:
    """Send every training folder's metrics that MLflow lacks (offline runs, runs killed before their
    buffer was sent) and close killed runs; returns one line per folder handled. Folders of a
    training still in progress (their lock is held) are left alone."""
    import yaml

    from benchmark.core.checkpoints import RunLock
    from benchmark.core.runs import run_dirs  # ablation variants sit one level deeper

    reason = _probe(cfg.uri)
    if reason:
        raise OSError(f"tracking: MLflow at {cfg.uri} is unavailable ({reason}); nothing sent")
    client, exp_id = _client(cfg)
    done = []
    root = Path(root)
    for run_dir in [p for p in run_dirs(root.parent, root.name) if (p / RECORD).is_file()]:
        rec = _read_record(run_dir)
        lock = RunLock(run_dir)
        holder = lock._holder()
        if holder and lock._alive(holder[0]) and holder[0] != os.getpid():
            done.append(f"{run_dir}: training in progress (process {holder[0]}); skipped")
            continue
        run_id = rec.get("run_id") if rec.get("uri") == cfg.uri else None
        if run_id:
            try:
                status = client.get_run(run_id).info.status
            except Exception:  # noqa: BLE001 - not in this store
                run_id = None
        if rec.get("synced") and run_id and status != "RUNNING":
            continue
        if not run_id:
            conf = run_dir / "config.yaml"
            params = flatten(yaml.safe_load(conf.read_text()) or {}) if conf.is_file() else {}
            tags = {"mlflow.runName": rec.get("name", f"train/{run_dir.name}"), "git_commit": git_commit(),
                    **rec.get("tags", {})}
            run_id = client.create_run(exp_id, run_name=tags["mlflow.runName"],
                                       tags={k: str(v) for k, v in tags.items()}).info.run_id
            from mlflow.entities import Param

            plist = [Param(k, str(v)[:6000]) for k, v in params.items()]
            for i in range(0, len(plist), 100):
                client.log_batch(run_id, params=plist[i:i + 100])
        _, sent = _backfill(client, run_id, _read_log(run_dir / "train_log.csv"))
        final = rec.get("status", "RUNNING")
        final = "KILLED" if final == "RUNNING" else final  # nobody holds the lock: the process is gone
        client.set_terminated(run_id, status=final)
        _update_record(run_dir, uri=cfg.uri, experiment=cfg.experiment, run_id=run_id, status=final, synced=True)
        done.append(f"{run_dir}: {sent} metric values sent to run {run_id} ({final})")
    return done


def latest_run_id(cfg: TrackingCfg, name: str) -> str | None:
    """Id of the newest FINISHED run called ``name`` (e.g. ``train/<key>``), or None (none, or tracking off)."""
    if not cfg.enabled:
        return None
    if _probe(cfg.uri):  # unreachable: a link is a nicety, never a reason to stop
        return None
    try:
        client, exp_id = _client(cfg)
        for r in client.search_runs([exp_id], filter_string="attributes.status = 'FINISHED'",
                                    order_by=["attributes.start_time DESC"], max_results=5000):
            if r.info.run_name == name:
                return r.info.run_id
    except Exception:  # noqa: BLE001 - store locked/unreadable: no link
        return None
    return None
