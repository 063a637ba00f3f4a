"""DVC stages ``evaluate@<model>-<dataset>`` and ``evaluate_input@<dataset>``.

Loads ``runs/train/<model>-<dataset>/model.pt`` (nothing for the weightless ``input`` row), runs
it over the full test images of the dataset and of its ``eval_sets`` (e.g. Rain12 with the
Rain200H model; real-world folders without ground truth only get derained images), and writes
``runs/eval/<model>-<dataset>/`` : ``metrics.json`` (the single source of every table),
``per_image.csv`` and sample outputs. One MLflow run per call.
"""
from __future__ import annotations

import argparse
import sys

import torch

from benchmark import config, data, engine, io, metrics, runs, tracking
from benchmark.registry import build_model


def lpips_for(cfg: config.EvalCfg, device: str):
    """The LPIPS metric, or (None, reason) when it is switched off or its backbone is absent."""
    if not cfg.lpips:
        return None, "disabled in params (eval.lpips: false)"
    m = metrics.LPIPSMetric(cfg.lpips_weights, device=device)
    return (m, "") if m.available else (None, m.reason)


def evaluate(model_name: str, dataset: str, device: str = "cpu", params: dict | None = None,
             progress: bool = True, cfg: config.RunConfig | None = None, key: str | None = None,
             limit: int | None = None, eval_sets: list[str] | None = None, meta: dict | None = None) -> dict:
    """Evaluate one run (default: the main run ``<model>-<dataset>``). Seed replicas and ablation
    variants pass their ``cfg``/``key``, optionally fewer test images (``limit``), their own
    ``eval_sets`` and ``meta`` fields (variant) for ``metrics.json``."""
    cfg = cfg or config.resolve(model_name, dataset, params)
    key = key or cfg.key
    model = build_model(model_name, **cfg.model_args)
    weightless = getattr(model, "weightless", False)
    if not weightless:
        model = runs.load_model(runs.RUNS / "train" / key / "model.pt", expect=model_name)
    counts = metrics.count_params(model)
    out = runs.RUNS / "eval" / key
    lp, lp_reason = lpips_for(cfg.eval, device)
    result = {"model": model_name, "dataset": dataset, "profile": cfg.profile, "key": key,
              "seed": cfg.train.seed, **(meta or {}),
              "params_total": counts["total"], "params_trainable": counts["trainable"],
              "lpips_status": "ok" if lp else lp_reason, "results": {}}
    rows = []
    tags = {"model": model_name, "dataset": dataset, "profile": cfg.profile, "stage": f"evaluate@{key}",
            "kind": "evaluate"}
    with tracking.run(cfg.tracking, f"evaluate/{key}", config.flatten(cfg.to_dict()), tags) as tr:
        for eval_set in eval_sets or cfg.dataset_cfg.get("eval_sets") or [dataset]:
            root = runs.data_dir(eval_set)
            paired = (params or config.load_params())["datasets"].get(eval_set, {}).get("ground_truth", True)
            ds = data.EvalImages(root, "test", paired=paired, limit=limit)
            ex = None
            if getattr(model, "needs_exemplar", False):
                # the exemplar comes from the *training* dataset's split, never from the evaluated image
                ex = data.eval_exemplar(runs.data_dir(dataset), cfg.eval.exemplar, cfg.train.seed,
                                        ds if cfg.eval.exemplar == "test" else None)
            res = engine.evaluate(model, ds, cfg.eval, device=device, exemplar=ex, save_dir=out / "samples" / eval_set,
                                  lpips_metric=lp.compute if lp else None, progress=progress)
            summary = {"n_images": res["n_images"], **res["mean"]}
            if not paired:
                summary = {"n_images": res["n_images"], "seconds": res["mean"]["seconds"], "ground_truth": False}
            result["results"][eval_set] = summary
            rows += [{"eval_set": eval_set, **r} for r in res["per_image"]]
            tr.log({f"test/{eval_set}/{k}": v for k, v in summary.items() if isinstance(v, (int, float))}, 0)
        io.write_json(out / "metrics.json", result)
        io.write_csv(out / "per_image.csv", rows)
        tr.log_artifact(out / "metrics.json")
        tr.log_artifact(out / "per_image.csv")
        tr.log_artifact(out / "samples", "samples")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    try:
        res = evaluate(args.model, args.dataset, args.device)
    except (config.ConfigError, data.DataError, KeyError, ValueError, FileNotFoundError) as exc:
        print(f"evaluate {args.model}-{args.dataset}: error: {exc}", file=sys.stderr)
        return 1
    for name, r in res["results"].items():
        if "psnr_y" in r:
            print(f"{args.model}-{args.dataset} on {name}: PSNR-Y {r['psnr_y']:.3f} dB, SSIM-Y {r['ssim_y']:.4f}; "
                  f"paper protocol (msgnn): PSNR {r['psnr:msgnn']:.3f} dB, SSIM {r['ssim:msgnn']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
