"""DVC stages ``train_msgnn@<dataset>`` and ``train@<model>-<dataset>``: the command line around
``benchmark.training.run.train`` (one MLflow run per call; ``runs/train/<model>-<dataset>/``).
"""
from __future__ import annotations

import argparse
import sys

import torch

from benchmark.core import config, signals
from benchmark.data import loading as data
from benchmark.training import distributed
from benchmark.training.run import train


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    try:
        with signals.stopping():  # SIGTERM/SIGINT: checkpoint at the next step boundary, then stop
            res = train(args.model, args.dataset, distributed.setup(args.device))
    except signals.Stopped as exc:
        print(f"train {args.model}-{args.dataset}: {exc}", file=sys.stderr)
        return exc.exit_code
    except (config.ConfigError, data.DataError, KeyError, ValueError, FloatingPointError, OSError) as exc:
        print(f"train {args.model}-{args.dataset}: error: {exc}", file=sys.stderr)
        return 1
    print(f"train {args.model}-{args.dataset}: {res['step']} steps, final loss {res.get('final_loss')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
