"""The ``msgnn-bench`` command line.

Sub-commands: models, evaluate, derain, perf, datasets, profile, tracking, check-metrics. Every expected
failure (bad path, unknown model, corrupt image, bad params key) prints one line naming the
file or key and exits 1; only genuine bugs show a traceback.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, FileNotFoundError, OSError)


def _load(args) -> "torch.nn.Module":  # noqa: F821
    from benchmark import tiling

    return tiling.maybe_tiled(_load_model(args), args.tile, args.tile_overlap)


def _load_model(args) -> "torch.nn.Module":  # noqa: F821
    from benchmark import runs
    from benchmark.registry import build_model

    if args.official:
        return runs.load_official(args.model, args.official)
    if args.checkpoint:
        return runs.load_model(args.checkpoint, expect=args.model)
    model = build_model(args.model)
    if not getattr(model, "weightless", False):
        raise ValueError(f"model {args.model!r} needs weights: pass --checkpoint PATH or --official PATH")
    return model


def cmd_models(args) -> int:
    from benchmark import metrics
    from benchmark.registry import build_model, list_models

    rows = []
    for name in list_models():
        m = build_model(name)
        c = metrics.count_params(m)
        row = {"name": name, "params_total": c["total"], "params_trainable": c["trainable"]}
        if args.effective and c["total"]:
            row["params_effective"] = metrics.effective_params(m)
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            extra = f"  effective {r['params_effective']:>11,}" if "params_effective" in r else ""
            print(f"{r['name']:<8} total {r['params_total']:>11,}  trainable {r['params_trainable']:>11,}{extra}")
    return 0


def _exemplar(model, args):
    from benchmark import data

    if not getattr(model, "needs_exemplar", False):
        return None
    if not args.exemplar:
        raise ValueError(f"model {args.model!r} needs an exemplar image: pass --exemplar PATH "
                         "(a rainy image from its training set)")
    return data.to_tensor(data.load_image(args.exemplar))


def cmd_evaluate(args) -> int:
    import torch

    from benchmark import config, data, engine

    model = _load(args)
    ds = data.EvalImages(args.data, split="test")
    cfg = config.EvalCfg(quantise=args.quantise, y_mode=args.y_mode, save_images=0, lpips=False)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    res = engine.evaluate(model, ds, cfg, device=device, exemplar=_exemplar(model, args), progress=not args.json)
    out = {"model": args.model, "n_images": res["n_images"],
           **{k: res["mean"][k] for k in ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")},
           "per_image": [{"name": r["name"], "psnr_y": r["psnr_y"], "ssim_y": r["ssim_y"]} for r in res["per_image"]]}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for r in out["per_image"]:
            print(f"{r['name']:>12}  PSNR-Y {r['psnr_y']:7.3f}  SSIM-Y {r['ssim_y']:.4f}")
        print(f"{args.model}: {out['n_images']} images, PSNR-Y {out['psnr_y']:.3f} dB, SSIM-Y {out['ssim_y']:.4f}, "
              f"PSNR-RGB {out['psnr_rgb']:.3f} dB, SSIM-RGB {out['ssim_rgb']:.4f}")
    return 0


def cmd_derain(args) -> int:
    import torch
    from PIL import Image

    from benchmark import data, engine, metrics

    model = _load(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    ex = _exemplar(model, args)
    outdir = Path(args.output)
    files = []
    for p in map(Path, args.inputs):
        files += data_images(p) if p.is_dir() else [p]
    imgs = [(f, data.load_image(f)) for f in files]  # read (and validate) all before writing anything
    outdir.mkdir(parents=True, exist_ok=True)
    for f, arr in imgs:
        out = engine.predict(model, data.to_tensor(arr), ex, device)[0]
        dst = outdir / (f.stem + ".png")
        tmp = dst.with_name(f".{dst.name}.tmp.png")
        Image.fromarray(metrics.to_uint8(out)).save(tmp)
        tmp.replace(dst)
        print(dst)
    return 0


def data_images(folder: Path) -> list[Path]:
    from benchmark import layouts

    return [Path(getattr(i, "input", i)) for i in layouts.find_images(folder)]


def cmd_profile(args) -> int:
    """Switch params.yaml to another profile: rewrites `profile:` and `run_datasets:` in place."""
    import yaml

    from benchmark import config

    path = Path(args.params)
    text = path.read_text()
    raw = yaml.safe_load(text)
    if args.name not in raw.get("profiles", {}):
        raise ValueError(f"{path}: unknown profile {args.name!r}; defined: {sorted(raw.get('profiles', {}))}")
    ds = raw["profiles"][args.name]["datasets"]
    text = re.sub(r"(?m)^profile:.*?(\s+#.*)?$", lambda m: f"profile: {args.name}" + (m.group(1) or ""), text, 1)
    text = re.sub(r"(?m)^run_datasets:\s*\[[^\]]*\]", f"run_datasets: [{', '.join(ds)}]", text, 1)
    from benchmark import io

    io.write_text(path, text)
    config.load_params(path)  # validate the result
    print(f"{path}: profile {args.name} (datasets: {', '.join(ds)}); now run `dvc repro`")
    return 0


def cmd_perf(args) -> int:
    from benchmark import perf

    return perf.perf_main(args.rest)


def cmd_datasets(args) -> int:
    from benchmark import datasets

    return datasets.datasets_main(args.rest)


def cmd_grid(args) -> int:
    from benchmark import grid

    return grid.grid_main(args.rest)


def cmd_check_metrics(args) -> int:
    from benchmark import gate

    return gate.main(args.rest)


def cmd_tracking(args) -> int:
    """``tracking sync``: send what MLflow lacks of every training folder (offline or killed runs)."""
    from benchmark import config, tracking

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
        g.add_argument("--official", help="official checkpoint file (prenet, spanet)")
        p.add_argument("--exemplar", help="exemplar image for MSGNN")
        p.add_argument("--device", default=None)
        p.add_argument("--tile", type=int, default=None, metavar="SIZE",
                       help="tiled inference: core tiles of SIZE px (large images on a small GPU)")
        p.add_argument("--tile-overlap", type=int, default=32, metavar="PX",
                       help="context pixels on each side of a tile (exact for local models when >= their "
                            "receptive radius; see benchmark/tiling.py)")
        if name == "evaluate":
            p.add_argument("--data", required=True, help="folder in any supported paired layout")
            p.add_argument("--quantise", choices=["round", "truncate"], default="round",
                           help="uint8 conversion of the output (PReNet's official test script truncates)")
            p.add_argument("--y-mode", choices=["uint8", "float"], default="uint8",
                           help="Y channel: rounded like MATLAB rgb2ycbcr on uint8 (default), or unrounded "
                                "as PReNet's MATLAB statistic scripts compute it")
            p.add_argument("--json", action="store_true")
        else:
            p.add_argument("inputs", nargs="+")
            p.add_argument("-o", "--output", required=True)
        p.set_defaults(func=fn)
    p = sub.add_parser("profile", help="switch params.yaml to a profile (quick, ci, paper)")
    p.add_argument("name")
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(func=cmd_profile)
    p = sub.add_parser("tracking", help="tracking sync: send metrics MLflow missed (server down, killed runs)")
    p.add_argument("action", choices=["sync"])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--runs", default="runs/train", help="folder of the training run folders")
    p.set_defaults(func=cmd_tracking)
    for name, fn, hlp in (("perf", cmd_perf, "speed/memory table (see `msgnn-bench perf -h`)"),
                          ("datasets", cmd_datasets, "list | download | verify | path (see `datasets -h`)"),
                          ("check-metrics", cmd_check_metrics, "compare metrics with a reference (CI gate)"),
                          ("grid", cmd_grid, "run DVC stages in parallel, one per device (see `grid -h`)")):
        p = sub.add_parser(name, help=hlp, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=fn)
    return ap


PASSTHROUGH = {"perf": cmd_perf, "datasets": cmd_datasets, "check-metrics": cmd_check_metrics, "grid": cmd_grid}


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
