"""The body of the evaluate stages (``evaluate@<model>-<dataset>``, ``evaluate_input@<dataset>``).

Loads ``runs/train/<model>-<dataset>/model.pt`` (nothing for the weightless ``input`` row), runs
it over the full test images of the dataset and of its ``eval_sets`` (e.g. Rain12 with the
Rain200H model; real-world folders without ground truth only get derained images), and writes
``runs/eval/<model>-<dataset>/`` : ``metrics.json`` (the single source of every table),
``per_image.csv`` and sample outputs. One MLflow run per call.
"""
from __future__ import annotations

import sys
from pathlib import Path

from benchmark.core import checkpoints, config, contract, io, runs, signals, tracking
from benchmark.data import loading as data
from benchmark.evaluation import headline, inference, metrics
from benchmark.core.registry import BUILTIN, build_model, display_name


def lpips_for(cfg: config.EvalCfg, device: str):
    """The LPIPS metric, or (None, reason) when it is switched off or its backbone is absent."""
    if not cfg.lpips:
        return None, "disabled in params (eval.lpips: false)"
    m = metrics.LPIPSMetric(cfg.lpips_weights, device=device)
    return (m, "") if m.available else (None, m.reason)


def evaluate(model_name: str, dataset: str, device: str = "cpu", params: dict | None = None,
             progress: bool = True, cfg: config.RunConfig | None = None, key: str | None = None,
             limit: int | None = None, eval_sets: list[str] | None = None, meta: dict | None = None,
             train_dir: Path | None = None, out: Path | None = None) -> dict:
    """Evaluate one run (default: the main run ``<model>-<dataset>``). Seed replicas and ablation
    variants pass their ``cfg``/``key``, optionally fewer test images (``limit``), their own
    ``eval_sets`` and ``meta`` fields (variant) for ``metrics.json``, and the ablation stage its
    folders (``train_dir`` holding ``model.pt``, ``out``; default ``runs/{train,eval}/<key>``)."""
    raw = params if params is not None else config.load_params()
    cfg = cfg or config.resolve(model_name, dataset, raw)
    key = key or cfg.key
    report_images = config.report_cfg(raw).images  # the figures' test images: always saved
    model = build_model(model_name, **cfg.model_args)
    weightless = contract.weightless(model)
    if not weightless:
        model = checkpoints.load_model(Path(train_dir or runs.RUNS / "train" / key) / "model.pt", expect=model_name)
    counts = contract.count_params(model)
    out = Path(out) if out is not None else runs.RUNS / "eval" / key
    lp, lp_reason = lpips_for(cfg.eval, device)
    train_run = None if weightless else tracking.latest_run_id(cfg.tracking, f"train/{key}",
                                                               Path(train_dir or runs.RUNS / "train" / key))
    result = {"model": model_name, "dataset": dataset, "profile": cfg.profile, "key": key,
              "seed": cfg.train.seed, **(meta or {}),
              # a plugin's name as it declared it: the report stages read it here (they load no plugin)
              **({} if model_name in BUILTIN else {"display": display_name(model_name)}),
              "params_total": counts["total"], "params_trainable": counts["trainable"],
              "lpips_status": "ok" if lp else lp_reason,
              "protocol": {"quantise": cfg.eval.quantise, "y_mode": cfg.eval.y_mode,
                           "crop_border": cfg.eval.crop_border, "ssim": "gaussian sigma 1.5, data_range 255"},
              "git_commit": tracking.git_commit(), "mlflow_run_id": None, "train_run_id": train_run, "results": {}}
    rows = []
    tags = {"model": model_name, "dataset": dataset, "profile": cfg.profile, "stage": f"evaluate@{key}",
            "kind": "evaluate", **({"train_run_id": train_run} if train_run else {})}
    flat = {**config.flatten(cfg.to_dict()), "params_total": counts["total"], "params_trainable": counts["trainable"]}
    # the record in `out` (mlflow_run.json) lets `tracking sync` close the run of a killed evaluation
    with tracking.run(cfg.tracking, f"evaluate/{key}", flat, tags, run_dir=out) as tr:
        result["mlflow_run_id"] = tr.run_id
        for eval_set in eval_sets or cfg.dataset_cfg.get("eval_sets") or [dataset]:
            root = runs.eval_set_dir(dataset, eval_set)
            paired = config.has_ground_truth(raw, eval_set)
            ds = data.EvalImages(root, "test", paired=paired, limit=limit)
            ex = None
            if contract.needs_exemplar(model):
                # the exemplar comes from the *training* dataset's split, never from the evaluated image
                ex = data.eval_exemplar(runs.data_dir(dataset), cfg.eval.exemplar, cfg.train.seed,
                                        ds if cfg.eval.exemplar == "test" else None)
            res = inference.evaluate(model, ds, cfg.eval, device=device, exemplar=ex,
                                     save_dir=out / "samples" / eval_set, lpips_metric=lp.compute if lp else None,
                                     progress=progress, save_names=frozenset(report_images.get(eval_set, ())))
            summary = {"n_images": res["n_images"], **res["mean"]}
            if not paired:
                summary = {"n_images": res["n_images"], "seconds": res["mean"]["seconds"], "ground_truth": False}
            result["results"][eval_set] = summary
            rows += [{"eval_set": eval_set, **r} for r in res["per_image"]]
            tr.log({f"test/{eval_set}/{k}": v for k, v in summary.items() if isinstance(v, (int, float))}, 0)
        # metrics.json last: it is what the tables read, so it appears only once the rest is written
        io.write_csv(out / "per_image.csv", rows)
        io.write_json(out / headline.FILE, headline.of_results(key, result["results"]))  # what DVC compares
        io.write_json(out / "metrics.json", result)
        tr.log_artifact(out / "metrics.json")
        tr.log_artifact(out / "per_image.csv")
        tr.log_artifact(out / "samples", "samples")
    return result


# OSError: a full disk or a read-only folder (``io.WriteError`` names the file)
STAGE_ERRORS = (config.ConfigError, data.DataError, KeyError, ValueError, OSError)


def run_and_report(what: str, run, needs: str, line, errors: tuple = STAGE_ERRORS) -> int:
    """A stage's command line: ``run()``; a bad input or config -> one ``what: error: ...`` line on
    stderr and exit code 1 (no traceback); SIGTERM/SIGINT -> one line and exit code 128 + the signal;
    else ``line(result, set, metrics)`` for each evaluated set whose metrics hold ``needs`` (sets
    without ground truth have none to print)."""
    try:
        with signals.stopping(raise_now=True):  # no step boundary here: stop where it is, atomic writes clean up
            res = run()
    except signals.Stopped as exc:
        print(f"{what}: {exc}; no output is half-written; rerun the stage to evaluate", file=sys.stderr)
        return exc.exit_code
    except errors as exc:
        print(f"{what}: error: {exc}", file=sys.stderr)
        return 1
    for name, r in res["results"].items():
        if needs in r:
            print(line(res, name, r))
    return 0
