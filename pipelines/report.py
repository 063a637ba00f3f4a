"""DVC stage ``report``: Table-1-shaped tables and training curves from the run folders.

Reads every ``runs/eval/*/metrics.json`` (the only source of numbers) and
``runs/train/*/train_log.csv``, puts the paper's printed values from
``reports/paper_reference.yaml`` beside ours, and writes ``reports/table1.md``,
``reports/table1.csv`` and ``reports/figures/training_curves.png``.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import yaml

from benchmark import io
from benchmark.runs import RUNS

ORDER = ["input", "rescan", "prenet", "spanet", "dcsfn", "mspfn", "rcdnet", "dualgcn", "moss", "msgnn"]
NAMES = {"input": "Rainy input", "rescan": "RESCAN", "prenet": "PReNet", "spanet": "SPANet", "dcsfn": "DCSFN",
         "mspfn": "MSPFN", "rcdnet": "RCDNet", "dualgcn": "DualGCN", "moss": "MOSS", "msgnn": "MSGNN"}


def collect(runs_dir: Path) -> list[dict]:
    """One row per (model, training dataset, evaluated set) with its mean metrics."""
    rows = []
    for f in sorted((runs_dir / "eval").glob("*/metrics.json")):
        m = json.loads(f.read_text())
        for eval_set, r in m["results"].items():
            if "psnr_y" not in r:
                continue  # real-world sets: no ground truth, images only
            rows.append({"model": m["model"], "trained_on": m["dataset"], "dataset": eval_set,
                         "profile": m.get("profile", ""), "n_images": r["n_images"],
                         "psnr_y": r["psnr_y"], "ssim_y": r["ssim_y"], "psnr_rgb": r["psnr_rgb"],
                         "ssim_rgb": r["ssim_rgb"], "lpips": r.get("lpips"),
                         "params": m["params_total"], "params_trainable": m["params_trainable"]})
    return rows


def _models(rows: list[dict]) -> list[str]:
    present = {r["model"] for r in rows}
    return [m for m in ORDER if m in present] + sorted(present - set(ORDER))


def markdown(rows: list[dict], ref: dict) -> str:
    models, datasets = _models(rows), list(dict.fromkeys(r["dataset"] for r in rows))
    cell = {(r["dataset"], r["model"]): r for r in rows}
    paper = ref.get("table1", {})
    head = "| Dataset | " + " | ".join(NAMES.get(m, m) for m in models) + " |"
    lines = ["# Table 1 (regenerated): PSNR / SSIM on the Y channel", "",
             "Ours on top; the paper's printed value below in brackets where Table 1 has one.", "",
             head, "|" + "---|" * (len(models) + 1)]
    for d in datasets:
        vals = []
        for m in models:
            r = cell.get((d, m))
            s = f"{r['psnr_y']:.2f} / {r['ssim_y']:.4f}" if r else "–"
            p = paper.get(d, {}).get(m)
            vals.append(s + (f"<br>({p[0]:.2f} / {p[1]:.4f})" if p else ""))
        lines.append(f"| {d} | " + " | ".join(vals) + " |")
    params = {r["model"]: r["params"] for r in rows}
    ref_p = ref.get("params_m", {})
    lines.append("| Parameters | " + " | ".join(
        ("–" if m == "input" else f"{params[m] / 1e6:.2f}M") + (f"<br>({ref_p[m]:.2f}M)" if m in ref_p else "")
        for m in models) + " |")
    lines += ["", "RGB-channel PSNR/SSIM, LPIPS and exact parameter counts are in `table1.csv`."]
    profiles = sorted({r["profile"] for r in rows})
    lines.append(f"Profile(s): {', '.join(profiles)}. Numbers from a `quick` profile are a smoke test of the "
                 "pipeline on the embedded synthetic set, not a reproduction of the paper.")
    return "\n".join(lines) + "\n"


def curves(runs_dir: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on CI or servers
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for f in sorted((runs_dir / "train").glob("*/train_log.csv")):
        with open(f, newline="") as fh:
            rows = list(csv.DictReader(fh))
        if rows:
            ax.plot([float(r["step"]) for r in rows], [float(r["loss"]) for r in rows], label=f.parent.name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    ax.set_title("Training curves")
    if ax.lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", default=str(RUNS))
    ap.add_argument("--out", default="reports")
    ap.add_argument("--reference", default="reports/paper_reference.yaml")
    args = ap.parse_args(argv)
    runs_dir, out = Path(args.runs), Path(args.out)
    rows = collect(runs_dir)
    if not rows:
        print(f"report: no {runs_dir}/eval/*/metrics.json found; run the evaluate stages first", file=sys.stderr)
        return 1
    ref = yaml.safe_load(Path(args.reference).read_text())
    io.write_csv(out / "table1.csv", rows)
    md = markdown(rows, ref)
    io.write_text(out / "table1.md", md)
    curves(runs_dir, out / "figures" / "training_curves.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
