"""Killed processes leave nothing open behind them (issue 26): an evaluation SIGKILLed mid-run has its
MLflow run closed by `tracking sync` (only once the process is gone), and a download SIGKILLed
mid-transfer has its `downloads/<name>/.work-*` folder removed when the next download starts (only
folders no live download holds). Real child processes, real signals, a real SQLite MLflow store and
real local HTTP servers."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from benchmark.core import config, tracking
from benchmark.tools import cli
from pipelines import train

from .conftest import REPO
from .helpers.dataset_fixtures import SHARED, make_zip, rain100l_registry, serve, server  # noqa: F401
from .test_tracking import empty_db, workdir  # noqa: F401 (fixtures)

ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "no_proxy": "127.0.0.1,localhost"}


def _wait_for(what, timeout: float = 120.0, proc: subprocess.Popen | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if (got := what()):
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"child exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.1)
    raise AssertionError("timed out")


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


# --- a killed evaluation ------------------------------------------------------------------------

_EVALUATE_THEN_HANG = textwrap.dedent("""
    import sys, time, pathlib, yaml
    from benchmark.evaluation import inference, run
    real = inference.evaluate
    def evaluate_then_hang(*a, **k):  # the MLflow run is open and the first set evaluated
        out = real(*a, **k)
        pathlib.Path("evaluating").write_text("now")
        time.sleep(600)  # the test kills the process here
        return out
    inference.evaluate = evaluate_then_hang
    run.evaluate("prenet", "rain-synth", params=yaml.safe_load(open(sys.argv[1])), progress=False)
""")


def test_sync_closes_a_killed_evaluation_only_once_its_process_is_gone(workdir, tiny_params):
    train.train("prenet", "rain-synth", params=tiny_params, progress=False)
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    proc = subprocess.Popen([sys.executable, "-c", _EVALUATE_THEN_HANG, "params.yaml"], cwd=workdir, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (workdir / "evaluating").exists(), proc=proc)
        cfg = config.resolve("prenet", "rain-synth", tiny_params).tracking
        running = next(r for r in tracking.list_runs(cfg) if r["name"] == "evaluate/prenet-rain-synth")
        rec_path = workdir / "runs/eval/prenet-rain-synth" / tracking.RECORD
        rec = json.loads(rec_path.read_text())
        assert running["status"] == "RUNNING" and rec["run_id"] == running["run_id"] and rec["pid"] == proc.pid
        # still working: sync leaves it alone
        assert tracking.sync(cfg) == [f"runs/eval/prenet-rain-synth: in progress (process {proc.pid}); skipped"]
        assert next(r for r in tracking.list_runs(cfg) if r["run_id"] == running["run_id"])["status"] == "RUNNING"
    finally:
        if proc.poll() is None:
            _kill(proc)
    assert not (workdir / "runs/eval/prenet-rain-synth/metrics.json").exists()
    assert cli.main(["tracking", "sync"]) == 0
    after = next(r for r in tracking.list_runs(cfg) if r["run_id"] == running["run_id"])
    assert after["status"] == "KILLED"
    assert json.loads(rec_path.read_text())["status"] == "KILLED"
    assert tracking.sync(cfg) == []  # closed once; nothing left to do


def test_sync_sends_an_evaluation_made_while_mlflow_was_down(workdir, tiny_params, capsys):
    from benchmark.evaluation.run import evaluate

    from .test_tracking import _free_port

    train.train("prenet", "rain-synth", params=tiny_params, progress=False)
    good = tiny_params["tracking"]["uri"]
    tiny_params["tracking"]["uri"] = f"http://127.0.0.1:{_free_port()}"
    res = evaluate("prenet", "rain-synth", params=tiny_params, progress=False)
    assert res["mlflow_run_id"] is None and "warning: tracking:" in capsys.readouterr().err
    tiny_params["tracking"]["uri"] = good
    cfg = config.resolve("prenet", "rain-synth", tiny_params).tracking
    lines = tracking.sync(cfg)
    assert len(lines) == 1 and "runs/eval/prenet-rain-synth" in lines[0] and "(FINISHED)" in lines[0]
    run = next(r for r in tracking.list_runs(cfg) if r["name"] == "evaluate/prenet-rain-synth")
    assert run["status"] == "FINISHED" and run["tags"]["kind"] == "evaluate"
    assert run["metrics"]["test/rain-synth/psnr_y"] == pytest.approx(res["results"]["rain-synth"]["psnr_y"])


# --- a killed download --------------------------------------------------------------------------

class _Slow:
    """A local HTTP server sending its one file at a few KiB a second (a download that takes minutes)."""

    def __init__(self, body: bytes):
        class H(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    for i in range(0, len(body), 8192):
                        self.wfile.write(body[i:i + 8192])
                        self.wfile.flush()
                        time.sleep(1.0)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/Rain100L.zip"
        threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


_DOWNLOAD = "import sys; from benchmark import datasets as ds; " \
            "ds.download('rain100l', sys.argv[1], registry=sys.argv[2], progress=False)"


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"fixtures not found at {SHARED}")
def test_a_killed_downloads_work_folder_goes_at_the_next_start(tmp_path, server):  # noqa: F811
    from benchmark import datasets as ds
    from benchmark.datasets import acquisition

    archive = make_zip("Rain100L_test", tmp_path / "Rain100L.zip", "Rain100L")
    root, downloads = tmp_path / "data", tmp_path / "data/downloads/rain100l"
    slow = _Slow(archive.read_bytes())
    reg = rain100l_registry(tmp_path, slow.url)

    def start() -> tuple[subprocess.Popen, Path]:
        """A download that is mid-transfer (its .part growing) when this returns, and its work folder."""
        known = set(downloads.glob(".work-*")) if downloads.is_dir() else set()
        proc = subprocess.Popen([sys.executable, "-c", _DOWNLOAD, str(root), str(reg)], env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        work = _wait_for(lambda: set(downloads.glob(".work-*")) - known, proc=proc).pop()
        _wait_for(lambda: (downloads / "Rain100L.zip.part").is_file(), proc=proc)
        return proc, work

    procs: list[subprocess.Popen] = []
    try:
        first, killed = start()
        _kill(first)
        assert list(downloads.glob(".work-*")) == [killed]  # what the kill leaves behind
        second, live = start()  # the next download clears it at its start ...
        assert list(downloads.glob(".work-*")) == [live] and not killed.exists()
        assert acquisition.remove_stale_work(downloads) == [] and live.is_dir()  # ... never a live one's
        _kill(second)
    finally:
        for p in procs:
            if p.poll() is None:
                _kill(p)
        slow.close()
    assert list(downloads.glob(".work-*")) == [live]
    ds.download("rain100l", root, registry=rain100l_registry(tmp_path, serve(server, archive)), progress=False)
    assert list(downloads.glob(".work-*")) == [] and len(list((root / "rain100l/test/input").iterdir())) == 20
