"""DVC stage ``official_report``: ``reports/official.{md,csv,tex}`` from ``runs/official/*/metrics.json``
and the published numbers of ``benchmark/weights/checkpoints.yaml`` (``benchmark.reporting.official``).

Reads params.yaml's ``profile`` and ``official_runs`` (which pairs this profile runs) only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from benchmark.core.runs import RUNS
from benchmark.reporting import official


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.official_report")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--runs", type=Path, default=RUNS / "official")
    ap.add_argument("--out", type=Path, default=Path("reports"))
    args = ap.parse_args(argv)
    raw = yaml.safe_load(Path(args.params).read_text()) or {}
    table = official.rows(args.runs, set(raw.get("official_runs") or {}))
    official.write(args.out, table, raw.get("profile", "quick"))
    print(f"official_report: {sum(r['ours_psnr'] is not None for r in table)} of {len(table)} published "
          f"(checkpoint, test set) pairs measured; {args.out / 'official.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
