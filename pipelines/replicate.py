"""DVC stages ``replicate@<model>-<dataset>-<seed>`` and ``ablation@<group>-<seed>``.

Both run the train and evaluate stage code (``benchmark.training.run``, ``benchmark.evaluation.run``)
in one process:
* ``--model M --dataset D --seed S``: Table 1's run ``M-D`` again with another seed
  (runs/{train,eval}/M-D-sS); the main stages hold seed ``train.seed``.
* ``--group G --seed S``: MSGNN ablation variants (``params.yaml`` ``ablations``) trained and
  evaluated on the profile's ablation dataset, into ``runs/{train,eval}/ablation-G-sS/msgnn.V-<dataset>-sS``.
  ``G = all`` runs the profile's whole grid in this one process (quick, ci: a variant's training is
  seconds, a process start with torch and MLflow is ~8 s); ``G = <variant>`` one variant (paper:
  days of training each, one stage per variant so that each is resumed and cached on its own).
* ``--variant V --seed S``: one variant into the flat ``runs/{train,eval}/msgnn.V-<dataset>-sS``.
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from functools import partial
from pathlib import Path

import torch

from benchmark.core import ablations, config, io, runs
from benchmark.evaluation import headline, run as evaluate_stage
from benchmark.training import run as train_stage


def run_seed(model: str, dataset: str, seed: int, device: str = "cpu", params: dict | None = None,
             progress: bool = True) -> dict:
    raw = params if params is not None else config.load_params()
    base = config.resolve(model, dataset, raw)
    cfg = dataclasses.replace(base, train=dataclasses.replace(base.train, seed=int(seed)))
    key = runs.run_key(model, dataset, seed)
    train_stage.train(model, dataset, device, raw, progress, cfg=cfg, key=key)
    return evaluate_stage.evaluate(model, dataset, device, raw, progress, cfg=cfg, key=key)


def run_variant(variant: str, seed: int, device: str = "cpu", params: dict | None = None,
                progress: bool = True, train_root: Path | None = None, eval_root: Path | None = None) -> dict:
    """One variant; its run folders go under ``train_root``/``eval_root`` (default ``runs/train``, ``runs/eval``)."""
    raw = params if params is not None else config.load_params()
    cfg = ablations.resolve(variant, seed, raw)
    block = ablations.profile_block(raw)
    key = runs.run_key("msgnn", cfg.dataset, seed, variant)
    tdir = Path(train_root or runs.RUNS / "train") / key
    # no end-of-training validation: the evaluation right below scores the same test images
    train_stage.train("msgnn", cfg.dataset, device, raw, progress, cfg=cfg, key=key, out=tdir, validate=False)
    # ablations are scored on the analysis set's own test images only (no Rain12/real eval_sets)
    return evaluate_stage.evaluate("msgnn", cfg.dataset, device, raw, progress, cfg=cfg, key=key,
                                   limit=block.get("eval_images"), eval_sets=[cfg.dataset],
                                   meta={"variant": variant}, train_dir=tdir,
                                   out=Path(eval_root or runs.RUNS / "eval") / key)


def run_group(group: str, seed: int, device: str = "cpu", params: dict | None = None,
              progress: bool = True, runs_dir: Path = runs.RUNS) -> dict:
    """Stage ``ablation@<group>-<seed>``: every variant of the group, then the stage's summary file."""
    raw = params if params is not None else config.load_params()
    variants = ablations.group_variants(group, raw)
    dataset = ablations.profile_block(raw)["dataset"]
    keys = {runs.run_key("msgnn", dataset, seed, v) for v in variants}
    troot, eroot = runs.ablation_dir("train", group, seed, runs_dir), runs.ablation_dir("eval", group, seed, runs_dir)
    # DVC keeps the training folder between runs (persist: a stopped grid resumes where it was; a
    # changed setting or code retrains, checkpoints.py checks that); variants no longer in the grid go
    for root in (troot, eroot):
        for d in (root.iterdir() if root.is_dir() else []):
            if d.name not in keys:
                shutil.rmtree(d) if d.is_dir() else d.unlink()
    results = {v: run_variant(v, seed, device, raw, progress, troot, eroot) for v in variants}
    summary = {"profile": raw.get("profile"), "dataset": dataset, "seed": int(seed), "group": group,
               "variants": {v: {"key": r["key"], "params_total": r["params_total"],
                                "results": {s: {k: m[k] for k in ablations.SUMMARY_METRICS if k in m}
                                            for s, m in r["results"].items()}}
                            for v, r in results.items()}}
    io.write_json(runs.ablation_summary(group, seed, runs_dir), summary)
    # DVC's metric (the summary is a plain output): each variant's PSNR/SSIM, by run key
    io.write_json(runs.ablation_summary(group, seed, runs_dir).with_suffix(".headline.json"),
                  {k: v for r in results.values() for k, v in headline.of_results(r["key"], r["results"]).items()})
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--dataset")
    ap.add_argument("--variant")
    ap.add_argument("--group")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    if sum(map(bool, (args.variant, args.group, args.model and args.dataset))) != 1:
        ap.error("give one of --group G, --variant V or --model M --dataset D")
    if args.group:
        return _report_group(args)
    what = args.variant or runs.run_key(args.model, args.dataset)
    run = (partial(run_variant, args.variant, args.seed, args.device) if args.variant
           else partial(run_seed, args.model, args.dataset, args.seed, args.device))
    return evaluate_stage.run_and_report(
        f"{what} seed {args.seed}", run, _PSNR,
        lambda res, name, r: _summary_line(res["key"], name, r, res["params_total"]),
        evaluate_stage.STAGE_ERRORS + (FloatingPointError,))


_PSNR, _SSIM = ablations.SUMMARY_METRICS[:2]  # the paper's protocol, as the ablation tables


def _summary_line(key: str, name: str, r: dict, params: int) -> str:
    return (f"{key} on {name}: PSNR {r[_PSNR]:.3f} dB, SSIM {r[_SSIM]:.4f} ({config.PAPER_PROTOCOL} protocol), "
            f"{params:,} parameters")


def _report_group(args) -> int:
    try:
        summary = run_group(args.group, args.seed, args.device)
    except evaluate_stage.STAGE_ERRORS + (FloatingPointError,) as exc:
        print(f"ablation {args.group} seed {args.seed}: error: {exc}", file=sys.stderr)
        return 1
    for v in summary["variants"].values():
        for name, r in v["results"].items():
            print(_summary_line(v["key"], name, r, v["params_total"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
