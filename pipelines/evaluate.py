"""DVC stages ``evaluate@<model>-<dataset>`` and ``evaluate_input@<dataset>``: the command line around
``benchmark.evaluation.run.evaluate`` (``runs/eval/<model>-<dataset>/``: ``metrics.json``,
``per_image.csv``, sample outputs; one MLflow run per call).
"""
from __future__ import annotations

import argparse
import sys

import torch

from benchmark.core.runs import run_key
from benchmark.evaluation.protocols import PAPER
from benchmark.evaluation.run import evaluate, run_and_report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    what = run_key(args.model, args.dataset)
    return run_and_report(f"evaluate {what}", lambda: evaluate(args.model, args.dataset, args.device), "psnr_y",
                          lambda res, name, r: f"{what} on {name}: PSNR-Y {r['psnr_y']:.3f} dB, "
                          f"SSIM-Y {r['ssim_y']:.4f}; paper protocol ({PAPER}): PSNR {r[f'psnr:{PAPER}']:.3f} dB, "
                          f"SSIM {r[f'ssim:{PAPER}']:.4f}")


if __name__ == "__main__":
    sys.exit(main())
