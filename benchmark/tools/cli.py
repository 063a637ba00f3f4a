"""The ``msgnn-bench`` command line.

Sub-commands: models, train, evaluate, derain, score, plugins, ablations, perf, datasets, profile,
tracking, check-metrics. Every expected failure (bad path, unknown model, corrupt image, bad params key)
prints one line naming the file or key and exits 1; only genuine bugs show a traceback.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from benchmark.core import contract
from benchmark.core.runs import run_key
from benchmark.data.images import MAX_PIXELS


class _OfficialHelp(str):
    """Help text naming the models with an official-weights loader, filled in only when help is
    printed (listing them imports every model, i.e. torch, which other commands do not need)."""

    def __mod__(self, params):
        from benchmark.core.registry import official_models

        return f"{self} ({', '.join(official_models())})"


EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, FileNotFoundError, OSError)


NEEDS_WEIGHTS = "model {!r} needs weights: pass --checkpoint PATH or --official PATH"


def _load(args) -> "torch.nn.Module":  # noqa: F821
    from benchmark.tools import tiling

    return tiling.maybe_tiled(_load_model(args), args.tile, args.tile_overlap)


def _load_model(args) -> "torch.nn.Module":  # noqa: F821
    from benchmark.core import checkpoints, registry
    from benchmark.core.registry import build_model

    if args.official:
        return registry.load_official(args.model, args.official)
    if args.checkpoint:
        return checkpoints.load_model(args.checkpoint, expect=args.model)
    model = build_model(args.model)
    if not contract.weightless(model):
        raise ValueError(NEEDS_WEIGHTS.format(args.model))
    return model


def _check_source(args) -> None:
    """What loading would refuse at once (unknown name, no weights, no checkpoint file), checked
    before the data is read, so that ``evaluate`` can check the data's memory before loading."""
    from benchmark.core.registry import build_model

    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f"{args.checkpoint}: checkpoint not found")
    model = build_model(args.model)  # the bare network: cheap, and gone before the memory check
    if not (args.checkpoint or args.official or contract.weightless(model)):
        raise ValueError(NEEDS_WEIGHTS.format(args.model))


def _declare_plugins(path: str = "params.yaml") -> None:
    """params.yaml's ``plugins:`` (when the file is there) as the local-file plugins."""
    from benchmark.core import config

    if Path(path).is_file():
        config.declare_plugins(config.parse_yaml(Path(path).read_text(), path) or {}, path)


def cmd_models(args) -> int:
    from benchmark.core import registry
    from benchmark.core.registry import build_model, list_models

    _declare_plugins()
    rows = []
    for name in list_models():
        m = build_model(name)
        c = contract.count_params(m)
        info = registry.model_info(name)
        row = {"name": name, "display": info.display, "venue": info.venue, "year": info.year,
               "plugin": name not in registry.BUILTIN,
               "params_total": c["total"], "params_trainable": c["trainable"]}
        if args.effective and c["total"]:
            row["params_effective"] = contract.effective_params(m)
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            extra = f"  effective {r['params_effective']:>11,}" if "params_effective" in r else ""
            tag = "  (plugin)" if r["plugin"] else ""
            print(f"{r['name']:<8} total {r['params_total']:>11,}  trainable {r['params_trainable']:>11,}{extra}{tag}")
    return 0


def _exemplar(model, args):
    from benchmark.data import loading as data

    if not contract.needs_exemplar(model):
        return None
    if not args.exemplar:
        raise ValueError(f"model {args.model!r} needs an exemplar image: pass --exemplar PATH "
                         "(a rainy image from its training set)")
    return data.to_tensor(data.load_image(args.exemplar))


def _memory_guard(args, device: str, scoring: bool = False):
    """``fits(path, h, w)`` of ``derain``/``evaluate``: refuses an image whose estimated inference
    memory (``benchmark.tools.memory``) exceeds what ``device`` has free; None with --no-memory-check or
    when the free memory is unknown."""
    from benchmark.tools import memory
    from benchmark.data import images

    if args.no_memory_check:
        return None
    free = memory.available(device)
    if free is None:
        return None
    ex = images.inspect(args.exemplar) if args.exemplar else None
    kw = {"tile": args.tile, "overlap": args.tile_overlap, "exemplar_hw": ex and (ex.height, ex.width),
          "scoring": scoring}

    def fits(path, h: int, w: int) -> None:
        memory.check(args.model, path, h, w, free, str(device), **kw)
    return fits


