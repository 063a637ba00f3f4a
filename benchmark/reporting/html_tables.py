"""Results tables as HTML for ``reports/index.html``, generic over the CSV's columns.

Assumptions about ``reports/table*.csv`` (the report stage writes them; nothing else is agreed):
* one row per result; identifying columns ``model`` and ``dataset`` (and ``trained_on``,
  ``protocol`` when present) define the groups in which best and second best are marked;
* metric columns are named ``psnr…``, ``ssim…`` (higher is better) or ``lpips…`` (lower is better);
* a scoring protocol is either a column suffix ``<metric>:<protocol>`` (a column group per
  protocol) or a ``protocol`` column (a row group per protocol); the page's protocol switch shows
  one group at a time; columns and rows without a protocol are always shown.
Every string from a file is escaped (``html.escape``) before it enters the page.
"""
from __future__ import annotations

import csv
import math
from html import escape
from pathlib import Path

ID_COLS = ("dataset", "trained_on", "protocol")
NONRANKED = {"input"}  # the rainy-input row is a reference, not a competitor


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as fh:
        r = csv.DictReader(fh)
        rows = list(r)
        return list(r.fieldnames or []), rows


def metric_kind(col: str) -> str | None:
    """'max', 'min' or None (not a ranked metric)."""
    base = col.split(":")[0].lower()
    if base.startswith(("psnr", "ssim")):
        return "max"
    if base.startswith("lpips"):
        return "min"
    return None


def protocol_of(col: str) -> str:
    return col.split(":", 1)[1] if ":" in col else ""


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


def ranks(cols: list[str], rows: list[dict]) -> dict[tuple[int, str], str]:
    """{(row index, column): 'best' | 'second'} within each group of identical ID columns."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        if r.get("model") in NONRANKED:
            continue
        groups.setdefault(tuple(r.get(c, "") for c in ID_COLS), []).append(i)
    out: dict[tuple[int, str], str] = {}
    for col in cols:
        kind = metric_kind(col)
        if kind is None:
            continue
        for idx in groups.values():
            vals = sorted({v for i in idx if (v := num(rows[i].get(col))) is not None}, reverse=kind == "max")
            for i in idx:
                v = num(rows[i].get(col))
                if v is not None and vals and v == vals[0]:
                    out[(i, col)] = "best"
                elif v is not None and len(vals) > 1 and v == vals[1]:
                    out[(i, col)] = "second"
    return out


def main_psnr(cols: list[str]) -> str | None:
    """The column the below-input check and the paper deltas use first: psnr_y, else the first PSNR."""
    if "psnr_y" in cols:
        return "psnr_y"
    return next((c for c in cols if c.lower().startswith("psnr")), None)


def below_input(cols: list[str], rows: list[dict]) -> set[int]:
    """Rows (not the input row) whose main PSNR is below the rainy input's in the same group."""
    col = main_psnr(cols)
    if col is None:
        return set()
    ref = {tuple(r.get(c, "") for c in ID_COLS): num(r.get(col)) for r in rows if r.get("model") == "input"}
    out = set()
    for i, r in enumerate(rows):
        base = ref.get(tuple(r.get(c, "") for c in ID_COLS))
        v = num(r.get(col))
        if r.get("model") != "input" and base is not None and v is not None and v < base:
            out.add(i)
    return out


def display_order(rows: list[dict]) -> list[int]:
    """Row indices grouped by dataset (first-seen order), models in the paper's column order.

    ``data-row`` keeps each row's index in the CSV, so the page can be checked against the file.
    """
    from benchmark.core.registry import paper_rank

    sets = {d: k for k, d in enumerate(dict.fromkeys(r.get("dataset", "") for r in rows))}
    return sorted(range(len(rows)), key=lambda i: (sets[rows[i].get("dataset", "")],
                                                   paper_rank(rows[i].get("model", "")), i))


def render(name: str, cols: list[str], rows: list[dict], paper: dict, reasons: dict[int, str]) -> str:
    """One ``<table>``; ``paper`` = {dataset: {model: [psnr, ssim]}} (Table 1 as printed)."""
    rk = ranks(cols, rows)
    deltas = [c for c in cols if c.lower().startswith("psnr") and (c.endswith("_y") or ":" in c)]
    has_paper = "model" in cols and "dataset" in cols and any(
        paper.get(r.get("dataset"), {}).get(r.get("model")) for r in rows)
    head = ["<tr>"]
    for c in cols:
        head.append(f'<th data-protocol="{escape(protocol_of(c))}">{escape(c)}</th>')
    if has_paper:
        head.append('<th data-protocol="">paper PSNR / SSIM</th>')
        head += [f'<th data-protocol="{escape(protocol_of(c))}">Δ {escape(c)}</th>' for c in deltas]
    head.append("</tr>")
    body = []
    # With protocol-suffixed columns, a ``protocol`` column only names the protocol of the main cells:
    # the switch then picks column groups and every row stays visible.
    column_groups = any(protocol_of(c) for c in cols)
    for i in display_order(rows):
        r = rows[i]
        cls = ' class="below"' if i in reasons else ""
        row_proto = "" if column_groups else r.get("protocol", "")
        body.append(f'<tr data-row="{i}" data-protocol="{escape(row_proto)}"{cls}>')
        for c in cols:
            v = r.get(c) or ""
            mark = rk.get((i, c), "")
            note = ""
            if c == main_psnr(cols) and i in reasons:
                note = f' <span class="flag" title="{escape(reasons[i])}">below input†</span>'
            body.append(f'<td data-col="{escape(c)}" data-value="{escape(v)}" data-protocol="{escape(protocol_of(c))}"'
                        f'{f" class={chr(34)}{mark}{chr(34)}" if mark else ""}><span class="v">{escape(fmt(c, v))}'
                        f"</span>{note}</td>")
        if has_paper:
            p = paper.get(r.get("dataset"), {}).get(r.get("model"))
            body.append(f'<td class="paper" data-protocol="">{f"{p[0]:.2f} / {p[1]:.4f}" if p else "–"}</td>')
            for c in deltas:
                v = num(r.get(c))
                d = f"{v - p[0]:+.2f}" if p and v is not None and math.isfinite(v) else "–"
                body.append(f'<td class="delta" data-protocol="{escape(protocol_of(c))}">{d}</td>')
        body.append("</tr>")
    notes = "".join(f"<li>{escape(rows[i].get('model', ''))} on {escape(rows[i].get('dataset', ''))}: "
                    f"{escape(reasons[i])}</li>" for i in display_order(rows) if i in reasons)
    foot = f'<ul class="notes">{notes}</ul>' if notes else ""
    return (f'<table class="results" data-source="{escape(name)}"><thead>{"".join(head)}</thead>'
            f'<tbody>{"".join(body)}</tbody></table>{foot}')


def protocols(tables: list[tuple[list[str], list[dict]]]) -> list[str]:
    """Every protocol named by a column suffix or a ``protocol`` column, in first-seen order."""
    seen: dict[str, None] = {}
    for cols, rows in tables:
        for c in cols:
            if protocol_of(c):
                seen[protocol_of(c)] = None
        for r in rows:
            if r.get("protocol"):
                seen[r["protocol"]] = None
    return list(seen)
