"""DVC stages ``train_msgnn@<dataset>`` and ``train@<model>-<dataset>``.

Builds the model from its registry builder and params.yaml overrides, trains it with the shared
engine on ``data/<dataset>/train`` and writes ``runs/train/<model>-<dataset>/`` (``model.pt``,
``train_log.csv``, ``config.yaml``; ``last.pt`` for resumption). One MLflow run per call.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

import torch
import yaml

from benchmark import checkpoints, distributed, config, data, engine, io, metrics, runs, tracking
from benchmark.registry import build_model


def _validator(model_name: str, cfg: config.RunConfig, device: str):
    """A few full test images for periodic validation (Y-PSNR/SSIM)."""
    ds = data.EvalImages(runs.data_dir(cfg.dataset), "test", limit=cfg.train.val_images)
    root = runs.data_dir(cfg.dataset)

    def validate(model: torch.nn.Module) -> dict:
        ex = data.eval_exemplar(root, cfg.eval.exemplar, cfg.train.seed, ds) if getattr(
            model, "needs_exemplar", False) else None
        res = engine.evaluate(model, ds, cfg.eval, device=device, exemplar=ex, progress=False)
        return {"psnr_y": res["mean"]["psnr_y"], "ssim_y": res["mean"]["ssim_y"]}

    return validate


def train(model_name: str, dataset: str, device: str = "cpu", params: dict | None = None,
          progress: bool = True) -> dict:
    cfg = config.resolve(model_name, dataset, params)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    out = runs.train_dir(model_name, dataset)
    out.mkdir(parents=True, exist_ok=True)
    if not distributed.is_main():  # torchrun: ranks > 0 train in lockstep and write nothing
        cfg = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, enabled=False))
        return _train(model_name, dataset, cfg, out, device, False)
    with checkpoints.RunLock(out):  # a second training of this folder refuses before writing anything
        return _train(model_name, dataset, cfg, out, device, progress)


def _train(model_name: str, dataset: str, cfg: config.RunConfig, out, device: str, progress: bool) -> dict:
    io.seed_everything(cfg.train.seed)  # model initialisation is part of the reproducible run
    model = build_model(model_name, **cfg.model_args)
    if getattr(model, "weightless", False):
        raise ValueError(f"model {model_name!r} has no weights to train")
    counts = metrics.count_params(model)
    train_ds = data.TrainPatches(runs.data_dir(dataset), cfg.train.patch, seed=cfg.train.seed,
                                 hflip=cfg.train.hflip, exemplar=bool(getattr(model, "needs_exemplar", False)))
    if distributed.is_main():
        io.write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    tags = {"model": model_name, "dataset": dataset, "profile": cfg.profile, "stage": f"train@{cfg.key}",
            "kind": "train"}
    flat = config.flatten(cfg.to_dict())
    flat.update({"params_total": counts["total"], "params_trainable": counts["trainable"]})
    run_id = {"model": model_name, "args": cfg.model_args, "dataset": dataset}
    # a resumed training continues its own MLflow run and sends the steps a killed process had buffered
    ck = checkpoints.load_state(out, checkpoints.run_fingerprint(cfg.train, train_ds, run_id), quiet=True)
    resume_rows = list(ck["log"]) if ck is not None else None
    del ck
    with tracking.run(cfg.tracking, f"train/{cfg.key}", flat, tags, run_dir=out, resume_rows=resume_rows) as tr:
        if distributed.is_main():
            tr.log_artifact(out / "config.yaml")
        result = engine.fit(model, train_ds, cfg.train, out, log=tr.log,
                            validate=_validator(model_name, cfg, device), device=device, progress=progress,
                            run_id=run_id)
        if not distributed.is_main():
            return result
        runs.save_model(out / "model.pt", model_name, cfg.model_args, model.cpu(), step=result["step"],
                        dataset=dataset, profile=cfg.profile)
        tr.log_artifact(out / "train_log.csv")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    try:
        res = train(args.model, args.dataset, distributed.setup(args.device))
    except (config.ConfigError, data.DataError, KeyError, ValueError, FloatingPointError, OSError) as exc:
        print(f"train {args.model}-{args.dataset}: error: {exc}", file=sys.stderr)
        return 1
    print(f"train {args.model}-{args.dataset}: {res['step']} steps, final loss {res.get('final_loss')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