def cmd_train(args) -> int:
    """Train on one's own folder with params.yaml's settings for the model (current profile),
    outside the DVC pipeline: the run goes to runs/own/<model>-<name>/ so that it never mixes
    into the pipeline's runs/train/ (and Table 1)."""
    import torch

    from benchmark.core import config, signals
    from benchmark.data import loading as data
    from benchmark.training.run import train

    root = Path(args.data)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder (expected training pairs, see README Datasets)")
    # the name becomes the run folder's (runs/own/<model>-<name>): a folder called `Rain 100L` gives
    # `rain-100l`; an explicit --name is checked as it is (config.check_name, in resolve)
    name = args.name or re.sub(r"[^a-z0-9_.-]+", "-", root.resolve().name.lower()).strip("-._") or "data"
    out = Path(args.out) if args.out else Path("runs") / "own" / run_key(args.model, name)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        with signals.stopping():  # as the train stage: SIGTERM/SIGINT checkpoint at the next step, then stop
            res = train(args.model, name, device, data_root=root, out=out, progress=True)
    except signals.Stopped as exc:
        print(f"train {args.model} on {root}: {exc}", file=sys.stderr)
        return exc.exit_code
    except (config.ConfigError, data.DataError, FloatingPointError) as exc:
        raise ValueError(str(exc)) from exc
    print(f"train {args.model} on {root}: {res['step']} steps; weights in {out / 'model.pt'}")
    return 0


