"""The report's figures, drawn from the run folders only (never from MLflow).

* ``comparison_grid``: the paper's Figs. 5/6 (rainy input / each method / ground truth, a zoomed
  crop whose box is drawn on the full image, PSNR/SSIM of that image under each tile) and, given a
  list of run keys, Figs. 8/9 (ablation variants). Tiles are PIL images: exact pixels, no
  matplotlib resampling, deterministic bytes for the same inputs.
* ``training_panels``: one panel per run (loss and validation PSNR vs step), so nine models stay
  readable, unlike one crowded plot.
* ``psnr_vs_params``: the "accuracy vs size" scatter, one panel per evaluated set.

Inputs: ``runs/eval/<key>/metrics.json``, ``per_image.csv``, ``samples/<set>/<id>.png`` and the
test images under ``data/<set>``. A missing file is a ``FigureError`` naming it and the stage
that writes it.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from benchmark.core import io
from benchmark.core.config import PAPER_PROTOCOL
from benchmark.data import loading as data
from benchmark.core.registry import DISPLAY, display_name, paper_rank, record_display
from benchmark.core.runs import RunFolderError, eval_metrics, find_run, run_files

TARGET = "Ground truth"  # label of the ground-truth column
BOX = (230, 30, 30)  # crop-box colour, as the paper's red boxes


class FigureError(ValueError):
    """A file a figure needs is missing or unusable; the message names it."""


@dataclass(frozen=True)
class Run:
    key: str  # <model>-<dataset>, the run folder name
    model: str
    dataset: str  # training dataset
    metrics: dict  # metrics.json


def load_runs(runs_dir: Path) -> list[Run]:
    out = []
    try:
        found = eval_metrics(runs_dir)  # each run once: a copied run folder is refused, never shown
    except RunFolderError as exc:
        raise FigureError(str(exc)) from None
    for f, m in found:
        try:
            out.append(Run(f.parent.name, m["model"], m["dataset"], m))
            record_display(m["model"], m.get("display"))  # plugins / published outputs: named by their run
        except KeyError as exc:
            raise FigureError(f"{f}: not a metrics.json written by the evaluate stage (no {exc})") from None
    return sorted(out, key=lambda r: (paper_rank(r.model), r.model, r.dataset))


def is_table1_run(key: str) -> bool:
    """A Table 1 run ``<model>-<dataset>``, not an ablation variant (``msgnn.<variant>-…``) or a seed
    replica (``…-s<seed>``): the comparison figures show one run per method, as the paper does."""
    return "." not in key and re.search(r"-s\d+$", key) is None


def runs_for_set(runs: list[Run], eval_set: str) -> list[Run]:
    """Table 1 runs that evaluated ``eval_set``; models trained on that set win over models tested there."""
    hits = [r for r in runs if eval_set in r.metrics.get("results", {}) and is_table1_run(r.key)]
    trained = sorted({r.dataset for r in hits}, key=lambda d: (d != eval_set, d))
    return [r for r in hits if r.dataset == trained[0]] if trained else []


def metric_names(protocol: str) -> tuple[str, str]:
    """The PSNR and SSIM keys of scoring protocol ``protocol`` in metrics.json and per_image.csv."""
    return f"psnr:{protocol}", f"ssim:{protocol}"


def per_image(run_dir: Path, eval_set: str, image: str) -> dict:
    f = run_dir / "per_image.csv"
    if not f.is_file():
        raise FigureError(f"{f}: not found; run `dvc repro evaluate` first")
    for row in io.read_csv_rows(f):
        if row.get("eval_set") == eval_set and row.get("name") == image:
            return row
    raise FigureError(f"{f}: no row for image {image!r} of {eval_set!r}")


def test_image(data_root: Path, eval_set: str, image: str, paired: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(rainy, clean or None) of one test image, found by id through the dataset loader."""
    ds = data.EvalImages(data_root / eval_set, "test", paired=paired)
    for it in ds.items:
        name = str(it.id) if paired else Path(getattr(it, "input", it)).stem
        if name == image:
            return data.load_pair(it) if paired else (data.load_image(Path(getattr(it, "input", it))), None)
    raise FigureError(f"{data_root / eval_set}: no test image {image!r} (report.images in params.yaml)")


def sample(run_dir: Path, eval_set: str, image: str) -> np.ndarray:
    f = run_dir / "samples" / eval_set / f"{image}.png"
    if not f.is_file():
        raise FigureError(f"{f}: derained output not saved; re-run evaluate@{run_dir.name} "
                          f"(it saves the images listed in report.images)")
    return data.load_image(f)


