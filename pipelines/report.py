"""DVC stage ``report``: Tables 1–5, Fig. 7 and the training curves from the run folders.

Reads every ``runs/eval/*/metrics.json`` (the only source of numbers; ``per_image.csv`` for the
paired tests) and ``runs/train/*/train_log.csv``, puts the paper's printed values from
``reports/paper_reference.yaml`` beside ours (in the scoring protocol ``report.protocol``, by default the
paper's), and
writes ``reports/table{1..5}.{md,csv,tex}``, ``reports/fig7.csv``,
``reports/figures/fig7_subnetworks.png`` and ``reports/figures/training_curves.png``.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd
import yaml

from benchmark.core import config, io
from benchmark.core.registry import display_name, paper_rank
from benchmark.evaluation import protocols
from benchmark.reporting import figures, metric_status, provenance, tables
from benchmark.core.runs import RUNS, RunFolderError, eval_metrics

# Table 1's "2.46M" is the released code's exemplar-off count; the method as described has the exemplar
MSGNN_PARAMS_NOTE = ("2,061,579 (exemplar on: the method as described) · the paper's 2.46M = 2,459,689 "
                     "(exemplar off, released code)")


def _proto_note(proto: str) -> str:
    p = protocols.get(proto)
    which = "the paper's protocol" if proto == protocols.PAPER else "protocol"
    return (f"Main cells: {which} `{proto}` (report.protocol; {p.source}). Ours on top; [paper; Δ = ours − paper] "
            "below. Every other protocol is a column of the CSV.")


def _models(df: pd.DataFrame) -> list[str]:
    return sorted(set(df["model"]), key=lambda m: (paper_rank(m), m))


def profiles(df: pd.DataFrame, fallback: str = "") -> list[str]:
    """The profiles of a table's rows; an empty table is of the profile in params.yaml (``fallback``)."""
    return list(df["profile"]) if len(df) else [fallback]


def markdown1(df: pd.DataFrame, proto: str = protocols.PAPER, missing: list[str] = (),
              lpips: list[str] = (), ref: dict | None = None) -> str:
    models = _models(df)
    cell = {(r["dataset"], r["model"]): r for r in df.to_dict("records")}
    lines = ["# Table 1 (regenerated): PSNR / SSIM", "", f"> {tables.profile_banner(df['profile'])}", "",
             _proto_note(proto), "", *(f"{line}  " for line in lpips), *([""] if lpips else []),
             "| Dataset | " + " | ".join(display_name(m) for m in models) + " |", "|" + "---|" * (len(models) + 1)]
    for d in dict.fromkeys(df["dataset"]):
        lines.append(f"| {d} | " + " | ".join(tables.fmt_cell(cell[(d, m)]) if (d, m) in cell else tables.NOT_RUN
                                               for m in models) + " |")
    params = {r["model"]: r["params"] for r in df.to_dict("records")}
    lines.append("| Parameters | " + " | ".join(
        # no network, no count: the rainy input and published outputs re-scored (params_total 0)
        "–" if m == "input" or not params[m] else (MSGNN_PARAMS_NOTE if m == "msgnn" else f"{params[m]:,}")
        for m in models) + " |")
    if missing:
        lines.append(f"| {', '.join(missing)} | " + " | ".join(tables.NOT_RUN for _ in models) + " |")
    lines += tables.stats_lines(df)  # n, dropped, raw/Holm p or "n too small", CI; the ± legend
    ours = {(r["dataset"], r["model"]): (r["psnr"], r["ssim"]) for r in df.to_dict("records")}
    lines += provenance.markdown(ref or {}, provenance.rows(ref or {}, ours, lambda m: (paper_rank(m), m)), proto,
                                 display_name)
    return "\n".join(lines) + "\n"


