"""DVC stage ``score@<name>-<dataset>``: published output images (params.yaml ``results:``) re-scored
under every protocol against ``data/<dataset>/test`` into ``runs/eval/<name>-<dataset>/`` (the
evaluate stage's ``metrics.json``/``per_image.csv``), so that they appear in Table 1 as
"<name> (published outputs, re-scored)".
"""
from __future__ import annotations

import argparse
import sys

from benchmark.core import config, runs
from benchmark.core.runs import run_key
from benchmark.data.images import DataError
from benchmark.tools import score


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--name", required=True)
    ap.add_argument("--dataset", required=True)
    args = ap.parse_args(argv)
    key = run_key(args.name, args.dataset)
    try:
        raw = config.load_params()
        folder = ((raw.get("results") or {}).get(args.name) or {}).get(args.dataset)
        if folder is None:
            raise config.ConfigError(f"params.yaml: no results.{args.name}.{args.dataset}")
        gt = runs.data_dir(args.dataset) / "test"
        res = score.score_folder(folder, gt)
        score.write(runs.RUNS / "eval" / key, args.name, args.dataset, res, folder, gt, raw.get("profile", ""))
    except (config.ConfigError, DataError, ValueError, OSError) as exc:
        print(f"score {key}: error: {exc}", file=sys.stderr)
        return 1
    m = res["mean"]
    print(f"score {key}: {res['n_images']} images, PSNR-Y {m['psnr_y']:.3f} dB, SSIM-Y {m['ssim_y']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
