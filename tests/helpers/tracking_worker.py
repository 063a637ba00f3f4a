"""One worker of the concurrent-tracking tests (tests/test_tracking_server.py): opens a run through the
suite's tracking module, as a training does, logs ``steps`` steps of metrics (flushed every step, so
the workers' writes interleave), one artifact, and closes it.

    python tests/helpers/tracking_worker.py URI EXPERIMENT NAME RUN_DIR STEPS
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmark.core import tracking  # noqa: E402
from benchmark.core.config import TrackingCfg  # noqa: E402


def main(uri: str, experiment: str, name: str, run_dir: str, steps: str) -> int:
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"step": s, "loss": 1.0 / s} for s in range(1, int(steps) + 1)]
    (out / "train_log.csv").write_text("step,loss\n" + "".join(f"{r['step']},{r['loss']}\n" for r in rows))
    cfg = TrackingCfg(enabled=True, uri=uri, experiment=experiment)
    with tracking.run(cfg, name, {"worker": name}, {"kind": "train"}, run_dir=out) as tr:
        for r in rows:
            tr.log({"train/loss": r["loss"]}, r["step"])
            tr.flush()
        tr.log_artifact(out / "train_log.csv")
    print(f"{name}: offline={tr.offline} run={tr.run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
