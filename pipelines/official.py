"""The ``official@<checkpoint>--<test set>`` stage: one official checkpoint on a test set its
authors published a number for, scored under every protocol.

Loads ``weights/<checkpoint>/<file>`` through the model's official loader with the registry's
builder arguments (``benchmark/weights/checkpoints.yaml``), runs it over the full test images of
``data/<test set>`` through the evaluator every model goes through (``benchmark.evaluation.inference``:
one network output per image, every protocol from it) and writes
``runs/official/<checkpoint>--<test set>/metrics.json`` (every protocol's mean, the published number
and its protocol) and ``per_image.csv``. ``official_report`` turns them into ``reports/official.*``.

Reads no params.yaml key: the command line carries the model, checkpoint and test set (the profile's
``official_runs`` entry), and the scoring is every protocol, always.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from benchmark.core import io, runs
from benchmark.core.config import EvalCfg
from benchmark.core.registry import load_official
from benchmark.data import loading as data
from benchmark.evaluation import inference, protocols
from benchmark.weights import registry

OUT = runs.RUNS / "official"
SEP = "--"


def run_key(checkpoint: str, dataset: str) -> str:
    return f"{checkpoint}{SEP}{dataset}"


def evaluate(model: str, checkpoint: str, dataset: str, *, data_root: Path | None = None,
             weights_root: Path = registry.ROOT, out: Path | None = None, limit: int | None = None,
             device: str = "cpu", progress: bool = True) -> dict:
    spec = registry.get(checkpoint)
    if spec.model != model:
        raise ValueError(f"checkpoint {checkpoint!r} is a {spec.model} checkpoint, not {model}")
    pub = registry.published_on(spec, dataset)
    if pub is None:
        raise ValueError(f"checkpoint {checkpoint!r} has no published number on {dataset!r} "
                         f"(published on: {', '.join(p.test_set for p in spec.published) or 'none'})")
    path = spec.file_path(weights_root)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found; run `msgnn-bench weights download {checkpoint}`")
    net = load_official(model, path, **spec.args)
    ds = data.EvalImages(data_root or runs.data_dir(dataset), "test", limit=limit)
    cfg = EvalCfg(quantise="round", y_mode="uint8", save_images=0, lpips=False)
    t0 = time.perf_counter()
    res = inference.evaluate(net, ds, cfg, device=device, progress=progress)
    mean = res["mean"]
    result = {
        "checkpoint": checkpoint, "model": model, "dataset": dataset, "n_images": res["n_images"],
        "limit": limit, "data": str(data_root or runs.data_dir(dataset)), "args": spec.args,
        "weights_sha256": spec.sha256, "seconds": round(time.perf_counter() - t0, 1),
        "published": {"psnr": pub.psnr, "ssim": pub.ssim, "protocol": pub.protocol, "source": pub.source,
                      "note": pub.note},
        "protocols": {n: {"psnr": mean[f"psnr:{n}"], "ssim": mean[f"ssim:{n}"], "source": protocols.get(n).source}
                      for n in protocols.ALL},
    }
    out = Path(out) if out is not None else OUT / run_key(checkpoint, dataset)
    io.write_json(out / "metrics.json", result)
    io.write_csv(out / "per_image.csv", res["per_image"])
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.official", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--checkpoint", required=True, help="a name of benchmark/weights/checkpoints.yaml")
    ap.add_argument("--on", required=True, dest="dataset", help="the test set (datasets.yaml key)")
    ap.add_argument("--data", type=Path, default=None, help="test folder (default data/<test set>)")
    ap.add_argument("--weights", type=Path, default=registry.ROOT, help="weights folder (default weights)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--limit", type=int, default=None, help="first N test images only (a subset: say so)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    try:
        r = evaluate(args.model, args.checkpoint, args.dataset, data_root=args.data, weights_root=args.weights,
                     out=args.out, limit=args.limit, device=args.device, progress=sys.stderr.isatty())
    except (ValueError, KeyError, FileNotFoundError, data.DataError) as exc:
        print(f"official: error: {exc}", file=sys.stderr)
        return 1
    p, ours = r["published"], r["protocols"][r["published"]["protocol"]]
    print(f"{args.checkpoint} on {args.dataset} ({r['n_images']} images): published {p['psnr']:.2f}/{p['ssim']:.4f} "
          f"({p['protocol']}), ours {ours['psnr']:.3f}/{ours['ssim']:.4f}, "
          f"delta {ours['psnr'] - p['psnr']:+.3f} dB / {ours['ssim'] - p['ssim']:+.4f}; "
          f"msgnn protocol {r['protocols']['msgnn']['psnr']:.3f}/{r['protocols']['msgnn']['ssim']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