def cmd_evaluate(args) -> int:
    import torch

    from benchmark.core import config
    from benchmark.data import loading as data
    from benchmark.evaluation import inference
    from benchmark.evaluation import protocols
    from benchmark.data import images

    if args.protocol and args.protocol != "all":
        protocols.get(args.protocol)  # a misspelt name fails before the network runs
    _check_source(args)
    ds = data.EvalImages(args.data, split="test", max_pixels=args.max_pixels, check=False)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    fits = _memory_guard(args, device, scoring=True)
    for it in ds.items if fits is not None else ():  # from the headers, before a large image is decoded
        path = Path(getattr(it, "input", it))
        try:
            info = images.inspect(path, max_pixels=args.max_pixels)
        except images.DataError:
            continue  # named by the full check below, as without the memory check
        fits(path, info.height, info.width)
    ds.check()
    model = _load(args)
    cfg = config.EvalCfg(quantise=args.quantise, y_mode=args.y_mode, save_images=0, lpips=False)
    res = inference.evaluate(model, ds, cfg, device=device, exemplar=_exemplar(model, args), progress=not args.json)
    out = {"model": args.model, "n_images": res["n_images"],
           **{k: res["mean"][k] for k in ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")},
           "per_image": [{"name": r["name"], "psnr_y": r["psnr_y"], "ssim_y": r["ssim_y"]} for r in res["per_image"]]}
    if args.protocol:
        return _print_protocols(args, res, out)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for r in out["per_image"]:
            print(f"{r['name']:>12}  PSNR-Y {r['psnr_y']:7.3f}  SSIM-Y {r['ssim_y']:.4f}")
        print(f"{args.model}: {out['n_images']} images, PSNR-Y {out['psnr_y']:.3f} dB, SSIM-Y {out['ssim_y']:.4f}, "
              f"PSNR-RGB {out['psnr_rgb']:.3f} dB, SSIM-RGB {out['ssim_rgb']:.4f}")
    return 0


def _print_protocols(args, res: dict, out: dict) -> int:
    """``evaluate --protocol NAME|all``: one protocol per image, or the protocol x metric matrix."""
    from benchmark.evaluation import protocols

    names = protocols.ALL if args.protocol == "all" else (protocols.get(args.protocol).name,)
    mean = res["mean"]
    out["protocols"] = {n: {"psnr": mean[f"psnr:{n}"], "ssim": mean[f"ssim:{n}"]} for n in names}
    out["per_image"] = [{"name": r["name"], **{k: r[k] for n in names for k in (f"psnr:{n}", f"ssim:{n}")}}
                        for r in res["per_image"]]
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    if len(names) == 1:
        n = names[0]
        for r in out["per_image"]:
            print(f"{r['name']:>12}  PSNR {r[f'psnr:{n}']:7.3f}  SSIM {r[f'ssim:{n}']:.4f}")
    print(f"{args.model}: {out['n_images']} images")
    print(f"{'protocol':<16} {'PSNR (dB)':>10} {'SSIM':>8}  source")
    for n in names:
        src = protocols.get(n).source
        print(f"{n:<16} {out['protocols'][n]['psnr']:>10.3f} {out['protocols'][n]['ssim']:>8.4f}  {src}")
    return 0


def cmd_derain(args) -> int:
    import torch

    from benchmark.data import loading as data
    from benchmark.tools import derain
    from benchmark.evaluation import inference
    from benchmark.evaluation import metrics

    # every input checked, every output name decided, before the model is loaded or a file written
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    jobs = derain.plan(args.inputs, args.output, overwrite=args.overwrite, max_pixels=args.max_pixels,
                       fits=_memory_guard(args, device))
    model = _load(args)
    model.to(device).eval()
    ex = _exemplar(model, args)
    bar = derain.progress_bar(len(jobs), quiet=args.quiet)
    try:
        for src, dst in jobs:  # one image in memory at a time
            out = inference.predict(model, data.to_tensor(data.load_image(src, args.max_pixels)), ex, device)[0]
            derain.write_png(dst, metrics.to_uint8(out), overwrite=args.overwrite)
            print(dst, flush=True)
            bar.update(1)
    finally:
        bar.close()
    return 0


def cmd_score(args) -> int:
    """Score a folder of output images against ground truth under every protocol (no network)."""
    from benchmark.evaluation import protocols
    from benchmark.tools import score

    if args.protocol and args.protocol != "all":
        protocols.get(args.protocol)  # a misspelt name fails before any image is read
    res = score.score_folder(args.pred, args.gt)
    name = args.name or Path(args.pred).resolve().name
    if args.out:
        score.write(args.out, name, args.dataset or Path(args.gt).resolve().name, res, args.pred, args.gt)
    out = {"model": name, "n_images": res["n_images"],
           **{k: res["mean"][k] for k in ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")},
           "per_image": [{"name": r["name"], "psnr_y": r["psnr_y"], "ssim_y": r["ssim_y"]} for r in res["per_image"]]}
    args.model = name
    args.protocol = args.protocol or "all"  # score prints every protocol unless one is named
    return _print_protocols(args, res, out)


def cmd_plugins(args) -> int:
    """``plugins [list]``: the declared plugins; ``plugins sync``: write params.yaml's plugin_runs /
    score_runs axes (and an empty models.<plugin> section) for the current plugins, results and
    run_datasets."""
    from benchmark.core import config, plugins
    from benchmark.tools import profile_switch

    path = Path(args.params)
    raw = config.parse_yaml(path.read_text(), path) or {}
    config.declare_plugins(raw, path)
    if args.action == "list":
        for name, s in sorted(plugins.specs().items()):
            print(f"{name:<12} {s.kind:<12} {s.target}  ({s.path})")
        return 0
    raw = profile_switch.switch_file(path, None)  # YAML-aware, validated before it replaces the file
    runs, scores = raw["plugin_runs"], raw["score_runs"]
    print(f"{path}: plugin_runs {sorted(runs) or '{}'}, score_runs {sorted(scores) or '{}'}; now run `dvc repro`")
    return 0


def cmd_profile(args) -> int:
    """Switch params.yaml to another profile: sets `profile:` and the DVC matrix axes it decides
    (benchmark/tools/profile_switch.py: a YAML-aware edit, so files `dvc exp run -S` wrote work too)."""
    from benchmark.tools import profile_switch

    raw = profile_switch.switch_file(args.params, args.name)  # plugin_runs / score_runs too (plugins sync)
    print(f"{args.params}: profile {args.name} (datasets: {', '.join(raw['run_datasets'])}); now run `dvc repro`")
    return 0


def cmd_ablations(args) -> int:
    """List the ablation variants of params.yaml with their switches, cells and parameter counts."""
    from benchmark.core import ablations, config

    raw = config.load_params(args.params)
    active = set(ablations.profile_block(raw).get("variants") or []) if "ablation" in raw["profiles"][
        raw.get("profile", "quick")] else set()
    rows = [{**r, "in_profile": r["name"] in active} for r in ablation_listing(raw)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'variant':<13} {'parameters':>11}  {'patch':>5}  {'run':>3}  cells / switches")
    for r in rows:
        cells = ", ".join(f"{k}:{v}" for k, v in r["cells"].items())
        sw = ", ".join(f"{k}={v}" for k, v in r["args"].items()) or "default"
        print(f"{r['name']:<13} {r['params_total']:>11,}  {r['patch']:>5}  {'yes' if r['in_profile'] else 'no':>3}  "
              f"{cells}  |  {sw}")
    return 0


def cmd_perf(args) -> int:
    from benchmark.tools import perf

    return perf.perf_main(args.rest)


def cmd_datasets(args) -> int:
    from benchmark.tools.datasets_cli import datasets_main

    return datasets_main(args.rest)


def cmd_weights(args) -> int:
    from benchmark.tools.weights_cli import weights_main

    return weights_main(args.rest)


def cmd_plots_page(args) -> int:
    from benchmark.tools.plots_page import plots_page_main

    return plots_page_main(args.rest)


def cmd_plan(args) -> int:
    from benchmark.tools.plan import plan_main

    return plan_main(args.rest)


def cmd_grid(args) -> int:
    from benchmark.tools import grid

    return grid.grid_main(args.rest)


def cmd_check_metrics(args) -> int:
    from benchmark.tools import gate

    return gate.main(args.rest)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def cmd_tracking(args) -> int:
    """``tracking sync``: send what MLflow lacks of every training and evaluation folder, close killed runs."""
    from benchmark.core import config, tracking

    cfg = config.tracking_settings(args.params)
    if not cfg.enabled:
        raise ValueError(f"{args.params}: tracking.enabled is false; nothing to sync")
    lines = tracking.sync(cfg, args.runs)
    for line in lines:
        print(line)
    print(f"tracking sync: {len(lines)} run folder(s) handled, MLflow at {cfg.uri}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="msgnn-bench", description="MSGNN deraining benchmark suite")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("models", help="list registered models with parameter counts")
    p.add_argument("--json", action="store_true")
    p.add_argument("--effective", action="store_true",
                   help="also count parameters that receive a gradient (one CPU backward pass per model)")
    p.set_defaults(func=cmd_models)
    for name, fn, hlp in (("evaluate", cmd_evaluate, "PSNR/SSIM of a model on a paired folder"),
                          ("derain", cmd_derain, "derain images or folders into OUTDIR")):
        p = sub.add_parser(name, help=hlp)
        p.add_argument("--model", required=True)
        g = p.add_mutually_exclusive_group()
        g.add_argument("--checkpoint", help="msgnn-bench checkpoint (runs/train/<key>/model.pt)")
        g.add_argument("--official", help=_OfficialHelp("official checkpoint file"))
        p.add_argument("--exemplar", help="exemplar image for MSGNN")
        p.add_argument("--device", default=None)
        p.add_argument("--max-pixels", type=_positive_int, default=MAX_PIXELS, metavar="N",
                       help=f"refuse images with more than N pixels, checked from the header before any "
                            f"work (default {MAX_PIXELS} = 4096x4096)")
        p.add_argument("--tile", type=int, default=None, metavar="SIZE",
                       help="tiled inference: core tiles of SIZE px (large images on a small GPU)")
        p.add_argument("--tile-overlap", type=int, default=32, metavar="PX",
                       help="context pixels on each side of a tile (exact for local models when >= their "
                            "receptive radius; see benchmark/tools/tiling.py)")
        p.add_argument("--no-memory-check", action="store_true",
                       help="run even when an image's estimated inference memory exceeds the free memory "
                            "(checked for every input before any work; see benchmark/tools/memory.py)")
        if name == "evaluate":
            p.add_argument("--data", required=True, help="folder in any supported paired layout")
            p.add_argument("--quantise", choices=["round", "truncate"], default="round",
                           help="uint8 conversion of the output (PReNet's official test script truncates)")
            p.add_argument("--y-mode", choices=["uint8", "float"], default="uint8",
                           help="Y channel: rounded like MATLAB rgb2ycbcr on uint8 (default), or unrounded "
                                "as PReNet's MATLAB statistic scripts compute it")
            p.add_argument("--protocol", metavar="NAME|all",
                           help="scoring protocol(s) to print: matlab-y, prenet, msgnn, skimage-default, "
                                "ntire-crop, or all (the matrix); every protocol is always computed")
            p.add_argument("--json", action="store_true")
        else:
            p.add_argument("inputs", nargs="+", help="image files, folders of images, or paired folders "
                                                      "(only their rainy inputs are derained)")
            p.add_argument("-o", "--output", required=True,
                           help="output folder; must not hold or lie inside an input")
            p.add_argument("--overwrite", action="store_true", help="replace existing output files")
            p.add_argument("-q", "--quiet", action="store_true",
                           help="no progress bar (there is none either when stderr is not a terminal)")
        p.set_defaults(func=fn)
    p = sub.add_parser("score", help="score a folder of output images against ground truth (every protocol)")
    p.add_argument("--pred", required=True, help="folder of output images (file stem = image id)")
    p.add_argument("--gt", required=True, help="ground truth: a paired dataset folder (any supported layout) "
                                               "or a flat folder of clean images")
    p.add_argument("--protocol", metavar="NAME|all", help="protocol to print per image, or all (default: the matrix)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--name", help="method name in the output (default: the --pred folder's name)")
    p.add_argument("--out", help="also write metrics.json/per_image.csv (the evaluate shapes) into this folder")
    p.add_argument("--dataset", help="dataset name recorded in metrics.json (default: the --gt folder's name)")
    p.set_defaults(func=cmd_score)
    p = sub.add_parser("plugins", help="list plugin models, or sync params.yaml's plugin_runs/score_runs axes")
    p.add_argument("action", nargs="?", choices=["list", "sync"], default="list")
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(func=cmd_plugins)
    p = sub.add_parser("train", help="train a model on your own folder (settings from params.yaml)")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True,
                   help="folder with train/ (and test/ for validation) in any supported paired layout, "
                        "or one paired folder")
    p.add_argument("--name", help="dataset name for the run (default: the folder's name)")
    p.add_argument("--out", help="run folder (default: runs/own/<model>-<name>)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("ablations", help="list the ablation variants (Tables 2-5, Figs. 7-9) with parameter counts")
    p.add_argument("--json", action="store_true")
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(func=cmd_ablations)
    p = sub.add_parser("profile", help="switch params.yaml to a profile (quick, ci, paper, rehearsal)")
    p.add_argument("name")
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(func=cmd_profile)
    p = sub.add_parser("tracking", help="tracking sync: send metrics MLflow missed (server down, killed runs)")
    p.add_argument("action", choices=["sync"])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--runs", default="runs", help="the runs folder (its train/ and eval/), or one of those two")
    p.set_defaults(func=cmd_tracking)
    for name, fn, hlp in (("perf", cmd_perf, "speed/memory table (see `msgnn-bench perf -h`)"),
                          ("datasets", cmd_datasets, "list | download | verify | path (see `datasets -h`)"),
                          ("weights", cmd_weights, "official checkpoints: list | download | verify | path"),
                          ("check-metrics", cmd_check_metrics, "compare metrics with a reference (CI gate)"),
                          ("grid", cmd_grid, "run DVC stages in parallel, one per device (see `grid -h`)"),
                          ("plots-page", cmd_plots_page, "write .dvc/plots.html: `dvc plots show` offline"),
                          ("plan", cmd_plan, "what `dvc repro` would run and the downloads it needs")):
        p = sub.add_parser(name, help=hlp, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=fn)
    return ap


PASSTHROUGH = {"perf": cmd_perf, "datasets": cmd_datasets, "weights": cmd_weights, "check-metrics": cmd_check_metrics, "grid": cmd_grid,
               "plots-page": cmd_plots_page, "plan": cmd_plan}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in PASSTHROUGH:  # these parse their own options (argparse REMAINDER drops leading flags)
        args = argparse.Namespace(cmd=argv[0], rest=argv[1:], func=PASSTHROUGH[argv[0]])
    else:
        args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EXPECTED_ERRORS as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"msgnn-bench {args.cmd}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())


def ablation_listing(raw: dict, counts: bool = True) -> list[dict]:
    """Every variant with its switches, table cells and (optionally) exact parameter count."""
    from benchmark.core import ablations
    from benchmark.core.contract import count_params
    from benchmark.core.registry import build_model

    base_args = ((raw.get("models") or {}).get("msgnn") or {}).get("args") or {}
    rows = []
    for name, v in (raw.get("ablations") or {}).items():
        ablations.check_switches(name, v.get("args") or {})
        row = {"name": name, "cells": dict(v.get("cells") or {}), "args": dict(v.get("args") or {}),
               "patch": v.get("patch", ablations.PAPER_PATCH)}
        if counts:
            row["params_total"] = count_params(build_model("msgnn", **{**base_args, **row["args"]}))["total"]
        rows.append(row)
    return rows
