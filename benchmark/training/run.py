"""The body of the train stages (``train_msgnn@<dataset>``, ``train@<model>-<dataset>``).

Builds the model from its registry builder and params.yaml overrides, trains it with the shared
engine on ``data/<dataset>/train`` and writes ``runs/train/<model>-<dataset>/`` (``model.pt``,
``train_log.csv``, ``config.yaml``; ``last.pt`` for resumption). One MLflow run per call.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import yaml

from benchmark.core import checkpoints, config, contract, io, runs, tracking
from benchmark.data import loading as data
from benchmark.evaluation import inference
from benchmark.training import distributed, engine
from benchmark.core.registry import build_model


def _validator(model_name: str, cfg: config.RunConfig, device: str, root: Path):
    """A few full test images for periodic validation (Y-PSNR/SSIM)."""
    ds = data.EvalImages(root, "test", limit=cfg.train.val_images)

    def validate(model: torch.nn.Module) -> dict:
        ex = data.eval_exemplar(root, cfg.eval.exemplar, cfg.train.seed, ds) if contract.needs_exemplar(model) else None
        res = inference.evaluate(model, ds, cfg.eval, device=device, exemplar=ex, progress=False)
        return {"psnr_y": res["mean"]["psnr_y"], "ssim_y": res["mean"]["ssim_y"]}

    return validate


def train(model_name: str, dataset: str, device: str = "cpu", params: dict | None = None,
          progress: bool = True, data_root: Path | None = None, out: Path | None = None,
          cfg: config.RunConfig | None = None, key: str | None = None, validate: bool = True) -> dict:
    """Train on ``data/<dataset>`` into ``runs/train/<key>`` (the DVC stage; ``key`` defaults to
    ``<model>-<dataset>``), or on any folder ``data_root`` into ``out`` (``msgnn-bench train --data
    DIR``; ``dataset`` is then only a name and needs no ``datasets:`` section). ``cfg``/``key`` let the
    seed replicas and the ablation variants reuse this stage code with their own settings and folder;
    ``validate=False`` skips the end-of-training validation (for runs evaluated right after)."""
    if data_root is not None:
        params = dict(params if params is not None else config.load_params())
        params["datasets"] = {**params["datasets"], dataset: params["datasets"].get(dataset) or {}}
    cfg = cfg or config.resolve(model_name, dataset, params)
    key = key or cfg.key
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    root = Path(data_root) if data_root is not None else runs.data_dir(dataset)
    out = Path(out) if out is not None else runs.RUNS / "train" / key
    out.mkdir(parents=True, exist_ok=True)
    if not distributed.is_main():  # torchrun: ranks > 0 train in lockstep and write nothing
        cfg = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, enabled=False))
        return _train(model_name, dataset, cfg, key, root, out, device, False, validate)
    with checkpoints.RunLock(out):  # a second training of this folder refuses before writing anything
        return _train(model_name, dataset, cfg, key, root, out, device, progress, validate)


def _train(model_name: str, dataset: str, cfg: config.RunConfig, key: str, root: Path, out: Path, device: str,
           progress: bool, validate: bool = True) -> dict:
    io.seed_everything(cfg.train.seed)  # model initialisation is part of the reproducible run
    model = build_model(model_name, **cfg.model_args)
    if contract.weightless(model):
        raise ValueError(f"model {model_name!r} has no weights to train")
    counts = contract.count_params(model)
    train_ds = data.TrainPatches(root, cfg.train.patch, seed=cfg.train.seed,
                                 hflip=cfg.train.hflip, exemplar=contract.needs_exemplar(model))
    if distributed.is_main():
        io.write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    tags = {"model": model_name, "dataset": dataset, "profile": cfg.profile, "stage": f"train@{key}",
            "kind": "train"}
    flat = config.flatten(cfg.to_dict())
    flat.update({"params_total": counts["total"], "params_trainable": counts["trainable"]})
    run_id = {"model": model_name, "args": cfg.model_args, "dataset": dataset}
    # a resumed training continues its own MLflow run and sends the steps a killed process had buffered
    # (the fingerprint also ties the folder's MLflow run to this very training: see tracking.run)
    fingerprint = checkpoints.run_fingerprint(cfg.train, train_ds, run_id)
    ck = checkpoints.load_state(out, fingerprint)
    resume_rows = list(ck["log"]) if ck is not None else None
    with tracking.run(cfg.tracking, f"train/{key}", flat, tags, run_dir=out, resume_rows=resume_rows,
                      fingerprint=fingerprint) as tr:
        if distributed.is_main():
            tr.log_artifact(out / "config.yaml")
        result = engine.fit(model, train_ds, cfg.train, out, log=tr.log,
                            validate=_validator(model_name, cfg, device, root) if validate else None,
                            device=device, progress=progress, run_id=run_id, state=ck, lock=False)
        if not distributed.is_main():
            return result
        checkpoints.save_model(out / "model.pt", model_name, cfg.model_args, model.cpu(), step=result["step"],
                               dataset=dataset, profile=cfg.profile)
        tr.log_artifact(out / "train_log.csv")
    return result

