"""DVC stages ``replicate@<model>-<dataset>-<seed>`` and ``ablation@<variant>-<seed>``.

Both reuse the train and evaluate stage code in one process (one start-up, not two):
* ``--model M --dataset D --seed S``: Table 1's run ``M-D`` again with another seed
  (runs/{train,eval}/M-D-sS); the main stages hold seed ``train.seed``.
* ``--variant V --seed S``: one MSGNN ablation variant (``params.yaml`` ``ablations.V``) trained
  and evaluated on the profile's ablation dataset (runs/{train,eval}/msgnn.V-<dataset>-sS).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from functools import partial

import torch

from benchmark import ablations, config
from pipelines import evaluate as evaluate_stage
from pipelines import train as train_stage


def run_seed(model: str, dataset: str, seed: int, device: str = "cpu", params: dict | None = None,
             progress: bool = True) -> dict:
    raw = params if params is not None else config.load_params()
    base = config.resolve(model, dataset, raw)
    cfg = dataclasses.replace(base, train=dataclasses.replace(base.train, seed=int(seed)))
    key = ablations.run_key(model, dataset, seed)
    train_stage.train(model, dataset, device, raw, progress, cfg=cfg, key=key)
    return evaluate_stage.evaluate(model, dataset, device, raw, progress, cfg=cfg, key=key)


def run_variant(variant: str, seed: int, device: str = "cpu", params: dict | None = None,
                progress: bool = True) -> dict:
    raw = params if params is not None else config.load_params()
    cfg = ablations.resolve(variant, seed, raw)
    block = ablations.profile_block(raw)
    key = ablations.run_key("msgnn", cfg.dataset, seed, variant)
    train_stage.train("msgnn", cfg.dataset, device, raw, progress, cfg=cfg, key=key)
    # ablations are scored on the analysis set's own test images only (no Rain12/real eval_sets)
    return evaluate_stage.evaluate("msgnn", cfg.dataset, device, raw, progress, cfg=cfg, key=key,
                                   limit=block.get("eval_images"), eval_sets=[cfg.dataset],
                                   meta={"variant": variant})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--dataset")
    ap.add_argument("--variant")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    if bool(args.variant) == bool(args.model and args.dataset):
        ap.error("give either --variant V or --model M --dataset D")
    what = args.variant or f"{args.model}-{args.dataset}"
    run = (partial(run_variant, args.variant, args.seed, args.device) if args.variant
           else partial(run_seed, args.model, args.dataset, args.seed, args.device))
    return evaluate_stage.run_and_report(
        f"{what} seed {args.seed}", run, "psnr:msgnn",
        lambda res, name, r: f"{res['key']} on {name}: PSNR {r['psnr:msgnn']:.3f} dB, SSIM {r['ssim:msgnn']:.4f} "
        f"(msgnn protocol), {res['params_total']:,} parameters",
        evaluate_stage.STAGE_ERRORS + (FloatingPointError,))


if __name__ == "__main__":
    sys.exit(main())
