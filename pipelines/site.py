"""DVC stage ``site``: ``reports/index.html``, a static page a reader opens from disk.

No server and no network: CSS and JS are inline, images are PNGs under ``reports/site/`` linked by
relative path. The page holds every ``reports/table*.csv`` (with the paper's values, deltas, best
and second best, a scoring-protocol switch; under Table 1 the provenance of every number: MSGNN paper,
own paper, independent retraining, ours), the official checkpoints beside their authors' numbers
(``reports/official.csv``, or why none ran), the figures of ``benchmark.reporting.figures``, a before/after
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
from pathlib import Path

import jinja2
import yaml
from PIL import Image

from benchmark.core import config, io, tracking
from benchmark.data import loading as data
from benchmark.reporting import figures, html_tables, metric_status, provenance
from benchmark.data.layouts import natural_key
from benchmark.core.runs import find_run, run_files

PAGE = Path(__file__).with_name("site_page.html")  # the page: Jinja2 template with its CSS and JS inline


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
    rows = io.read_csv(f)[1]
    return int(float(rows[-1]["step"])) if rows else None


BELOW_INPUT = "reports/below_input.yaml"  # measured: what a smoke-test run below the input would need


def load_below_input(path: str | Path = BELOW_INPUT) -> dict:
    """``{profile: {model: {"needs": int | None, "why": str}}}`` from ``path`` ({} when it is absent);
    anything else in it is a ConfigError naming the file and the entry."""
    path = Path(path)
    if not path.is_file():
        return {}
    raw = config.parse_yaml(path.read_text(), path) or {}
    if not isinstance(raw, dict):
        raise config.ConfigError(f"{path}: must map profile -> model -> {{needs, why}}")
    for prof, models in raw.items():
        if not isinstance(models, dict):
            raise config.ConfigError(f"{path}: {prof}: must map model -> {{needs, why}}")
        for model, e in models.items():
            where = f"{path}: {prof}.{model}"
            if not isinstance(e, dict) or set(e) != {"needs", "why"}:
                raise config.ConfigError(f"{where}: must have exactly the keys needs and why")
            # bool is an int to Python, never a step count
            if e["needs"] is not None and (isinstance(e["needs"], bool) or not isinstance(e["needs"], int)
                                           or e["needs"] <= 0):
                raise config.ConfigError(f"{where}.needs: must be a positive number of steps or null, "
                                         f"got {e['needs']!r}")
            if not isinstance(e["why"], str) or not e["why"].strip():
                raise config.ConfigError(f"{where}.why: must be a non-empty sentence")
    return raw


def below_reason(runs_dir: Path, row: dict, psnr: float, base: float, below_input: dict | None = None) -> str:
    """The note under Table 1 for a cell below the rainy input: how long it trained and, where
    ``below_input`` (``load_below_input``) has the measured fact for its profile and model, what it
    would need, or why no step count does."""
    key = f"{row.get('model')}-{row.get('trained_on') or row.get('dataset')}"
    steps, prof = steps_trained(runs_dir, key), row.get("profile") or "?"
    head = f"PSNR {psnr:.2f} dB is below the rainy input's {base:.2f} dB"
    if prof == "paper":
        return (f"{head} after the paper's schedule: inspect runs/train/{key}/train_log.csv (diverged or unstable "
                "loss?).")
    trained = f"trained {steps if steps is not None else '?'} steps in the '{prof}' profile"
    fact = ((below_input or {}).get(prof) or {}).get(row.get("model"))
    source = 'measured, docs/operations.md "Quick-profile budgets"'
    if fact and fact["needs"] is None:
        return f"{head}: {trained}; more steps do not help ({source}): {' '.join(fact['why'].split())}."
    if fact:
        return f"{head}: {trained}; needs ≈ {fact['needs']} steps ({source}): {' '.join(fact['why'].split())}."
    return (f"{head}: {trained}, a smoke-test budget (the paper trains 500 epochs); the network has not yet "
            "learnt to pass the background through, so its output is further from the clean image than its "
            f"input (each quick-profile budget and what it scores, {source}).")


def _title(f: Path) -> str:
    md = f.with_suffix(".md")
    if not md.is_file():
        return f.stem
    return next((ln.lstrip("# ").strip() for ln in md.read_text().splitlines() if ln.startswith("#")), f.stem)


def tables_view(reports: Path, runs_dir: Path, paper: dict,
                below_input: dict | None = None) -> tuple[list[dict], list[str], list[str]]:
    """Each ``reports/table*.csv`` as the page shows it: one view per scoring protocol (Table 1 as
    methods × datasets, Tables 2–5 a row per variant) and the full CSV; the protocols; the profiles."""
    files = sorted(reports.glob("table*.csv"), key=lambda p: natural_key(p.name))
    parsed = [(f, *io.read_csv(f)) for f in files]
    protos = html_tables.protocols([(c, r) for _, c, r in parsed])
    out, profiles = [], set()
    for f, cols, rows in parsed:
        profiles |= {r["profile"] for r in rows if r.get("profile")}
        t = {"name": f.stem, "csv": f.name, "title": _title(f), "raw": html_tables.raw_view(cols, rows),
             "files": [p.name for p in (f, f.with_suffix(".md"), f.with_suffix(".tex")) if p.is_file()],
             "kind": "table1" if f.stem == "table1" else "ablation", "views": [], "notes": {}}
        for proto in protos:
            if t["kind"] == "table1":
                view = html_tables.table1_view(rows, proto, paper.get("table1") or {},
                                               lambda r, v, b: below_reason(runs_dir, r, v, b, below_input))
                t["notes"][proto] = [f"{m['name']} on {col['dataset']}: {c['below']}" for m in view["methods"]
                                     for col, c in zip(view["columns"], m["cells"]) if c["below"]]
            else:
                view = html_tables.ablation_view(rows, proto)
            t["views"].append((proto, view))
        if t["kind"] == "table1":
            t["prov"] = provenance_view(rows, protos, paper)
        out.append(t)
    return out, protos, sorted(profiles)


def provenance_view(rows: list[dict], protos: list[str], paper: dict) -> dict | None:
    """Table 1's provenance (MSGNN paper | own paper | independent retraining | ours) per scoring protocol,
    and its note (sources, protocols, findings, not verified); None where the reference has no provenance."""
    if not paper.get("provenance"):
        return None
    from benchmark.core.registry import display_name, paper_rank

    views = []
    for proto in protos:
        ours = {(r.get("dataset", ""), r.get("model", "")): (html_tables.num(r.get(f"psnr:{proto}")),
                                                             html_tables.num(r.get(f"ssim:{proto}"))) for r in rows}
        views.append((proto, [{**x, "name": display_name(x["model"])}
                              for x in provenance.rows(paper, ours, lambda m: (paper_rank(m), m), tick="")]))
    return {"views": views, "notes": provenance.notes(paper),
            "paper_protocol": provenance.protocol_of(paper, "msgnn_table1")}


def official_section(reports: Path) -> dict:
    """The official-checkpoint rows of ``reports/official.csv`` as the page shows them (or why there are none)."""
    f = reports / "official.csv"
    return html_tables.official_view(io.read_csv(f)[1] if f.is_file() else None)


def compare_caption(s: str, image: str, paired: bool) -> str:
    """A comparison grid's caption; a set without ground truth says that it has no score, and why."""
    return (f"{s} / {image}: rainy input, every method" + (", ground truth" if paired else "")
            + "; zoomed crop below each image" + ("" if paired else f". {metric_status.NO_REFERENCE_NOTE}"))


