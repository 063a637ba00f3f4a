"""Tables 1–5 and Fig. 7 of the paper from the run folders (``runs/eval/*/metrics.json`` only).

Every cell: our mean in the paper's scoring protocol (``protocols.PAPER``), ± std and n over seeds
where n > 1, the paper's printed value and the delta; every other protocol is a CSV column.
Table 1 also carries a paired Wilcoxon signed-rank test of MSGNN vs each method (n, drops, raw and
Holm-adjusted p or "n too small", Rain1400 on background means, bootstrap CI; docs/metrics.md).

CSV schema (stable, read by the HTML report):
* table1.csv: model, trained_on, dataset, profile, protocol, n_seeds, n_images, psnr, psnr_std, ssim,
  ssim_std, paper_psnr, paper_ssim, delta_psnr, delta_ssim, the provenance columns (paper_protocol, own_psnr,
  own_ssim, own_protocol, own_source, own_verified, indep_psnr, indep_ssim, indep_protocol, indep_source,
  indep_variant: benchmark.reporting.provenance), then per metric m in (psnr, ssim):
  p_wilcoxon_<m> (raw), p_holm_<m> (Holm–Bonferroni over the table), test_n_<m>, test_dropped_<m>,
  test_note_<m> ("n too small …"), ci_low_<m>, ci_high_<m> (bootstrap 95% CI of MSGNN − method), then
  test_unit (images, or Rain1400 backgrounds), params, params_trainable, lpips, psnr_y, ssim_y, psnr_rgb, ssim_rgb, then psnr:<p>, ssim:<p>
  for every protocol.
* table2..5.csv, fig7.csv: table, cell, variant, dataset, profile, protocol, switches, train_patch,
  n_seeds, n_images, psnr, psnr_std, ssim, ssim_std, paper_psnr, paper_ssim, delta_psnr,
  delta_ssim, params, paper_params_m, note, then psnr:<p>, ssim:<p>.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.core import io
from benchmark.evaluation import protocols
from benchmark.reporting import provenance
from benchmark.core.registry import display_name, record_display
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
        record_display(m["model"], m.get("display"))  # plugins / published outputs: named by their run
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
        for r in io.read_csv_rows(path):
            if r.get("eval_set") == dataset and r.get(metric) not in (None, ""):
                acc.setdefault(r["name"], []).append(float(r[metric]))
    return {n: float(np.mean(v)) for n, v in acc.items()}


# Below 6 pairs the exact two-sided signed-rank test cannot reach 0.05 (its floor is 2 / 2^n: 0.0625 at
# n = 5, 0.125 at the ci profile's 4 images), so no p-value is printed there.
MIN_PAIRS = 6
BOOTSTRAP_RESAMPLES = 2000


def min_two_sided_p(n: int) -> float:
    """Smallest two-sided p of the exact Wilcoxon signed-rank test with n non-zero differences: every
    difference of the same sign has probability 2^-n under H0, doubled for two sides."""
    return min(1.0, 2.0 / 2**n) if n > 0 else 1.0


def cluster_of(name: str, dataset: str) -> str:
    """The independent unit of an image: Rain1400 (DDN) renders each of its 100 test backgrounds with 14
    rain streak types (ids ``901_1`` … ``1000_14``), so the background id; elsewhere the image itself."""
    if dataset == "rain1400" and "_" in name:
        return name.rsplit("_", 1)[0]
    return name


def _finite_signed(d: np.ndarray) -> np.ndarray:
    """+-inf differences (one method reproduced the target exactly: PSNR inf) keep their sign and get the
    largest magnitude: the signed-rank test only needs the ranks of |d|, and inf is above every finite one."""
    fin = d[np.isfinite(d)]
    big = (np.max(np.abs(fin)) if fin.size else 0.0) * 2 + 1.0
    return np.where(np.isposinf(d), big, np.where(np.isneginf(d), -big, d))


def paired_test(a: dict[str, float], b: dict[str, float], dataset: str = "") -> dict:
    """Two-sided paired Wilcoxon signed-rank test of a − b and a bootstrap 95% CI of the mean difference.

    Pairs are matched by image name; ``dropped`` counts images only one side has or whose values are
    missing/NaN, and (for Rain1400) backgrounds whose differences are +inf and -inf at once. For Rain1400
    the unit is the background (``cluster_of``): differences are averaged per background first, the test
    runs on those means and the bootstrap resamples backgrounds. Returns p (None when n < MIN_PAIRS or
    every difference is zero), n (units tested), unit, dropped, ci (low, high; None if any difference is
    infinite) and note.
    """
    from scipy.stats import wilcoxon

    names = sorted(set(a) | set(b))
    good = [n for n in names if n in a and n in b and not (np.isnan(a[n]) or np.isnan(b[n]))]
    dropped = len(names) - len(good)
    per: dict[str, list[float]] = {}
    for n in good:
        x, y = a[n], b[n]
        d = 0.0 if (math.isinf(x) and math.isinf(y) and x == y) else x - y  # both exact: no difference
        per.setdefault(cluster_of(n, dataset), []).append(d)
    clustered = any(len(v) > 1 for v in per.values())
    units = {}
    for c, v in per.items():
        m = float(np.mean(v)) if not (np.isposinf(v).any() and np.isneginf(v).any()) else float("nan")
        if math.isnan(m):
            dropped += len(v)
        else:
            units[c] = m
    d = np.array(list(units.values()), dtype=float)
    unit = "backgrounds (mean of their renderings)" if clustered else "images"
    out = {"p": None, "n": len(d), "unit": unit, "dropped": dropped, "ci": None, "note": ""}
    if len(d) < MIN_PAIRS:
        out["note"] = f"n too small (n={len(d)}; smallest attainable two-sided p = {min_two_sided_p(len(d)):.3g})"
    elif not np.any(d):
        out["note"] = "all differences zero"
    else:
        out["p"] = float(wilcoxon(_finite_signed(d)).pvalue)
    if len(d) >= 2 and np.all(np.isfinite(d)):
        # percentile bootstrap over the units (images, or whole backgrounds for Rain1400); fixed seed so a
        # report is reproducible
        rng = np.random.default_rng(0)
        means = d[rng.integers(0, len(d), size=(BOOTSTRAP_RESAMPLES, len(d)))].mean(axis=1)
        out["ci"] = (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))
    return out


def wilcoxon_p(a: dict[str, float], b: dict[str, float], dataset: str = "") -> float:
    """The p-value of ``paired_test`` (nan where it gives none)."""
    p = paired_test(a, b, dataset)["p"]
    return float("nan") if p is None else p


def holm(pvals: list[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1); None stays None."""
    idx = [i for i, p in enumerate(pvals) if p is not None and not math.isnan(p)]
    order = sorted(idx, key=lambda i: pvals[i])
    out: list[float | None] = [None] * len(pvals)
    running, m = 0.0, len(order)
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * pvals[i]))
        out[i] = running
    return out


