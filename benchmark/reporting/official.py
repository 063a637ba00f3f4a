"""``reports/official.{md,csv,tex}``: every official checkpoint beside its authors' published numbers.

One row per (checkpoint, test set it was published on) of ``benchmark/weights/checkpoints.yaml``:
published PSNR/SSIM with its protocol, ours under that same protocol (from
``runs/official/<checkpoint>--<set>/metrics.json``), Δ = ours − published, and ours under the
``msgnn`` protocol (the MSGNN paper's) — the gap a change of protocol alone makes. Rows the active
profile does not run say so (and why where the weights or data cannot be obtained automatically).
"""
from __future__ import annotations

import json
from pathlib import Path

from benchmark.core import io
from benchmark.weights import registry

PAPER_PROTOCOL = "msgnn"
COLUMNS = ["checkpoint", "model", "test_set", "published_psnr", "published_ssim", "published_protocol",
           "ours_psnr", "ours_ssim", "delta_psnr", "delta_ssim", "msgnn_psnr", "msgnn_ssim", "n_images",
           "subset", "status", "published_source"]


def rows(runs_dir: Path, active: set[str], specs: dict | None = None) -> list[dict]:
    specs = specs if specs is not None else registry.load_registry()
    out = []
    for name, spec in specs.items():
        for pub in spec.published:
            key = f"{name}--{pub.test_set}"
            r = {"checkpoint": name, "model": spec.model, "test_set": pub.test_set, "published_psnr": pub.psnr,
                 "published_ssim": pub.ssim, "published_protocol": pub.protocol, "published_source": pub.source}
            f = Path(runs_dir) / key / "metrics.json"
            if f.is_file():
                m = json.loads(f.read_text())
                ours, paper = m["protocols"][pub.protocol], m["protocols"][PAPER_PROTOCOL]
                r.update(ours_psnr=ours["psnr"], ours_ssim=ours["ssim"], delta_psnr=ours["psnr"] - pub.psnr,
                         delta_ssim=ours["ssim"] - pub.ssim, msgnn_psnr=paper["psnr"], msgnn_ssim=paper["ssim"],
                         n_images=m["n_images"], subset=bool(m.get("limit")),
                         status="measured" + ("" if key in active else " (earlier run; not in this profile)"))
            else:
                why = ("weights need a manual step" if spec.source == "manual" else
                       "no loader for the file as distributed" if not spec.loadable else
                       f"test set {pub.test_set!r} not registered in datasets.yaml"
                       if pub.test_set not in registry.dataset_keys() else
                       "in this profile, not run yet" if key in active else "not in this profile's official_runs")
                r["status"] = why
            out.append({c: r.get(c) for c in COLUMNS})
    return out


def _f(v, digits: int) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _d(v, digits: int) -> str:
    return "–" if v is None else f"{v:+.{digits}f}"


def markdown(table: list[dict], profile: str) -> str:
    lines = ["# Official checkpoints: published vs ours", "",
             f"Profile `{profile}`. Published = the authors' own number for their released file, under the "
             "protocol named (the closest of ours to their scoring code; `benchmark/weights/checkpoints.yaml` "
             "gives each source). Ours = that file through our network and our metric code, under the same "
             "protocol; Δ = ours − published. Last column: the same outputs under the `msgnn` protocol "
             "(the MSGNN paper's: RGB, unquantised) — the gap a protocol change alone makes. "
             "* = a subset of the test set (n images), not comparable to the published mean.", "",
             "| checkpoint | test set | published (protocol) | ours (same protocol) | Δ PSNR / SSIM | ours (`msgnn`) | n | status |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table:
        star = "*" if r["subset"] else ""
        lines.append(
            f"| {r['checkpoint']} | {r['test_set']} | {r['published_psnr']:.2f} / {r['published_ssim']:.4g} "
            f"(`{r['published_protocol']}`) | {_f(r['ours_psnr'], 3)} / {_f(r['ours_ssim'], 4)}{star} | "
            f"{_d(r['delta_psnr'], 3)} / {_d(r['delta_ssim'], 4)} | {_f(r['msgnn_psnr'], 3)} / {_f(r['msgnn_ssim'], 4)} | "
            f"{r['n_images'] or '–'} | {r['status']} |")
    sources = sorted({r["published_source"] for r in table})
    lines += ["", "Sources of the published numbers:", "", *[f"- {s}" for s in sources], ""]
    return "\n".join(lines)


def latex(table: list[dict]) -> str:
    esc = lambda s: str(s).replace("_", r"\_").replace("%", r"\%")  # noqa: E731
    lines = [r"\begin{tabular}{llllll}", r"\toprule",
             r"checkpoint & test set & published (protocol) & ours & $\Delta$ & ours (msgnn) \\", r"\midrule"]
    for r in table:
        lines.append(f"{esc(r['checkpoint'])} & {esc(r['test_set'])} & {r['published_psnr']:.2f}/{r['published_ssim']:.4g} "
                     f"({esc(r['published_protocol'])}) & {_f(r['ours_psnr'], 2)}/{_f(r['ours_ssim'], 4)} & "
                     f"{_d(r['delta_psnr'], 2)}/{_d(r['delta_ssim'], 4)} & {_f(r['msgnn_psnr'], 2)}/{_f(r['msgnn_ssim'], 4)} \\\\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def write(out_dir: Path, table: list[dict], profile: str) -> None:
    out_dir = Path(out_dir)
    io.write_text(out_dir / "official.md", markdown(table, profile))
    io.write_text(out_dir / "official.tex", latex(table))
    io.write_csv(out_dir / "official.csv", table, COLUMNS)