def figure_block(rel: str, caption: str, fit: bool = False) -> dict:
    """``fit``: a chart, scaled down to the page width (its axis labels stay in view); image grids
    keep their pixels 1:1 and scroll instead."""
    return {"src": rel, "caption": caption, "fit": fit}


def build(runs_dir: Path, data_root: Path, reports: Path, params: dict, paper: dict,
          below_input: dict | None = None) -> dict:
    rcfg = config.report_cfg(params)
    site = reports / "site"
    runs = figures.load_runs(runs_dir)
    figs, viewers, missing = [], [], []
    entries = [(s, i) for s, ids in rcfg.images.items() for i in ids]
    for s, image in entries:
        # published outputs re-scored keep no samples/ folder of their own: not in the image grids
        hits = [r for r in figures.runs_for_set(runs, s) if r.metrics.get("kind") != "published-outputs"]
        keys = [r.key for r in hits]
        if not keys:
            missing.append(f"{s}/{image}: set not evaluated in this profile")
            continue
        # a test-only set (Rain12, real-world) lives where prepare@<training set> put it:
        # data/eval_sets/<training set>/<set> (it read data/<set>: found by the rehearsal)
        root = data_root if hits[0].dataset == s else data_root / "eval_sets" / hits[0].dataset
        paired = config.has_ground_truth(params, s)
        try:
            img, cols = figures.comparison_grid(runs_dir, root, s, image, keys, rcfg.crops.get(f"{s}/{image}"),
                                                rcfg.tile, rcfg.protocol, paired)
        except data.DataError as exc:  # e.g. another profile's committed runs (rain-synth) in a paper
            missing.append(f"{s}/{image}: {exc}")  # workspace without data/rain-synth: say so on the page
            continue
        name = f"compare_{slug(s)}_{slug(image)}"
        figures.save_image(img, site / f"{name}.png")
        figs.append(figure_block(f"site/{name}.png", compare_caption(s, image, paired)))
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
    figs.append(figure_block("site/training_curves.png", f"Training loss and validation PSNR-Y, {len(curves)} runs",
                             fit=True))
    sets = figures.psnr_vs_params(runs, site / "psnr_vs_params.png", rcfg.protocol)
    figs.append(figure_block("site/psnr_vs_params.png", f"PSNR vs parameter count ({', '.join(sets) or 'no set'})",
                             fit=True))
    write_plot_data(runs_dir, runs, site / "plots")
    tables, protos, profiles = tables_view(reports, runs_dir, paper, below_input)
    page = render_page(params, runs, runs_dir, data_root, reports, tables, protos, profiles, figs, viewers, missing,
                       official_section(reports))
    io.write_text(reports / "index.html", page)
    return {"figures": len(figs), "viewers": len(viewers), "missing": missing, "protocols": protos}


