"""Where every number of Table 1 comes from: ``provenance`` in ``reports/paper_reference.yaml``.

Per (dataset, method) cell the report and the page put four numbers side by side, each with its
protocol: the MSGNN paper's (its Table 1), the method's own paper's (where its authors published one on
that set), an independent retraining's (a third-party model zoo) and ours. Below the table: the sources
(pinned to commits where they are repositories), what a reader finds when comparing them, and what could
not be checked. The YAML holds the facts; this module only validates and lays them out (no HTML).
"""
from __future__ import annotations

import math

# Empty columns say what they mean: an own-paper number not recorded here was not checked (the note's
# "Not verified" lists what was tried), not shown to be absent; derain-toolbox covers five of the methods.
NONE_OWN = "not recorded (see Not verified)"
NONE_INDEP = "none recorded"
CSV_COLUMNS = ["paper_protocol", "own_psnr", "own_ssim", "own_protocol", "own_source", "own_verified",
               "indep_psnr", "indep_ssim", "indep_protocol", "indep_source", "indep_variant"]


class ProvenanceError(ValueError):
    """The provenance block of the reference file is malformed (the message names the entry)."""


def _block(ref: dict) -> dict:
    return ref.get("provenance") or {}


def _check_entry(ref: dict, where: str, e: dict) -> dict:
    """One value entry: [PSNR, SSIM] numbers and a source that ``sources`` defines."""
    sources = _block(ref).get("sources") or {}
    v = e.get("value") if isinstance(e, dict) else None
    if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v)):
        raise ProvenanceError(f"provenance.cells.{where}: value must be [PSNR, SSIM], got {v!r}")
    if e.get("source") not in sources:
        raise ProvenanceError(f"provenance.cells.{where}: source {e.get('source')!r} is not a key of "
                              f"provenance.sources ({', '.join(sources) or 'none'})")
    return e


def cell(ref: dict, dataset: str, model: str) -> dict:
    """{msgnn: [p, s] | None, own: entry | None, indep: [entries], also: [entries]} of one cell."""
    c = ((_block(ref).get("cells") or {}).get(dataset) or {}).get(model) or {}
    where = f"{dataset}.{model}"
    own = c.get("own_paper")
    listed = {k: [_check_entry(ref, f"{where}.{key}[{i}]", e) for i, e in enumerate(c.get(key) or [])]
              for k, key in (("indep", "independent"), ("also", "also_printed"))}
    return {"msgnn": ((ref.get("table1") or {}).get(dataset) or {}).get(model),
            "own": _check_entry(ref, f"{where}.own_paper", own) if own else None, **listed}


def validate(ref: dict) -> None:
    """Every entry of every cell is well formed (raises ProvenanceError naming the first bad one)."""
    for d, models in (_block(ref).get("cells") or {}).items():
        for m in models or {}:
            cell(ref, d, m)


def protocol_of(ref: dict, source: str) -> str:
    """The suite protocol closest to a source's scoring code (``provenance.protocols``)."""
    return str(((_block(ref).get("protocols") or {}).get(source) or {}).get("protocol") or "unknown")


def columns(ref: dict, dataset: str, model: str) -> dict:
    """The provenance columns of one Table 1 CSV row (first independent retraining listed)."""
    c = cell(ref, dataset, model)
    own, ind = c["own"], (c["indep"][0] if c["indep"] else None)
    return {"paper_protocol": protocol_of(ref, "msgnn_table1"),
            "own_psnr": own["value"][0] if own else None, "own_ssim": own["value"][1] if own else None,
            "own_protocol": protocol_of(ref, own["source"]) if own else None,
            "own_source": own["source"] if own else None, "own_verified": bool(own.get("verified")) if own else None,
            "indep_psnr": ind["value"][0] if ind else None, "indep_ssim": ind["value"][1] if ind else None,
            "indep_protocol": protocol_of(ref, ind["source"]) if ind else None,
            "indep_source": ind["source"] if ind else None, "indep_variant": ind.get("variant") if ind else None}


def printed(psnr: float, ssim: float) -> str:
    """A published pair with the digits its source prints (YAML drops trailing zeros: 0.900 -> 0.9): PSNR
    with 2 decimals unless it has 3, SSIM with 3 unless it has 4."""
    return f"{psnr:.{2 if psnr == round(psnr, 2) else 3}f} / {ssim:.{3 if ssim == round(ssim, 3) else 4}f}"


