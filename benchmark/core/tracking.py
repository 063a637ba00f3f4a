"""Experiment tracking. The ONLY module that imports mlflow.

The entry points (pipelines/train.py, pipelines/evaluate.py) open one run each through
``run(...)``; the engine only ever receives the yielded ``Tracker`` (or its ``log`` method), so
models and the engine stay free of tracking code. With tracking disabled the same object is a
no-op, which is what tests and CI use. Metrics are buffered and sent with ``log_batch``: one
SQLite write per flush instead of one per value.

Tracking never stops a training. The run folder's ``train_log.csv`` (and ``last.pt``) hold every
metric, so when MLflow is unreachable (server down, SQLite locked or read-only) the tracker warns
once and goes quiet; ``mlflow_run.json`` in the run folder records which MLflow run the folder
belongs to, which training that is (its resume fingerprint, also the run's ``run_fingerprint`` tag),
which process opened it, and whether it still has to be sent. ``sync`` (``msgnn-bench tracking
sync``) sends what MLflow lacks and closes the runs of dead processes (trainings and evaluations);
a resumed training (after SIGKILL) continues its own MLflow run and fills in the steps the killed
process had buffered. A run is only ever continued by the training it belongs to: a new training in
the same folder (other settings, code or data) gets a new run, also when it started offline.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import socket
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
FINGERPRINT_TAG = "run_fingerprint"
KINDS = ("train", "eval")  # the run folders `sync` looks after: runs/train/<key>, runs/eval/<key>


def identity(fingerprint: dict | str | None) -> str | None:
    """A training's identity for MLflow: the sha256 of its resume fingerprint
    (``checkpoints.run_fingerprint``: settings, model, code and data), as text for a tag."""
    if fingerprint is None or isinstance(fingerprint, str):
        return fingerprint
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks after boot, field 22 of /proc/<pid>/stat): with the pid
    it names one process, so a pid reused by an unrelated process is not taken for the recorded one.
    'Z' for a zombie (dead, not yet reaped); None where /proc cannot tell."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return "Z" if fields[0] == "Z" else fields[19]


def _owner() -> dict:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "started": _process_start(pid)}


def _owner_alive(rec: dict) -> bool | None:
    """Whether the process that opened the record's run still runs: None when it ran on another host
    (nobody here can tell), False for this process itself (``sync`` is the caller)."""
    pid = rec.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    if rec.get("host") != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    started = _process_start(pid)
    return started != "Z" and (started is None or rec.get("started") in (None, started))


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
    with _init_lock(uri):
        # the client's constructor opens the store, and opening a fresh SQLite file creates and migrates
        # its schema: that must happen under the lock too, not only the experiment's creation
        client = MlflowClient(tracking_uri=uri)
        client, exp_id = _experiment(client, cfg)
        _rebase_artifacts(cfg, uri, client.get_experiment(exp_id).artifact_location)
        return client, exp_id


def _rebase_artifacts(cfg: TrackingCfg, uri: str, location: str | None) -> None:
    """Point a local store's artifact paths at the ``mlruns/`` beside it after the clone was copied
    or moved. MLflow stores absolute paths: an experiment's artifact location is fixed when it is
    created and every new run's path is derived from it, so in a copied clone new runs (and the
    UI) would name the first clone's folder. ``mlflow.db`` and ``mlruns/`` travel together, so every
    path under the ``mlruns/`` the database was made beside is rewritten to the current one (the
    experiments' locations and the runs' artifact URIs), once, in one transaction. Locations of
    another shape (chosen by the user, a server's) are left alone."""
    if not uri.startswith("sqlite:///") or not location or not location.startswith("file:"):
        return
    # this suite creates the experiment at ``<root>/mlruns`` (MLflow's default is ``<root>/mlruns/<id>``)
    head, sep, tail = location.rstrip("/").rpartition("/mlruns")
    here = artifact_root(cfg).as_uri()
    if not sep or (tail and not tail[1:].isdigit()) or head + "/mlruns" == here:
        return
    import sqlite3

    old = head + "/mlruns"
    try:
        con = sqlite3.connect(uri[len("sqlite:///"):], timeout=5, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            for table, col in (("experiments", "artifact_location"), ("runs", "artifact_uri")):
                con.execute(f"UPDATE {table} SET {col} = ? || substr({col}, ?) "
                            f"WHERE {col} = ? OR substr({col}, 1, ?) = ?",
                            (here, len(old) + 1, old, len(old) + 1, old + "/"))
            con.execute("COMMIT")
        finally:
            con.close()
    except sqlite3.Error as exc:  # read-only or locked: artifacts still go to this clone (_local_artifacts)
        print(f"warning: tracking: {uri}: could not move its artifact paths to {here} ({exc}); "
              "the MLflow UI may not show new artifacts", file=sys.stderr)


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
    """Merge ``changes`` into the folder's record (a None value removes the key)."""
    if run_dir is not None:
        rec = _read_record(run_dir)
        rec.update(changes)
        rec = {k: v for k, v in rec.items() if v is not None}
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
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


def eval_metrics(results: dict) -> list[tuple[str, float, int]]:
    """(metric, value, step 0) of an evaluation's ``metrics.json`` results, named as ``evaluate`` logs them."""
    return [(f"test/{name}/{k}", float(v), 0) for name, summary in results.items() if isinstance(summary, dict)
            for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]


def _logged_steps(client, run_id: str, keys: set[str]) -> set[tuple[str, int]]:
    return {(k, m.step) for k in keys for m in client.get_metric_history(run_id, k)}


def _send(client, run_id: str, triples: list[tuple[str, float, int]]) -> tuple[set[tuple[str, int]], int]:
    """Send the (metric, value, step) MLflow does not have yet; returns (all (metric, step) now logged, number sent)."""
    from mlflow.entities import Metric

    seen = _logged_steps(client, run_id, {k for k, _, _ in triples})
    ts = int(time.time() * 1000)
    todo = [Metric(k, v, ts, s) for k, v, s in triples if (k, s) not in seen]
    for i in range(0, len(todo), 1000):
        client.log_batch(run_id, metrics=todo[i:i + 1000])
    return seen | {(m.key, m.step) for m in todo}, len(todo)


def _backfill(client, run_id: str, rows: list[dict]) -> tuple[set[tuple[str, int]], int]:
    return _send(client, run_id, rows_to_metrics(rows))


def _new_run(client, exp_id: str, name: str, params: dict, tags: dict, fingerprint: str | None) -> str:
    from mlflow.entities import Param

    all_tags = {"mlflow.runName": name, "git_commit": git_commit(), **tags}
    if fingerprint:
        all_tags[FINGERPRINT_TAG] = fingerprint
    run_id = client.create_run(exp_id, run_name=name, tags={k: str(v) for k, v in all_tags.items()}).info.run_id
    plist = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(plist), 100):  # log_batch takes at most 100 params per call
        client.log_batch(run_id, params=plist[i:i + 100])
    return run_id


def _recorded_run(client, cfg: TrackingCfg, rec: dict):
    """The MLflow run the record names, or None (none recorded, another store, gone)."""
    if not rec.get("run_id") or rec.get("uri") != cfg.uri or rec.get("experiment", cfg.experiment) != cfg.experiment:
        return None
    try:
        return client.get_run(rec["run_id"])
    except Exception:  # noqa: BLE001 - not in this store
        return None


def _open(cfg: TrackingCfg, name: str, params: dict, tags: dict, run_dir: Path | None, resume_rows: list | None,
          fingerprint: str | None = None):
    """Continue the folder's own MLflow run after a kill (when the very same training resumes: same
    fingerprint), else a new run."""
    client, exp_id = _client(cfg)
    rec = _read_record(run_dir)
    old_run = _recorded_run(client, cfg, rec)
    ours = old_run is not None and old_run.data.tags.get(FINGERPRINT_TAG) == fingerprint
    if ours and resume_rows is not None and old_run.info.status != "FINISHED":
        run_id = old_run.info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        if old_run is not None and old_run.info.status == "RUNNING":  # killed, and not continued: close it
            client.set_terminated(old_run.info.run_id, status="KILLED")
        run_id = _new_run(client, exp_id, name, params, tags, fingerprint)
    seen, _ = _backfill(client, run_id, resume_rows or [])
    return client, run_id, seen


def _offline_record(rec: dict, cfg: TrackingCfg, fingerprint: str | None, resume_rows: list | None) -> dict:
    """What an offline start keeps of the folder's record: its MLflow run only when this process
    continues that very training (same fingerprint, resumed, not finished), else no run (``sync``
    creates one) and the old run noted as ``replaced`` so that ``sync`` closes it if it was killed.
    Keeping an older training's run id would make ``sync`` append this training to it."""
    same_store = rec.get("uri") == cfg.uri and rec.get("experiment") == cfg.experiment
    if not rec.get("run_id") or not same_store:
        return {"run_id": None}
    if rec.get("fingerprint") == fingerprint and resume_rows is not None and rec.get("status") != "FINISHED":
        return {}
    return {"run_id": None, "replaced": rec["run_id"]}


@contextlib.contextmanager
def run(cfg: TrackingCfg, name: str, params: dict[str, Any], tags: dict[str, str], run_dir: str | Path | None = None,
        resume_rows: list[dict] | None = None, fingerprint: dict | str | None = None) -> Iterator[Tracker]:
    """Open a tracked run; marks it FAILED (KILLED when a signal stopped it) and re-raises if the body raises.

    ``run_dir`` (a training's or an evaluation's folder) records the MLflow run in ``mlflow_run.json``;
    ``fingerprint`` (a training's ``checkpoints.run_fingerprint``) says which training the folder now
    holds; ``resume_rows`` (the log rows of the checkpoint a training resumes from) makes it continue
    that training's run and send the rows MLflow lacks. An unreachable MLflow gives a no-op tracker
    and one warning."""
    if not cfg.enabled:
        yield Tracker()
        return
    run_dir = Path(run_dir) if run_dir is not None else None
    fingerprint = identity(fingerprint)
    base = {"uri": cfg.uri, "experiment": cfg.experiment, "name": name, "tags": tags, "fingerprint": fingerprint,
            **_owner()}
    reason = _probe(cfg.uri)
    tracker: Tracker
    for attempt in range(OPEN_TRIES if not reason else 0):
        try:
            client, run_id, seen = _open(cfg, name, params, tags, run_dir, resume_rows, fingerprint)
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
        keep = _offline_record(_read_record(run_dir), cfg, fingerprint, resume_rows)
        _update_record(run_dir, **keep, **base, status="RUNNING", synced=False)
    else:
        _update_record(run_dir, **base, run_id=tracker.run_id, replaced=None, status="RUNNING", synced=True)

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
    except BaseException as exc:
        # a run stopped on a signal says so (``signals.Stopped.run_status``: KILLED); anything else FAILED
        close(getattr(exc, "run_status", "FAILED"))
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


def _busy(run_dir: Path, rec: dict) -> str:
    """'' when no live process works in the folder, else why it is left alone."""
    from benchmark.core.checkpoints import RunLock

    lock = RunLock(run_dir)  # a training's folder lock
    holder = lock._holder()
    if holder and lock._alive(holder[0]) and holder[0] != os.getpid():
        return f"training in progress (process {holder[0]})"
    if rec.get("status") != "RUNNING":
        return ""
    alive = _owner_alive(rec)
    if alive is None:
        return f"opened by process {rec.get('pid')} on host {rec.get('host')}; run `tracking sync` there to close it"
    return f"in progress (process {rec['pid']})" if alive else ""


def _folder_metrics(run_dir: Path, kind: str, status: str) -> list[tuple[str, float, int]]:
    """What a folder holds for MLflow: a training's whole log; a finished evaluation's results."""
    if kind == "train":
        return rows_to_metrics(_read_log(run_dir / "train_log.csv"))
    try:
        results = json.loads((run_dir / "metrics.json").read_text()).get("results", {})
    except (OSError, ValueError, AttributeError):
        return []
    return eval_metrics(results) if status == "FINISHED" and isinstance(results, dict) else []


def _sync_folder(client, exp_id: str, cfg: TrackingCfg, run_dir: Path, kind: str) -> str:
    """Bring one run folder's MLflow run up to date; returns what was done ('' for nothing)."""
    import yaml

    rec = _read_record(run_dir)
    why = _busy(run_dir, rec)
    if why:
        return f"{run_dir}: {why}; skipped"
    replaced = _recorded_run(client, cfg, {**rec, "run_id": rec.get("replaced")})
    if replaced is not None and replaced.info.status == "RUNNING":  # a killed run this folder no longer continues
        client.set_terminated(replaced.info.run_id, status="KILLED")
    run = _recorded_run(client, cfg, rec)
    if run is not None and run.data.tags.get(FINGERPRINT_TAG) != rec.get("fingerprint"):
        run = None  # the id is another training's (an older record): never add this folder's metrics to it
    if rec.get("synced") and run is not None and run.info.status != "RUNNING":
        return ""
    final = rec.get("status", "RUNNING")
    final = "KILLED" if final == "RUNNING" else final  # nobody works in the folder: the process is gone
    if run is None:
        conf = run_dir / "config.yaml"
        params = flatten(yaml.safe_load(conf.read_text()) or {}) if conf.is_file() else {}
        run_id = _new_run(client, exp_id, rec.get("name", f"{'evaluate' if kind == 'eval' else kind}/{run_dir.name}"),
                          params, rec.get("tags", {}), rec.get("fingerprint"))
    else:
        run_id = run.info.run_id
    _, sent = _send(client, run_id, _folder_metrics(run_dir, kind, final))
    client.set_terminated(run_id, status=final)
    _update_record(run_dir, uri=cfg.uri, experiment=cfg.experiment, run_id=run_id, replaced=None, status=final,
                   synced=True)
    return f"{run_dir}: {sent} metric values sent to run {run_id} ({final})"


def sync(cfg: TrackingCfg, root: str | Path = "runs") -> list[str]:
    """Send every run folder's metrics that MLflow lacks (offline runs, runs killed before their
    buffer was sent) and close the runs of killed trainings and evaluations; returns one line per
    folder handled. ``root`` is the runs folder (its ``train/`` and ``eval/``) or one of those two.
    Folders a live process works in (a held training lock, the recorded process still running)
    are left alone."""
    from benchmark.core.runs import run_dirs  # ablation variants sit one level deeper

    reason = _probe(cfg.uri)
    if reason:
        raise OSError(f"tracking: MLflow at {cfg.uri} is unavailable ({reason}); nothing sent")
    client, exp_id = _client(cfg)
    root = Path(root)
    where = [(root.parent, root.name)] if root.name in KINDS else [(root, k) for k in KINDS]
    done = []
    for base, kind in where:
        for run_dir in [p for p in run_dirs(base, kind) if (p / RECORD).is_file()]:
            if line := _sync_folder(client, exp_id, cfg, run_dir, kind):
                done.append(line)
    return done


def latest_run_id(cfg: TrackingCfg, name: str, run_dir: str | Path | None = None) -> str | None:
    """Id of the MLflow run of a training, for an evaluation's link: the run recorded in its folder
    ``run_dir`` when that folder has a record (None while it is unsent: an offline training's run
    does not exist yet, and an older run of the same name is another training), else the newest
    FINISHED run called ``name`` (e.g. ``train/<key>``); None when none, or tracking is off."""
    if not cfg.enabled:
        return None
    if _probe(cfg.uri):  # unreachable: a link is a nicety, never a reason to stop
        return None
    rec = _read_record(Path(run_dir)) if run_dir is not None else {}
    try:
        client, exp_id = _client(cfg)
        if rec:
            run = _recorded_run(client, cfg, rec) if rec.get("synced") else None
            ok = run is not None and run.info.status == "FINISHED" and \
                run.data.tags.get(FINGERPRINT_TAG) == rec.get("fingerprint")
            return run.info.run_id if ok else None
        for r in client.search_runs([exp_id], filter_string="attributes.status = 'FINISHED'",
                                    order_by=["attributes.start_time DESC"], max_results=5000):
            if r.info.run_name == name:
                return r.info.run_id
    except Exception:  # noqa: BLE001 - store locked/unreadable: no link
        return None
    return None