def write_plot_data(runs_dir: Path, runs: list[figures.Run], out: Path) -> None:
    """Long-format CSVs for `dvc plots` (one line per run via the `run` column)."""
    rows, val = [], []
    for f in run_files(runs_dir, "train", "train_log.csv"):
        for r in io.read_csv(f)[1]:
            rows.append({"run": f.parent.name, "step": r.get("step"), "loss": r.get("loss")})
            if r.get("val_psnr_y"):  # validated steps only: a blank cell would be drawn as a point at 0
                val.append({"run": f.parent.name, "step": r.get("step"), "val_psnr_y": r["val_psnr_y"]})
    io.write_csv(out / "training.csv", rows, ["run", "step", "loss"])
    io.write_csv(out / "validation.csv", val, ["run", "step", "val_psnr_y"])
    img = []
    for r in runs:
        f = find_run(runs_dir, "eval", r.key) / "per_image.csv"
        if f.is_file():
            img += [{"run": r.key, "eval_set": x.get("eval_set", ""), "image": x.get("name", ""),
                     "psnr_y": x.get("psnr_y", ""), "ssim_y": x.get("ssim_y", "")}
                    for x in io.read_csv(f)[1] if x.get("psnr_y")]
    io.write_csv(out / "per_image.csv", img, ["run", "eval_set", "image", "psnr_y", "ssim_y"])


def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(PAGE.parent), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template(PAGE.name)


def lpips_lines(runs: list[figures.Run]) -> list[str]:
    """Whether LPIPS ran, from each run's ``lpips_status`` in metrics.json ("ok" or why not)."""
    return metric_status.lpips_lines({r.key: r.metrics.get("lpips_status") for r in runs})


