"""The results tables of ``reports/index.html``, as data for the page template (``pipelines/site_page.html``).

Reads ``reports/table*.csv`` (written by the report stage; schema in ``benchmark.reporting.tables``) and
builds, for each scoring protocol named by a ``psnr:<protocol>`` column, what the page shows:

* ``table1_view``: Table 1 as the paper lays it out, methods (rows, the paper's order) × datasets
  (columns), each cell our PSNR / SSIM in that protocol with the paper's printed value and Δ beside it,
  best / second best per dataset column and "below the rainy input" shading, all read from the same
  protocol's columns;
* ``ablation_view``: Tables 2–5 likewise (a row per variant);
* ``raw_view``: the CSV as it is, every column (the "full CSV" one click away).

Nothing here writes HTML: the template does, with autoescaping on, so every string from a file is
escaped.
"""
from __future__ import annotations

import math
from typing import Callable


NONRANKED = {"input"}  # the rainy-input row is a reference, not a competitor
NOT_RUN = "not run in this profile"



def metric_kind(col: str) -> str | None:
    """'max', 'min' or None (not a ranked metric)."""
    base = col.split(":")[0].lower()
    if base.startswith(("psnr", "ssim")):
        return "max"
    if base.startswith("lpips"):
        return "min"
    return None


def num(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def fmt(col: str, v: str) -> str:
    """Display form of one CSV cell: PSNR 2 decimals, SSIM/LPIPS 4, counts with separators."""
    x = num(v)
    if x is None or not math.isfinite(x):
        return v if x is None else ("inf" if x > 0 else "-inf")
    base = col.split(":")[0].lower()
    if base.startswith("psnr"):
        return f"{x:.2f}"
    if base.startswith(("ssim", "lpips")):
        return f"{x:.4f}"
    if x == int(x) and ("params" in base or base.startswith("n_")):
        return f"{int(x):,}"
    return v


def protocols(tables: list[tuple[list[str], list[dict]]]) -> list[str]:
    """Every protocol named by a ``psnr:<protocol>`` column, in first-seen order."""
    seen: dict[str, None] = {}
    for cols, _ in tables:
        for c in cols:
            if c.startswith("psnr:"):
                seen[c.split(":", 1)[1]] = None
    return list(seen)


def marks(values: dict, kind: str = "max") -> dict:
    """{key: 'best' | 'second'} over ``values`` ({key: number or None}); ties share the mark."""
    vals = sorted({v for v in values.values() if v is not None}, reverse=kind == "max")
    out = {}
    for k, v in values.items():
        if v is not None and vals and v == vals[0]:
            out[k] = "best"
        elif v is not None and len(vals) > 1 and v == vals[1]:
            out[k] = "second"
    return out


def _metric(row: dict, metric: str, proto: str, digits: int) -> dict:
    """One number of a cell: its value, text, and ± std where the CSV's main cells are in ``proto``."""
    v = num(row.get(f"{metric}:{proto}"))
    text = "–" if v is None else (("inf" if v > 0 else "-inf") if math.isinf(v) else f"{v:.{digits}f}")
    sd = num(row.get(f"{metric}_std")) if row.get("protocol") == proto else None
    return {"value": v, "text": text, "std": None if sd is None else f"{sd:.{digits}f}", "mark": ""}


def _paper(row: dict, ref: list | None, ours: dict) -> dict | None:
    """The paper's printed PSNR / SSIM and Δ = ours − paper (None where the paper prints none)."""
    if not ref or ref[0] is None:
        return None
    d = {}
    for m, i, nd in (("psnr", 0, 2), ("ssim", 1, 4)):
        v = ours[m]["value"]
        d[m] = f"{ref[i]:.{3 if m == 'psnr' else 4}f}"
        d[f"delta_{m}"] = f"{v - ref[i]:+.{nd}f}" if v is not None and math.isfinite(v) else "–"
    return d


def _cell(row: dict, proto: str, ref: list | None) -> dict:
    c = {"psnr": _metric(row, "psnr", proto, 2), "ssim": _metric(row, "ssim", proto, 4),
         "n_seeds": int(num(row.get("n_seeds")) or 1), "below": "", "missing": "", "vs_input": ""}
    c["paper"] = _paper(row, ref, c)
    return c


def _rank(cells: list[dict]) -> None:
    """Best / second best over ``cells`` (the rainy input excluded), per metric, in place."""
    for m in ("psnr", "ssim"):
        got = marks({i: c[m]["value"] for i, c in enumerate(cells) if not c.get("reference")})
        for i, mark in got.items():
            cells[i][m]["mark"] = mark


def _below(cells: list[dict], reason: Callable[[dict, float, float], str] | None) -> None:
    """Shade cells whose PSNR (in the cell's protocol) is below the rainy input's in the same column;
    every method's cell also gets its margin over the input (``vs_input``, dB), so a short run that
    does derain shows by how much."""
    ref = next((c["psnr"]["value"] for c in cells if c.get("reference")), None)
    if ref is None:
        return
    for c in cells:
        v = c["psnr"]["value"]
        if not c.get("reference") and v is not None:
            c["vs_input"] = f"{v - ref:+.2f}"
        if not c.get("reference") and v is not None and v < ref:
            c["below"] = reason(c["row"], v, ref) if reason else f"{v:.2f} dB is below the rainy input's {ref:.2f} dB"


def table1_view(rows: list[dict], proto: str, paper: dict,
                reason: Callable[[dict, float, float], str] | None = None) -> dict:
    """Table 1 in protocol ``proto``: {columns: [{dataset, trained_on}], methods: [{model, cells}]}.

    ``paper`` = {dataset: {model: [psnr, ssim]}} as printed; ``reason(row, psnr, input_psnr)`` says
    why a method is below the rainy input. A method without a row for a column says so (``missing``).
    """
    from benchmark.core.registry import display_name, paper_rank

    columns = list(dict.fromkeys((r.get("dataset", ""), r.get("trained_on", "")) for r in rows))
    models = sorted(dict.fromkeys(r.get("model", "") for r in rows), key=lambda m: (paper_rank(m), m))
    by = {(r.get("model", ""), r.get("dataset", ""), r.get("trained_on", "")): r for r in rows}
    grid = {m: [] for m in models}
    for d, t in columns:
        col = []
        for m in models:
            r = by.get((m, d, t))
            if r is None:
                c = {"missing": NOT_RUN, "psnr": None, "ssim": None, "paper": None, "below": "",
                     "reference": m in NONRANKED}
            else:
                c = _cell(r, proto, (paper.get(d) or {}).get(m))
                c["reference"], c["row"] = m in NONRANKED, r
            col.append(c)
        present = [c for c in col if not c["missing"]]
        _rank(present)
        _below(present, reason)
        for m, c in zip(models, col):
            grid[m].append(c)
    return {"columns": [{"dataset": d, "trained_on": t} for d, t in columns],
            "methods": [{"model": m, "name": display_name(m), "cells": grid[m]} for m in models],
            "has_paper": any(c["paper"] for cs in grid.values() for c in cs)}


def ablation_view(rows: list[dict], proto: str) -> dict:
    """Tables 2–5 in protocol ``proto``: a row per variant (cell, variant, switches, patch, parameters),
    its PSNR / SSIM, the paper's value and Δ, best / second best over the table's variants."""
    out = []
    for r in rows:
        ref = [num(r.get("paper_psnr")), num(r.get("paper_ssim"))] if num(r.get("paper_psnr")) is not None else None
        c = _cell(r, proto, ref)
        if c["paper"] and num(r.get("delta_psnr")) is None:  # a value the paper does not print: no Δ
            c["paper"]["delta_psnr"] = c["paper"]["delta_ssim"] = "inferred, no Δ"
        c["reference"] = False
        out.append({"cell": r.get("cell", ""), "variant": r.get("variant", ""), "dataset": r.get("dataset", ""),
                    "switches": r.get("switches", ""), "train_patch": r.get("train_patch", ""),
                    "params": fmt("params", r.get("params", "")), "note": r.get("note", ""), "c": c})
    _rank([o["c"] for o in out])
    return {"rows": out, "has_paper": any(o["c"]["paper"] for o in out)}


def raw_view(cols: list[str], rows: list[dict]) -> dict:
    """The CSV as it is: every column, every row in file order, numbers rounded for display only."""
    return {"cols": cols, "rows": [[(c, r.get(c) or "", fmt(c, r.get(c) or "")) for c in cols] for r in rows]}


OFFICIAL_MISSING = ("not run in this profile: there is no reports/official.csv (the official_report stage writes "
                    "it; official checkpoints run in the profiles that list them under `official`)")


def _pair(row: dict, a: str, b: str, signed: bool = False) -> str:
    """'PSNR / SSIM' of two CSV columns, '–' where the row has no number (never 'nan')."""
    x, y = num(row.get(a)), num(row.get(b))
    if x is None or y is None:
        return "–"
    return f"{x:+.3f} / {y:+.4f}" if signed else f"{x:.3f} / {y:.4f}"


def official_view(rows: list[dict] | None) -> dict:
    """The official-checkpoint section of the page from ``reports/official.csv`` (None: no such file):
    checkpoint | test set | published (protocol) | ours, same protocol | Δ | ours under ``msgnn`` | n | status.
    ``note`` says when nothing was run in this profile, so the section is never empty."""
    if rows is None:
        return {"rows": [], "note": OFFICIAL_MISSING, "sources": []}
    out = []
    for r in rows:
        # the published number as its authors printed it (their digits, no added precision)
        pub = f"{r['published_psnr']} / {r['published_ssim']}" if num(r.get("published_psnr")) is not None else "–"
        out.append({"checkpoint": r.get("checkpoint", ""), "test_set": r.get("test_set", ""),
                    "published": f"{pub} ({r.get('published_protocol', '')})",
                    "ours": _pair(r, "ours_psnr", "ours_ssim") + ("*" if r.get("subset") == "True" else ""),
                    "delta": _pair(r, "delta_psnr", "delta_ssim", signed=True),
                    "msgnn": _pair(r, "msgnn_psnr", "msgnn_ssim"), "n": r.get("n_images") or "–",
                    "status": r.get("status", ""), "measured": num(r.get("ours_psnr")) is not None})
    note = "" if any(o["measured"] for o in out) else (
        "No official checkpoint was run in this profile: every row below says why (published numbers only).")
    return {"rows": out, "note": note, "sources": sorted({r.get("published_source", "") for r in rows} - {""})}