SPREAD_LEGEND = ("± = sample standard deviation over training seeds (n = number of seeds), not over images. "
                 "p: two-sided paired Wilcoxon signed-rank test, MSGNN vs the method, on per-image values "
                 "(averaged over seeds; Rain1400: per-background means of its 14 renderings), raw and "
                 "Holm–Bonferroni-adjusted over all tests of the table; CI: percentile bootstrap 95% interval "
                 "of the mean difference MSGNN − method, resampling the same units.")


def stats_lines(df: pd.DataFrame) -> list[str]:
    """Markdown lines for Table 1's tests: n, dropped, raw and adjusted p or 'n too small', CI."""
    rows = [r for r in df.to_dict("records") if r.get("test_n_psnr") is not None and not pd.isna(r["test_n_psnr"])]
    if not rows:
        return []

    def p(v):
        return "–" if v is None or pd.isna(v) else f"{v:.3g}"

    out = ["", SPREAD_LEGEND, "", "| method | dataset | metric | n (unit) | dropped | p raw | p Holm | 95% CI of Δ |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for m in ("psnr", "ssim"):
            ci = r.get(f"ci_low_{m}")
            ci_s = "–" if ci is None or pd.isna(ci) else f"[{ci:+.4g}, {r[f'ci_high_{m}']:+.4g}]"
            raw = r[f"test_note_{m}"] or p(r[f"p_wilcoxon_{m}"])
            out.append(f"| {display_name(r['model'])} | {r['dataset']} | {m.upper()} | "
                       f"{int(r[f'test_n_{m}'])} ({r['test_unit']}) | {int(r[f'test_dropped_{m}'])} | {raw} | "
                       f"{p(r[f'p_holm_{m}'])} | {ci_s} |")
    return out


STAT_COLS = ["p_wilcoxon_psnr", "p_holm_psnr", "test_n_psnr", "test_dropped_psnr", "test_note_psnr",
             "ci_low_psnr", "ci_high_psnr", "p_wilcoxon_ssim", "p_holm_ssim", "test_n_ssim", "test_dropped_ssim",
             "test_note_ssim", "ci_low_ssim", "ci_high_ssim", "test_unit"]


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
        row.update({c: None for c in STAT_COLS})
        row.update(provenance.columns(ref, dataset, model))  # own paper / independent retraining beside ours
        ours = cells.get(("msgnn", trained_on, dataset))
        if model != "msgnn" and ours:
            for m in ("psnr", "ssim"):
                t = paired_test(_per_image(runs_dir, [g["key"] for g in ours], dataset, f"{m}:{proto}"),
                                _per_image(runs_dir, [g["key"] for g in group], dataset, f"{m}:{proto}"), dataset)
                row.update({f"p_wilcoxon_{m}": t["p"], f"test_n_{m}": t["n"], f"test_dropped_{m}": t["dropped"],
                            f"test_note_{m}": t["note"], "test_unit": t["unit"],
                            f"ci_low_{m}": t["ci"][0] if t["ci"] else None,
                            f"ci_high_{m}": t["ci"][1] if t["ci"] else None})
        out.append(row)
    # Holm–Bonferroni over every test of this table (both metrics, every method and dataset)
    keys = [(i, m) for i in range(len(out)) for m in ("psnr", "ssim")]
    adj = holm([out[i][f"p_wilcoxon_{m}"] for i, m in keys])
    for (i, m), v in zip(keys, adj):
        out[i][f"p_holm_{m}"] = v
    head = ["model", "trained_on", "dataset", "profile", "protocol", "n_seeds", "n_images", "psnr", "psnr_std",
            "ssim", "ssim_std", "paper_psnr", "paper_ssim", "delta_psnr", "delta_ssim"] + provenance.CSV_COLUMNS + \
        STAT_COLS + ["params", "params_trainable"] + LEGACY + PROTO_COLS
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
        inferred = (tref.get("inferred") or {}).get(cell)
        if inferred:  # a value the paper does not print: shown with its origin, never subtracted
            row["delta_psnr"] = row["delta_ssim"] = None
        row["paper_params_m"] = (tref.get("params_m") or {}).get(cell)
        # the paper's parameter count may belong to another model family than the sweep (Fig. 7: the
        # exemplar-off 5x5 model): its exact count per cell sits beside ours, with the family named
        row["paper_family_params"] = (tref.get("family_params") or {}).get(cell)
        row["paper_family"] = tref.get("params_family", "") if row["paper_family_params"] else ""
        row["note"] = "; ".join(x for x in ((tref.get("notes") or {}).get(cell, v.get("note", "")),
                                            f"paper value inferred: {inferred}" if inferred else "") if x)
        out.append(row)
    head = ["table", "cell", "variant", "dataset", "profile", "protocol", "switches", "train_patch", "n_seeds",
            "n_images", "psnr", "psnr_std", "ssim", "ssim_std", "paper_psnr", "paper_ssim", "delta_psnr",
            "delta_ssim", "params", "paper_params_m", "paper_family_params", "paper_family", "note"] + PROTO_COLS
    return pd.DataFrame(out, columns=head)


NOT_RUN = "not run in this profile"


def has(v) -> bool:
    """A value was measured or printed (not None, not NaN)."""
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def profile_banner(profiles) -> str:
    """The line every generated table carries: which profile its numbers come from and what they are."""
    names = sorted({str(p) for p in profiles if has(p) and str(p)}) or ["unknown"]
    if names == ["paper"]:
        return "Profile: paper (the paper's data and schedule)."
    return (f"Profile: {', '.join(names)}. These numbers are a smoke test of the pipeline, not a reproduction "
            "of the paper; the Δ against the paper's values is not a result.")


def fmt_cell(r: dict) -> str:
    """'ours ± std (n=k)' and, where the paper printed one, '[paper, Δ]' (PSNR / SSIM); a missing value
    says why, never 'nan'."""
    def one(m: str, nd: int) -> str:
        s = f"{r[m]:.{nd}f}" if has(r[m]) else NOT_RUN
        if r["n_seeds"] > 1 and has(r.get(m + "_std")):
            s += f" ± {r[m + '_std']:.{nd}f}"
        return s

    s = f"{one('psnr', 2)} / {one('ssim', 4)}" + (f" (n={r['n_seeds']})" if r["n_seeds"] > 1 else "")
    if has(r.get("paper_psnr")):
        delta = (f"Δ {r['delta_psnr']:+.2f} / {r['delta_ssim']:+.4f}" if has(r.get("delta_psnr"))
                 else "inferred value, no Δ")
        s += f"<br>[{r['paper_psnr']:.3f} / {r['paper_ssim']:.4f}; {delta}]"
    return s
