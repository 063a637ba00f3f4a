"""DVC stage ``site``: ``reports/index.html``, a static page a reader opens from disk.

No server and no network: CSS and JS are inline, images are PNGs under ``reports/site/`` linked by
relative path. The page holds every ``reports/table*.csv`` (with the paper's values, deltas, best
and second best, a scoring-protocol switch), the figures of ``benchmark.reporting.figures``, a before/after
slider per method on the ``report.images`` test images, the runs (MLflow run ids, run folders) and
provenance (git commit, profile, dataset fingerprints, date). It also writes the long-format CSVs
that ``dvc plots`` draws (``reports/site/plots/``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import sys
from html import escape
from pathlib import Path

import yaml
from PIL import Image

from benchmark.core import config, io, tracking
from benchmark.data import loading as data
from benchmark.reporting import figures, html_tables
from benchmark.data.layouts import natural_key
from benchmark.core.runs import find_run, run_files

PAGE = Path(__file__).with_name("site_page.html")  # CSS + JS template (inline in the output)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "x"


def fingerprint(root: Path) -> str:
    """sha256 (16 hex) of the test split's manifest, else of its files' names and bytes."""
    split = root / "test" if (root / "test").is_dir() else root
    man = split / "manifest.json"
    h = hashlib.sha256()
    if man.is_file():
        h.update(man.read_bytes())
    else:
        for f in sorted((p for p in split.rglob("*") if p.is_file()), key=lambda p: natural_key(str(p))):
            h.update(str(f.relative_to(split)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def steps_trained(runs_dir: Path, key: str) -> int | None:
    f = find_run(runs_dir, "train", key) / "train_log.csv"
    if not f.is_file():
        return None
    rows = html_tables.read_csv(f)[1]
    return int(float(rows[-1]["step"])) if rows else None


def below_reason(runs_dir: Path, row: dict, psnr: str, base: str) -> str:
    key = f"{row.get('model')}-{row.get('trained_on') or row.get('dataset')}"
    steps, prof = steps_trained(runs_dir, key), row.get("profile") or "?"
    head = f"{psnr} {float(row[psnr]):.2f} dB is below the rainy input's {float(base):.2f} dB"
    if prof != "paper":
        return (f"{head}: trained {steps if steps is not None else '?'} steps in the '{prof}' profile, a smoke-test "
                "budget (the paper trains 500 epochs); the network has not yet learnt to pass the background "
                "through, so its output is further from the clean image than its input.")
    return f"{head} after the paper's schedule: inspect runs/train/{key}/train_log.csv (diverged or unstable loss?)."


def tables_html(reports: Path, runs_dir: Path, paper: dict) -> tuple[str, list[str], list[str]]:
    files = sorted(reports.glob("table*.csv"), key=lambda p: natural_key(p.name))
    parts, parsed, profiles = [], [], set()
    for f in files:
        cols, rows = html_tables.read_csv(f)
        parsed.append((cols, rows))
        profiles |= {r["profile"] for r in rows if r.get("profile")}
        col = html_tables.main_psnr(cols)
        base = {tuple(r.get(c, "") for c in html_tables.ID_COLS): r.get(col) for r in rows if r.get("model") == "input"}
        reasons = {i: below_reason(runs_dir, rows[i], col, base[tuple(rows[i].get(c, "") for c in html_tables.ID_COLS)])
                   for i in html_tables.below_input(cols, rows)}
        md = f.with_suffix(".md")
        title = next((ln.lstrip("# ").strip() for ln in md.read_text().splitlines() if ln.startswith("#")),
                     f.stem) if md.is_file() else f.stem
        links = " · ".join(f'<a href="{escape(p.name)}">{escape(p.name)}</a>' for p in
                           (f, md, f.with_suffix(".tex")) if p.is_file())
        parts.append(f'<h3>{escape(title)}</h3><p class="files">{links}</p>'
                     + html_tables.render(f.name, cols, rows, paper.get("table1", {}) if f.stem == "table1" else {},
                                          reasons))
    if not files:
        parts.append(f"<p>No {escape(str(reports))}/table*.csv: run the report stage.</p>")
    return "".join(parts), html_tables.protocols(parsed), sorted(profiles)


def figure_block(rel: str, caption: str) -> str:
    return (f'<figure><img src="{escape(rel)}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def build(runs_dir: Path, data_root: Path, reports: Path, params: dict, paper: dict) -> dict:
    rcfg = config.report_cfg(params)
    site = reports / "site"
    runs = figures.load_runs(runs_dir)
    figs, viewers, missing = [], [], []
    entries = [(s, i) for s, ids in rcfg.images.items() for i in ids]
    for s, image in entries:
        keys = [r.key for r in figures.runs_for_set(runs, s)]
        if not keys:
            missing.append(f"{s}/{image}: set not evaluated in this profile")
            continue
        paired = config.has_ground_truth(params, s)
        img, cols = figures.comparison_grid(runs_dir, data_root, s, image, keys, rcfg.crops.get(f"{s}/{image}"),
                                            rcfg.tile, rcfg.protocol, paired)
        name = f"compare_{slug(s)}_{slug(image)}"
        figures.save_image(img, site / f"{name}.png")
        figs.append(figure_block(f"site/{name}.png", f"{s} / {image}: rainy input, every method"
                                 + (", ground truth" if paired else "") + "; zoomed crop below each image"))
        srcs = []
        for j, (label, px) in enumerate(cols):
            rel = f"site/img/{name}/{j}.png"
            figures.save_image(px, reports / rel)
            srcs.append((label, rel))
        viewers.append((f"{s} / {image}", srcs))
    if rcfg.ablation_runs:
        s, image = rcfg.ablation_image.split("/", 1)
        paired = config.has_ground_truth(params, s)
        img, _ = figures.comparison_grid(runs_dir, data_root, s, image, list(rcfg.ablation_runs),
                                         rcfg.crops.get(rcfg.ablation_image), rcfg.tile, rcfg.protocol, paired,
                                         title=f"ablation variants on {s} / {image}")
        figures.save_image(img, site / "ablation.png")
        figs.append(figure_block("site/ablation.png", f"Ablation variants (Figs. 8/9) on {s} / {image}"))
    fig7 = reports / "figures" / "fig7_subnetworks.png"  # drawn by the report stage from the ablation runs
    if fig7.is_file():
        with Image.open(fig7) as im:
            figures.save_image(im.copy(), site / "fig7_subnetworks.png")
        figs.append(figure_block("site/fig7_subnetworks.png", "Fig. 7: PSNR and parameters vs number of sub-networks N"))
    curves = figures.training_panels(runs_dir, site / "training_curves.png")
    figs.append(figure_block("site/training_curves.png", f"Training loss and validation PSNR-Y, {len(curves)} runs"))
    sets = figures.psnr_vs_params(runs, site / "psnr_vs_params.png", rcfg.protocol)
    figs.append(figure_block("site/psnr_vs_params.png", f"PSNR vs parameter count ({', '.join(sets) or 'no set'})"))
    write_plot_data(runs_dir, runs, site / "plots")
    tables, protos, profiles = tables_html(reports, runs_dir, paper)
    page = render_page(params, runs, runs_dir, data_root, reports, tables, protos, profiles, figs, viewers, missing)
    io.write_text(reports / "index.html", page)
    return {"figures": len(figs), "viewers": len(viewers), "missing": missing, "protocols": protos}


def write_plot_data(runs_dir: Path, runs: list[figures.Run], out: Path) -> None:
    """Long-format CSVs for `dvc plots` (one line per run via the `run` column)."""
    rows = []
    for f in run_files(runs_dir, "train", "train_log.csv"):
        for r in html_tables.read_csv(f)[1]:
            rows.append({"run": f.parent.name, "step": r.get("step"), "loss": r.get("loss"),
                         "val_psnr_y": r.get("val_psnr_y", "")})
    io.write_csv(out / "training.csv", rows, ["run", "step", "loss", "val_psnr_y"])
    img = []
    for r in runs:
        f = find_run(runs_dir, "eval", r.key) / "per_image.csv"
        if f.is_file():
            img += [{"run": r.key, "eval_set": x.get("eval_set", ""), "image": x.get("name", ""),
                     "psnr_y": x.get("psnr_y", ""), "ssim_y": x.get("ssim_y", "")}
                    for x in html_tables.read_csv(f)[1] if x.get("psnr_y")]
    io.write_csv(out / "per_image.csv", img, ["run", "eval_set", "image", "psnr_y", "ssim_y"])


def render_page(params, runs, runs_dir, data_root, reports, tables, protos, profiles, figs, viewers, missing) -> str:
    rel = lambda p: os.path.relpath(p, reports).replace(os.sep, "/")  # noqa: E731
    headline = config.report_cfg(params).protocol  # shown first: the protocol of the tables' main cells
    switch = "".join(f'<option value="{escape(p)}"{" selected" if p == headline else ""}>{escape(p)}</option>'
                     for p in protos)
    switch = (f'<label>Scoring protocol <select id="protocol">{switch}</select></label>' if protos else
              '<p class="muted">One scoring protocol in these tables (no protocol-named columns).</p>')
    run_rows = []
    for r in runs:
        m = r.metrics
        ev, tr = find_run(runs_dir, "eval", r.key), find_run(runs_dir, "train", r.key)
        links = " ".join(f'<a href="{escape(rel(p))}">{escape(t)}</a>' for t, p in (
            ("metrics.json", ev / "metrics.json"), ("eval folder", ev), ("train folder", tr)) if p.exists())
        run_rows.append("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in (
            r.key, r.model, r.dataset, ", ".join(m.get("results", {})), f"{m.get('params_total', 0):,}",
            m.get("mlflow_run_id") or "not tracked", m.get("train_run_id") or "–", m.get("git_commit", "–")))
            + f"<td>{links}</td></tr>")
    datasets = sorted({r.dataset for r in runs} | {s for r in runs for s in r.metrics.get("results", {})})
    fps = "".join(f"<tr><td>{escape(d)}</td><td><code>{escape(fingerprint(data_root / d))}</code></td></tr>"
                  for d in datasets if (data_root / d).is_dir())
    view = []
    for title, srcs in viewers:
        # default "after": the last method column (MSGNN in the paper's order), not the ground truth
        k = max(i for i, (lbl, _) in enumerate(srcs) if lbl != figures.TARGET)
        opts = "".join(f'<option value="{escape(s)}"{" selected" if i == k else ""}>{escape(lbl)}</option>'
                       for i, (lbl, s) in enumerate(srcs) if i > 0)
        view.append(f'<div class="ba"><h3>{escape(title)}</h3><p><label>after: <select>{opts}</select></label> '
                    f'<input type="range" min="0" max="100" value="50" aria-label="split"></p>'
                    f'<div class="ba-box"><img class="ba-before" src="{escape(srcs[0][1])}" alt="{escape(srcs[0][0])}">'
                    f'<img class="ba-after" src="{escape(srcs[k][1])}" alt="after"></div>'
                    f'<p class="muted">left: {escape(srcs[0][0])} · right: the method chosen above</p></div>')
    miss = "".join(f"<li>{escape(m)}</li>" for m in missing)
    prof = params.get("profile", "?")
    prov = (f"<tr><td>git commit</td><td><code>{escape(tracking.git_commit())}</code></td></tr>"
            f"<tr><td>profile (params.yaml)</td><td>{escape(str(prof))}</td></tr>"
            f"<tr><td>profile(s) of the results</td><td>{escape(', '.join(profiles) or '–')}</td></tr>"
            f"<tr><td>generated (UTC)</td><td>{escape(dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M'))}"
            f"</td></tr>{fps}")
    note = ("" if profiles == ["paper"] else
            f"<p class=\"warn\">Results of the '{escape(', '.join(profiles) or str(prof))}' profile: "
            "a smoke test of the "
            "pipeline, not a reproduction of the paper's numbers.</p>")
    body = (f'<h1>msgnn-bench report</h1>{note}<nav><a href="#tables">Tables</a> <a href="#figures">Figures</a> '
            f'<a href="#compare">Before / after</a> <a href="#runs">Runs</a> <a href="#provenance">Provenance</a></nav>'
            f'<section id="tables"><h2>Tables</h2>{switch}<p class="muted">Bold: best, underlined: second best '
            f"(rainy input excluded); Δ = ours − paper.</p>{tables}</section>"
            f'<section id="figures"><h2>Figures</h2>{"".join(figs)}'
            f'{f"<p>Not shown:</p><ul>{miss}</ul>" if miss else ""}</section>'
            f'<section id="compare"><h2>Before / after</h2>{"".join(view) or "<p>No images chosen.</p>"}</section>'
            f'<section id="runs"><h2>Runs</h2><p class="muted">Browse with <code>mlflow ui --backend-store-uri '
            f'sqlite:///mlflow.db</code>.</p><table><thead><tr><th>run</th><th>model</th><th>trained on</th>'
            f"<th>evaluated on</th><th>parameters</th><th>MLflow evaluate run</th><th>MLflow train run</th>"
            f'<th>git commit</th><th>files</th></tr></thead><tbody>{"".join(run_rows)}</tbody></table></section>'
            f'<section id="provenance"><h2>Provenance</h2><table><tbody>{prov}</tbody></table>'
            f'<p class="muted">Dataset fingerprints: sha256 of the test split\'s manifest (or files), 16 hex digits.'
            f"</p></section>")
    return PAGE.read_text().replace("<!--BODY-->", body)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--data", default="data")
    ap.add_argument("--reports", default="reports")
    ap.add_argument("--params", default=config.PARAMS_FILE)
    ap.add_argument("--reference", default="reports/paper_reference.yaml")
    args = ap.parse_args(argv)
    try:
        params = config.load_params(args.params)
        paper = yaml.safe_load(Path(args.reference).read_text()) if Path(args.reference).is_file() else {}
        res = build(Path(args.runs), Path(args.data), Path(args.reports), params, paper)
    except (config.ConfigError, figures.FigureError, data.DataError, KeyError, ValueError, OSError,
            json.JSONDecodeError) as exc:
        print(f"site: error: {exc}", file=sys.stderr)
        return 1
    print(f"site: {args.reports}/index.html ({res['figures']} figures, {res['viewers']} before/after views"
          + (f"; not shown: {'; '.join(res['missing'])}" if res["missing"] else "") + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