def markdown_ablation(table: str, df: pd.DataFrame, ref: dict, proto: str = protocols.PAPER, profile: str = "") -> str:
    lines = [f"# {tables.ABLATION_TABLES[table]} (regenerated)", "",
             f"> {tables.profile_banner(profiles(df, profile))}", "",
             _proto_note(proto), "",
             "| cell | variant | switches | train patch (paper) | parameters | PSNR / SSIM | note |", "|---|---|---|---|---|---|---|"]
    for r in df.to_dict("records"):
        lines.append(f"| {r['cell']} | {r['variant']} | {r['switches']} | {r['train_patch']} | {r['params']:,} | "
                     f"{tables.fmt_cell(r)} | {r['note'] if tables.has(r['note']) else ''} |")
    for cell, p in not_run(table, df, ref):
        printed = f"paper {p[0]:.3f} / {p[1]:.4f}" if p else "the paper prints no value"
        lines.append(f"| {cell} | – | – | – | – | {tables.NOT_RUN} | {printed} |")
    return "\n".join(lines) + "\n"


def not_run(table: str, df: pd.DataFrame, ref: dict) -> list[tuple[str, list | None]]:
    """The paper's cells of ``table`` that no run of this profile fills, with the paper's value."""
    done = set(df["cell"]) if len(df) else set()
    return [(c, v) for c, v in ((ref.get(table) or {}).get("values") or {}).items() if c not in done]


def with_banner(df: pd.DataFrame, banner: str) -> pd.DataFrame:
    """The CSV's rows with the profile banner as the last column (every row: a CSV has no caption)."""
    return df.assign(profile_note=banner)


def tex(df: pd.DataFrame, banner: str, missing: list[str], sources: str = "") -> str:
    """The LaTeX tabular of the main columns; empty cells say why; the banner as a comment and a note."""
    cols = [c for c in ("model", "dataset", "cell", "variant", "n_seeds", "psnr", "psnr_std", "ssim", "ssim_std",
                        "paper_psnr", "paper_ssim", "delta_psnr", "delta_ssim", "own_psnr", "own_ssim", "own_protocol",
                        "indep_psnr", "indep_ssim", "indep_protocol", "params") if c in df.columns]
    d = df[cols].astype(object)
    for c in cols:
        why = ("n=1" if c.endswith("_std") else "not printed" if c.startswith(("paper_", "delta_"))
               else "not recorded" if c.startswith(("own_", "indep_")) else tables.NOT_RUN)
        d[c] = [why if not tables.has(v) else (f"{v:.4f}" if isinstance(v, float) else v) for v in d[c]]
    body = d.to_latex(index=False, escape=True)
    note = banner + (f" Not run in this profile: {', '.join(missing)}." if missing else "")
    note += f" Sources of own_* / indep_*: {sources}." if sources else ""
    return f"% {note}\n{body}\\par\\noindent\\emph{{{_tex_escape(note)}}}\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def _tex_escape(text: str) -> str:
    return re.sub(r"[\\&%$#_{}~^]", lambda m: _TEX[m.group()], text)


def write_table(out: Path, stem: str, df: pd.DataFrame, md: str, missing: list[str] = (), profile: str = "",
                sources: str = "") -> None:
    banner = tables.profile_banner(profiles(df, profile))
    io.write_text(out / f"{stem}.csv", with_banner(df, banner).to_csv(index=False))
    io.write_text(out / f"{stem}.md", md)
    io.write_text(out / f"{stem}.tex", tex(df, banner, list(missing), sources))