def run_rows(runs: list[figures.Run], runs_dir: Path, reports: Path) -> list[dict]:
    rel = lambda p: os.path.relpath(p, reports).replace(os.sep, "/")  # noqa: E731
    out = []
    for r in runs:
        m = r.metrics
        ev, tr = find_run(runs_dir, "eval", r.key), find_run(runs_dir, "train", r.key)
        out.append({"cells": [r.key, r.model, r.dataset, ", ".join(m.get("results", {})),
                              "–" if m.get("kind") == "published-outputs" else f"{m.get('params_total', 0):,}",
                              m.get("mlflow_run_id") or "not tracked",
                              m.get("train_run_id") or "–", m.get("git_commit", "–"),
                              m.get("lpips_status") or "not recorded"],
                    "links": [(t, rel(p)) for t, p in (("metrics.json", ev / "metrics.json"), ("eval folder", ev),
                                                       ("train folder", tr)) if p.exists()]})
    return out


def viewer(title: str, srcs: list[tuple[str, str]]) -> dict:
    """A before/after view; "after" defaults to the last method column (MSGNN in the paper's order),
    not the ground truth."""
    k = max(i for i, (lbl, _) in enumerate(srcs) if lbl != figures.TARGET)
    return {"title": title, "before": srcs[0][1], "before_label": srcs[0][0], "after": srcs[k][1],
            "choices": srcs[1:]}


def profile_banner(profiles: list[str], prof: str) -> str:
    if profiles == ["paper"]:
        return ""
    return (f"Results of the '{', '.join(profiles) or prof}' profile: a smoke test of the pipeline, "
            "not a reproduction of the paper's numbers.")


def render_page(params, runs, runs_dir, data_root, reports, tables, protos, profiles, figs, viewers, missing,
                official) -> str:
    headline = config.report_cfg(params).protocol  # shown first: the protocol of the tables' main cells
    prof = str(params.get("profile", "?"))
    datasets = sorted({r.dataset for r in runs} | {s for r in runs for s in r.metrics.get("results", {})})
    return _template().render(
        banner=profile_banner(profiles, prof), tables=tables, protocols=protos,
        selected=headline if headline in protos else (protos[0] if protos else ""),
        paper_protocol=config.PAPER_PROTOCOL, lpips=lpips_lines(runs), reports=str(reports), figures=figs,
        missing=missing, viewers=[viewer(t, s) for t, s in viewers], runs=run_rows(runs, runs_dir, reports),
        official=official,
        provenance=[("git commit", tracking.git_commit()), ("profile (params.yaml)", prof),
                    ("profile(s) of the results", ", ".join(profiles) or "–"),
                    ("generated (UTC)", dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"))],
        fingerprints=[(d, fingerprint(data_root / d)) for d in datasets if (data_root / d).is_dir()],
        # published outputs re-scored (params.yaml results:): the folder scored and its sha256 (score.fingerprint)
        published=[(r.key, r.metrics["source"]["pred"], r.metrics["source"]["fingerprint"]) for r in runs
                   if r.metrics.get("kind") == "published-outputs" and "source" in r.metrics])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--data", default="data")
    ap.add_argument("--reports", default="reports")
    ap.add_argument("--params", default=config.PARAMS_FILE)
    ap.add_argument("--reference", default="reports/paper_reference.yaml")
    ap.add_argument("--below-input", default=BELOW_INPUT)
    args = ap.parse_args(argv)
    try:
        params = config.load_params(args.params)
        paper = yaml.safe_load(Path(args.reference).read_text()) if Path(args.reference).is_file() else {}
        res = build(Path(args.runs), Path(args.data), Path(args.reports), params, paper,
                    load_below_input(args.below_input))
    except (config.ConfigError, figures.FigureError, data.DataError, KeyError, ValueError, OSError,
            json.JSONDecodeError) as exc:  # ValueError includes a malformed provenance block
        print(f"site: error: {exc}", file=sys.stderr)
        return 1
    print(f"site: {args.reports}/index.html ({res['figures']} figures, {res['viewers']} before/after views"
          + (f"; not shown: {'; '.join(res['missing'])}" if res["missing"] else "") + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