def fmt_entry(ref: dict, e: dict | None, none: str, tick: str = "`") -> str:
    """'PSNR / SSIM (`protocol`; source)', '; not verified' where the value was only quoted; ``tick``
    quotes the protocol name (Markdown code; the page passes "")."""
    if not e:
        return none
    tail = "" if e.get("verified") else "; not verified"
    return f"{printed(*e['value'])} ({tick}{protocol_of(ref, e['source'])}{tick}; {e['source']}{tail})"


OWN_IS_MSGNN = "= MSGNN paper"  # MSGNN's own paper is the MSGNN paper


def rows(ref: dict, ours: dict[tuple[str, str], tuple[float | None, float | None]], order=None,
         tick: str = "`") -> list[dict]:
    """One row per (dataset, method) of the paper's Table 1, methods sorted by ``order`` (a key function;
    the paper's column order by default): the columns as text. ``ours`` = {(dataset, model): (psnr, ssim)}
    in the report's protocol; a cell not run says so."""
    out = []
    for d, in_paper in (ref.get("table1") or {}).items():
        for m in sorted(in_paper, key=order) if order else in_paper:
            c = cell(ref, d, m)
            p, s = ours.get((d, m), (None, None))
            # numbers printed elsewhere are shown as MSGNN prints its own: 3 / 4 decimals
            also = "; ".join(f"{e['value'][0]:.3f} / {e['value'][1]:.4f} as {e.get('as', m)} ({e['source']})"
                             for e in c["also"])
            out.append({"dataset": d, "model": m,
                        "msgnn": f"{c['msgnn'][0]:.3f} / {c['msgnn'][1]:.4f}" if c["msgnn"] else "–",
                        "own": OWN_IS_MSGNN if m == "msgnn" else fmt_entry(ref, c["own"], NONE_OWN, tick),
                        "indep": fmt_entry(ref, c["indep"][0] if c["indep"] else None, NONE_INDEP, tick),
                        "ours": "not run in this profile" if p is None or (isinstance(p, float) and math.isnan(p))
                        else f"{p:.2f} / {s:.4f}",
                        "also": also})
    return out


def notes(ref: dict) -> dict:
    """Sources (key: text), protocols (key: text), findings and what was not verified, for the note."""
    b = _block(ref)
    protos = {k: f"`{v.get('protocol')}`; training: {v.get('training_set')}; {v.get('note', '')}".rstrip("; ")
              for k, v in (b.get("protocols") or {}).items()}
    return {"sources": dict(b.get("sources") or {}), "protocols": protos,
            "findings": list(b.get("findings") or []), "not_verified": list(b.get("not_verified") or [])}


def markdown(ref: dict, table_rows: list[dict], proto: str, display=str) -> list[str]:
    """The provenance table and its note, as Markdown lines (appended under Table 1)."""
    if not _block(ref):
        return []
    n = notes(ref)
    lines = ["", "## Provenance of every Table 1 number", "",
             f"MSGNN paper = its Table 1 (`{protocol_of(ref, 'msgnn_table1')}`); own paper = the method's authors' "
             "number on that set; independent retraining = a third-party model zoo's; ours = this run "
             f"(`{proto}`). Each value names its closest suite protocol and its source (below).", "",
             "| method | dataset | MSGNN paper | own paper | independent retraining | ours | also printed as |",
             "|---|---|---|---|---|---|---|"]
    for r in table_rows:
        lines.append(f"| {display(r['model'])} | {r['dataset']} | {r['msgnn']} | {r['own']} | {r['indep']} | "
                     f"{r['ours']} | {r['also'] or '–'} |")
    lines += ["", "Sources:", ""] + [f"- **{k}**: {v}" for k, v in n["sources"].items()]
    lines += ["", "Protocols and training sets:", ""] + [f"- **{k}**: {v}" for k, v in n["protocols"].items()]
    lines += ["", "Findings (each checked against the sources):", ""] + [f"- {f}" for f in n["findings"]]
    lines += ["", "Not verified:", ""] + [f"- {f}" for f in n["not_verified"]]
    return lines