def fig7(df: pd.DataFrame, ref: dict, path: Path, proto: str = protocols.PAPER) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = df.assign(n=[int(c[1:]) for c in df["cell"]]).sort_values("n")
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(d["n"], d["psnr"], yerr=d["psnr_std"].fillna(0), marker="o", color="tab:blue", label="PSNR (ours)")
    paper = (ref.get("fig7") or {}).get("values") or {}
    inferred = (ref.get("fig7") or {}).get("inferred") or {}
    for cell, (p, _s) in paper.items():
        how = f"inferred: {inferred[cell].split(';')[0]}" if cell in inferred else "paper"
        ax.plot([int(cell[1:])], [p], "s", color="tab:blue", mfc="none", label=f"PSNR paper ({cell}, {how})")
    ax.set_xlabel("number of sub-networks N")
    ax.set_ylabel(f"PSNR (dB, {proto} protocol)")
    ax2 = ax.twinx()
    ax2.plot(d["n"], d["params"] / 1e6, "^--", color="tab:red", label="parameters, trained sweep (exemplar on, 1x1)")
    # the paper's count is of another family (exemplar off, 5x5 fusion): drawn on that family's own
    # exact curve, never against the sweep's counts
    fref = ref.get("fig7") or {}
    family = {int(c[1:]): n for c, n in (fref.get("family_params") or {}).items()}
    if family:
        ns = sorted(family)
        ax2.plot(ns, [family[n] / 1e6 for n in ns], "v:", color="tab:purple",
                 label=f"parameters, {fref.get('params_family', 'paper family')}")
    for cell, pm in (fref.get("params_m") or {}).items():
        ax2.plot([int(cell[1:])], [pm], "x", color="tab:purple", ms=9, label=f"paper: {pm}M at {cell} (that family)")
    ax2.set_ylabel("parameters (M)")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=7, loc="best")
    ax.set_title("Fig. 7: PSNR and parameters vs N")
    _save(fig, path)


def _save(fig, path: Path) -> None:
    """Lay out, write atomically and close."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    figures.save_figure(fig, path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", default=str(RUNS))
    ap.add_argument("--out", default="reports")
    ap.add_argument("--reference", default="reports/paper_reference.yaml")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    runs_dir, out = Path(args.runs), Path(args.out)
    try:
        rows = tables.collect(runs_dir)
    except RunFolderError as exc:
        print(f"report: error: {exc}", file=sys.stderr)
        return 1
    if not any(not r["variant"] for r in rows):
        print(f"report: no {runs_dir}/eval/*/metrics.json of a main run; run the evaluate stages first",
              file=sys.stderr)
        return 1
    ref = yaml.safe_load(Path(args.reference).read_text())
    try:
        provenance.validate(ref)
    except provenance.ProvenanceError as exc:
        print(f"report: error: {args.reference}: {exc}", file=sys.stderr)
        return 1
    params = Path(args.params)
    raw = (yaml.safe_load(params.read_text()) or {}) if params.is_file() else {}
    variants = raw.get("ablations") or {}
    profile = str(raw.get("profile") or "")
    try:
        proto = protocols.get(config.report_cfg(raw, params).protocol).name
    except (config.ConfigError, ValueError) as exc:
        print(f"report: error: {exc}", file=sys.stderr)
        return 1
    t1 = tables.table1(rows, ref, runs_dir, proto)
    missing = [d for d in (ref.get("table1") or {}) if d not in set(t1["dataset"])]  # the paper's sets not run
    lpips = metric_status.lpips_lines({m.get("key", f.parent.name): m.get("lpips_status")
                                      for f, m in eval_metrics(runs_dir) if not m.get("variant")})
    md = markdown1(t1, proto, missing, lpips, ref)
    sources = "; ".join(f"{k}: {v}" for k, v in provenance.notes(ref)["sources"].items())
    write_table(out, "table1", t1, md, missing, sources=sources)
    for table in tables.ABLATION_TABLES:
        df = tables.ablation_table(table, rows, ref, variants, proto)
        if table == "fig7":
            banner = tables.profile_banner(profiles(df, profile))
            io.write_text(out / "fig7.csv", with_banner(df, banner).to_csv(index=False))
            fig7(df, ref, out / "figures" / "fig7_subnetworks.png", proto)
        else:
            write_table(out, table, df, markdown_ablation(table, df, ref, proto, profile),
                        [c for c, _ in not_run(table, df, ref)], profile)
    figures.training_panels(runs_dir, out / "figures" / "training_curves.png")  # the page shows the same panels
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
