"""Tables 1–5 and Fig. 7 of the paper from the run folders (``runs/eval/*/metrics.json`` only).

Every cell: our mean in the paper's scoring protocol (``protocols.PAPER``), ± std and n over seeds
where n > 1, the paper's printed value and the delta; every other protocol is a CSV column.
Table 1 also carries a paired per-image Wilcoxon signed-rank test of MSGNN vs each method.

CSV schema (stable, read by the HTML report):
* table1.csv: model, trained_on, dataset, profile, protocol, n_seeds, n_images, psnr, psnr_std, ssim,
  ssim_std, paper_psnr, paper_ssim, delta_psnr, delta_ssim, p_wilcoxon_psnr, p_wilcoxon_ssim,
  params, params_trainable, lpips, psnr_y, ssim_y, psnr_rgb, ssim_rgb, then psnr:<p>, ssim:<p>
  for every protocol.
* table2..5.csv, fig7.csv: table, cell, variant, dataset, profile, protocol, switches, train_patch,
  n_seeds, n_images, psnr, psnr_std, ssim, ssim_std, paper_psnr, paper_ssim, delta_psnr,
  delta_ssim, params, paper_params_m, note, then psnr:<p>, ssim:<p>.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.evaluation import protocols
from benchmark.core.runs import eval_metrics, find_run

PROTO_COLS = [f"{m}:{p}" for p in protocols.ALL for m in ("psnr", "ssim")]
LEGACY = ["psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "lpips"]
ABLATION_TABLES = {"table2": "Table 2: basic components (FC / channel attention / graph)",
                   "table3": "Table 3: stride s at 64x64 and 48x48 training patches",
                   "table4": "Table 4: graph patch size l", "table5": "Table 5: number of neighbours k",
                   "fig7": "Fig. 7: number of sub-networks N"}


def collect(runs_dir: Path) -> list[dict]:
    """One row per (run, evaluated set) with ground truth: identity fields + every mean metric."""
    rows = []
    for f, m in eval_metrics(runs_dir):  # each run once: a copied run folder is refused, never counted
        for eval_set, r in m["results"].items():
            if "psnr_y" not in r:
                continue  # real-world sets: no ground truth, images only
            rows.append({"key": m.get("key", f.parent.name), "model": m["model"], "trained_on": m["dataset"],
                         "dataset": eval_set, "variant": m.get("variant"), "seed": m.get("seed", 0),
                         "profile": m.get("profile", ""), "n_images": r["n_images"],
                         "params": m["params_total"], "params_trainable": m["params_trainable"],
                         **{k: r.get(k) for k in LEGACY + PROTO_COLS}})
    return rows


def _stat(vals: list) -> tuple[float, float, int]:
    v = [float(x) for x in vals if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return float("nan"), float("nan"), 0
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"), len(v)


def _aggregate(group: list[dict], ref: list | None, proto: str) -> dict:
    """Mean ± std over the seeds of one cell, and the delta to the paper in its protocol."""
    ps, ps_sd, n = _stat([g[f"psnr:{proto}"] for g in group])
    ss, ss_sd, _ = _stat([g[f"ssim:{proto}"] for g in group])
    out = {"protocol": proto, "n_seeds": n, "n_images": group[0]["n_images"], "psnr": ps, "psnr_std": ps_sd,
           "ssim": ss, "ssim_std": ss_sd,
           "paper_psnr": ref[0] if ref else None, "paper_ssim": ref[1] if ref else None,
           "delta_psnr": ps - ref[0] if ref else None, "delta_ssim": ss - ref[1] if ref else None,
           "params": group[0]["params"], "params_trainable": group[0]["params_trainable"]}
    out.update({k: _stat([g.get(k) for g in group])[0] for k in LEGACY + PROTO_COLS})
    return out


def _per_image(runs_dir: Path, keys: list[str], dataset: str, metric: str) -> dict[str, float]:
    """Per-image metric of a cell, averaged over its seeds (runs named by ``keys``)."""
    acc: dict[str, list[float]] = {}
    for k in keys:
        path = find_run(runs_dir, "eval", k) / "per_image.csv"
        if not path.is_file():
            continue
        with open(path, newline="") as fh:
            for r in csv.DictReader(fh):
                if r.get("eval_set") == dataset and r.get(metric) not in (None, ""):
                    acc.setdefault(r["name"], []).append(float(r[metric]))
    return {n: float(np.mean(v)) for n, v in acc.items()}


def wilcoxon_p(a: dict[str, float], b: dict[str, float]) -> float:
    """Two-sided paired Wilcoxon signed-rank p-value over the images both have (nan if undefined)."""
    from scipy.stats import wilcoxon

    names = sorted(set(a) & set(b))
    d = np.array([a[n] - b[n] for n in names])
    if len(d) < 2 or not np.any(d) or not np.all(np.isfinite(d)):
        return float("nan")
    return float(wilcoxon(d).pvalue)


def table1(rows: list[dict], ref: dict, runs_dir: Path, proto: str = protocols.PAPER) -> pd.DataFrame:
    main = [r for r in rows if not r["variant"]]
    cells: dict[tuple, list[dict]] = {}
    for r in main:
        cells.setdefault((r["model"], r["trained_on"], r["dataset"]), []).append(r)
    out = []
    for (model, trained_on, dataset), group in cells.items():
        paper = (ref.get("table1") or {}).get(dataset, {}).get(model)
        row = {"model": model, "trained_on": trained_on, "dataset": dataset, "profile": group[0]["profile"],
               **_aggregate(group, paper, proto)}
        row["p_wilcoxon_psnr"] = row["p_wilcoxon_ssim"] = None
        ours = cells.get(("msgnn", trained_on, dataset))
        if model != "msgnn" and ours:
            for m in ("psnr", "ssim"):
                row[f"p_wilcoxon_{m}"] = wilcoxon_p(
                    _per_image(runs_dir, [g["key"] for g in ours], dataset, f"{m}:{proto}"),
                    _per_image(runs_dir, [g["key"] for g in group], dataset, f"{m}:{proto}"))
        out.append(row)
    head = ["model", "trained_on", "dataset", "profile", "protocol", "n_seeds", "n_images", "psnr", "psnr_std",
            "ssim", "ssim_std", "paper_psnr", "paper_ssim", "delta_psnr", "delta_ssim", "p_wilcoxon_psnr",
            "p_wilcoxon_ssim", "params", "params_trainable"] + LEGACY + PROTO_COLS
    return pd.DataFrame(out, columns=head)


def ablation_table(table: str, rows: list[dict], ref: dict, variants: dict,
                   proto: str = protocols.PAPER) -> pd.DataFrame:
    """One ablation table: a row per variant that fills one of its cells, in params.yaml order."""
    tref = ref.get(table) or {}
    out = []
    for name, v in variants.items():
        cell = (v.get("cells") or {}).get(table)
        group = [r for r in rows if r["variant"] == name]
        if cell is None or not group:
            continue
        row = {"table": table, "cell": cell, "variant": name, "dataset": group[0]["dataset"],
               "profile": group[0]["profile"],
               "switches": ", ".join(f"{k}={v2}" for k, v2 in (v.get("args") or {}).items()) or "default",
               "train_patch": v.get("patch", 64), **_aggregate(group, (tref.get("values") or {}).get(cell), proto)}
        row["paper_params_m"] = (tref.get("params_m") or {}).get(cell)
        row["note"] = (tref.get("notes") or {}).get(cell, v.get("note", ""))
        out.append(row)
    head = ["table", "cell", "variant", "dataset", "profile", "protocol", "switches", "train_patch", "n_seeds",
            "n_images", "psnr", "psnr_std", "ssim", "ssim_std", "paper_psnr", "paper_ssim", "delta_psnr",
            "delta_ssim", "params", "paper_params_m", "note"] + PROTO_COLS
    return pd.DataFrame(out, columns=head)


def fmt_cell(r: dict) -> str:
    """'ours ± std (n=k)' and, where the paper printed one, '[paper, Δ]' (PSNR / SSIM)."""
    def one(m: str, nd: int) -> str:
        s = f"{r[m]:.{nd}f}" if r[m] is not None and not math.isnan(r[m]) else "–"
        if r["n_seeds"] > 1:
            s += f" ± {r[m + '_std']:.{nd}f}"
        return s

    s = f"{one('psnr', 2)} / {one('ssim', 4)}" + (f" (n={r['n_seeds']})" if r["n_seeds"] > 1 else "")
    if r.get("paper_psnr") is not None:
        s += (f"<br>[{r['paper_psnr']:.3f} / {r['paper_ssim']:.4f}; "
              f"Δ {r['delta_psnr']:+.2f} / {r['delta_ssim']:+.4f}]")
    return s