def crop_box(shape: tuple[int, ...], crop: tuple[float, float, float] | None) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) in pixels of the [x, y, size] fraction crop, kept inside the image."""
    h, w = shape[:2]
    x, y, size = crop or (None, None, 0.35)
    s = max(4, int(round(size * min(h, w))))
    x0 = (w - s) // 2 if x is None else min(int(round(x * w)), w - s)
    y0 = (h - s) // 2 if y is None else min(int(round(y * h)), h - s)
    return x0, y0, x0 + s, y0 + s


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def _tile(img: np.ndarray, box: tuple[int, int, int, int], width: int) -> tuple[Image.Image, Image.Image]:
    """The full image scaled to ``width`` with the crop box drawn, and the crop zoomed to ``width``²."""
    h, w = img.shape[:2]
    full = Image.fromarray(img).resize((width, max(1, round(h * width / w))), Image.Resampling.LANCZOS)
    k = width / w
    ImageDraw.Draw(full).rectangle([box[0] * k, box[1] * k, box[2] * k - 1, box[3] * k - 1], outline=BOX,
                                   width=2)
    zoom = Image.fromarray(img[box[1]:box[3], box[0]:box[2]]).resize((width, width), Image.Resampling.NEAREST)
    return full, zoom


def grid(columns: list[tuple[str, np.ndarray, str]], box: tuple[int, int, int, int], width: int,
         title: str, per_row: int = 6) -> Image.Image:
    """One tile per (label, image, caption): label, full image with box, zoomed crop, caption.

    More than ``per_row`` tiles wrap into bands of equal length (11 columns → 6 + 5), so that the
    figure stays readable on a screen; the paper's single print row would be 1,800 px wide.
    """
    font, small = _font(14), _font(12)
    gap, head, foot, top = 6, 20, 18, 24
    tiles = [_tile(img, box, width) for _, img, _ in columns]
    fh = max(t[0].height for t in tiles)
    n_bands = math.ceil(len(columns) / per_row)
    per_band = math.ceil(len(columns) / n_bands)
    band = head + fh + gap + width + foot + gap
    canvas = Image.new("RGB", (gap + per_band * (width + gap), top + n_bands * band), "white")
    d = ImageDraw.Draw(canvas)
    d.text((gap, 4), title, fill="black", font=font)
    for i, ((label, _, caption), (full, zoom)) in enumerate(zip(columns, tiles)):
        x, y = gap + (i % per_band) * (width + gap), top + (i // per_band) * band
        d.text((x + width / 2, y + head / 2), label, fill="black", font=font, anchor="mm")
        canvas.paste(full, (x, y + head))
        canvas.paste(zoom, (x, y + head + fh + gap))
        d.text((x + width / 2, y + head + fh + gap + width + foot / 2), caption, fill="black", font=small,
               anchor="mm")
    return canvas


def caption(row: dict | None, protocol: str) -> str:
    if row is None:
        return "no ground truth"
    p, s = metric_names(protocol)
    if p not in row or s not in row:
        raise FigureError(f"per_image.csv has no {p}/{s} columns (report.protocol {protocol!r})")
    return f"{float(row[p]):.2f} dB / {float(row[s]):.4f}"


def comparison_grid(runs_dir: Path, data_root: Path, eval_set: str, image: str, run_keys: list[str],
                    crop: tuple[float, float, float] | None, width: int, protocol: str = PAPER_PROTOCOL,
                    paired: bool = True, title: str = "") -> tuple[Image.Image, list[tuple[str, np.ndarray]]]:
    """The grid for one test image over ``run_keys`` (rainy input first, ground truth last).

    Returns the image and its columns' (label, pixels), which the HTML before/after view reuses.
    """
    rainy, clean = test_image(data_root, eval_set, image, paired)
    cols: list[tuple[str, np.ndarray, str]] = []
    input_runs = [k for k in run_keys if k.startswith("input-")]
    if not input_runs:  # the rainy tile still shows; its score comes from the input row when it exists
        cols.append((DISPLAY["input"], rainy, ""))
    for key in run_keys:
        d = find_run(runs_dir, "eval", key)
        # the run's own model field: a plugin's name (or the dataset's) may hold '-' as well
        meta = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").is_file() else {}
        model = meta.get("model") or key.split("-")[0]
        record_display(model, meta.get("display"))
        label = display_name(model)
        row = per_image(d, eval_set, image) if paired else None
        img = rainy if model == "input" else sample(d, eval_set, image)
        if img.shape != rainy.shape:
            raise FigureError(f"{d / 'samples' / eval_set / (image + '.png')}: size {img.shape[:2]} is not "
                              f"the test image's {rainy.shape[:2]}")
        cols.append((label, img, caption(row, protocol) if paired else ""))
    cols.sort(key=lambda c: c[0] != DISPLAY["input"])  # rainy input first, whatever the key order
    if clean is not None:
        cols.append((TARGET, clean, protocol))
    box = crop_box(rainy.shape, crop)
    return grid(cols, box, width, title or f"{eval_set} / {image}"), [(c[0], c[1]) for c in cols]


def _num(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def training_panels(runs_dir: Path, out: Path, ncols: int = 3) -> list[str]:
    """One panel per ``runs/train/<key>/train_log.csv``: loss (left axis), validation PSNR-Y (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = [(f.parent.name, io.read_csv_rows(f)) for f in run_files(runs_dir, "train", "train_log.csv")]
    logs = [(k, r) for k, r in logs if r and is_table1_run(k)]
    logs.sort(key=lambda kr: (paper_rank(kr[0].split("-")[0]), kr[0]))
    n = max(1, len(logs))
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 2.7 * nrows), squeeze=False)
    for ax in axes.flat[len(logs):]:
        ax.set_visible(False)
    for ax, (key, rows) in zip(axes.flat, logs):
        steps = [float(r["step"]) for r in rows]
        ax.plot(steps, [_num(r.get("loss")) for r in rows], color="tab:blue", lw=1.2)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("loss", color="tab:blue", fontsize=8)
        ax.tick_params(labelsize=7)
        val = [(s, _num(r.get("val_psnr_y"))) for s, r in zip(steps, rows) if _num(r.get("val_psnr_y")) is not None]
        if val:
            ax2 = ax.twinx()
            ax2.plot(*zip(*val), "o-", color="tab:orange", ms=3, lw=1)
            ax2.set_ylabel("val PSNR-Y (dB)", color="tab:orange", fontsize=8)
            ax2.tick_params(labelsize=7)
    _finish(fig, axes, out, None if logs else "no train_log.csv found")
    return [k for k, _ in logs]


def psnr_vs_params(runs: list[Run], out: Path, protocol: str = PAPER_PROTOCOL) -> list[str]:
    """PSNR of each model against its parameter count (log scale), one panel per evaluated set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    pkey = metric_names(protocol)[0]
    sets = list(dict.fromkeys(s for r in runs for s, v in r.metrics.get("results", {}).items() if pkey in v))[:6]
    fig, axes = plt.subplots(1, max(1, len(sets)), figsize=(5.2 * max(1, len(sets)), 4), squeeze=False)
    for ax, s in zip(axes.flat, sets):
        for r in runs_for_set(runs, s):
            v = _num(r.metrics["results"][s].get(pkey))
            if v is None:
                continue
            if r.model == "input" or r.metrics.get("kind") == "published-outputs":  # no parameter count: a line
                ax.axhline(v, ls="--", color="grey", lw=1)
                ax.text(0.01, v, " rainy input" if r.model == "input" else f" {display_name(r.model)}", color="grey",
                        fontsize=8, va="bottom", transform=ax.get_yaxis_transform())
                continue
            x = r.metrics.get("params_total", 0) / 1e6
            ax.scatter([x], [v], color="tab:red" if r.model == "msgnn" else "tab:blue", zorder=3)
            ax.annotate(display_name(r.model), (x, v), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xscale("log")
        # plain numbers at 1-2-5 steps; the default minor labels overlap (0.15M … 21M in one panel),
        # and half a decade of margin keeps at least two labelled ticks and room for the names
        xs = [o.get_offsets()[0][0] for o in ax.collections]
        if xs:
            ax.set_xlim(min(xs) / 2, max(xs) * 3)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("parameters (millions, log scale)")
        ax.set_ylabel(f"{pkey} (dB)")
        ax.set_title(s)
        ax.grid(alpha=0.3)
    _finish(fig, axes, out, None if sets else "no evaluated set with ground truth")
    return sets


def _finish(fig, axes, out: Path, empty: str | None) -> None:
    """Lay out, save and close a panel figure; ``empty`` (nothing to plot) is written in the first
    panel, so an empty figure says why instead of being blank."""
    import matplotlib.pyplot as plt

    if empty:
        axes[0, 0].text(0.5, 0.5, empty, ha="center", va="center")
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)


def save_figure(fig, path: Path) -> None:
    # a fixed creation date: the same runs give byte-identical PNGs
    io.atomic_write(path, lambda f: fig.savefig(f, dpi=110, format="png", metadata={"Software": None}))


def save_image(img: Image.Image | np.ndarray, path: Path) -> None:
    im = Image.fromarray(img) if isinstance(img, np.ndarray) else img
    io.atomic_write(path, lambda f: im.save(f, format="PNG"))
