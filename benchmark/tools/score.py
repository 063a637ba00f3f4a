"""``msgnn-bench score --pred DIR --gt DIR``: score a folder of a method's output images, no network.

Most papers publish output images, not weights. This pairs each output with its ground truth and
computes what ``evaluate`` computes from a network's output: the four legacy metrics (PSNR/SSIM on
Y and RGB) and every scoring protocol (``benchmark.evaluation.protocols.score_all``), written as the
same ``metrics.json`` / ``per_image.csv`` shapes (``params_total`` 0: there is no network).

Pairing: the ground-truth folder is read with the dataset layout adapters
(``benchmark.data.layouts.find_pairs``: ``input/``+``target/``, ``rain/``+``norain/``, ...; ids as
they give them), or, when it is a flat folder of clean images, by file stem. Output files are
matched by stem to a pair's id or to its target file's stem (``1.png`` or ``norain-1.png``).
Unpaired files (either side), two outputs for one image, size mismatches and unreadable images are
refused before anything is scored, with one line naming the file.

An output image is 8-bit: it is scored as the float image ``value / 255`` (exact: every protocol's
quantisation gives the stored value back, checked per image).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.data import images, layouts
from benchmark.data.images import DataError


class ScoreError(DataError):
    """A folder that cannot be scored (one line naming the file)."""


def _gt_items(gt: Path) -> list[tuple[str, Path]]:
    """(id, ground-truth file) of a paired dataset folder, or of a flat folder of clean images."""
    try:
        pairs = layouts.find_pairs(gt)
        return [(p.id, p.target) for p in pairs if p.target is not None and p.rainy_side is None]
    except layouts.UnknownLayoutError:
        return [(p.id, p.input) for p in layouts.find_images(gt)]


def pair(pred: str | Path, gt: str | Path) -> list[tuple[str, Path, Path]]:
    """(id, output file, ground-truth file) in natural id order; ScoreError on any unpaired file."""
    pred, gt = Path(pred), Path(gt)
    for p, what in ((pred, "--pred"), (gt, "--gt")):
        if not p.is_dir():
            raise ScoreError(f"{p}: not a folder ({what})")
    truth = _gt_items(gt)
    by_key: dict[str, int] = {}
    for i, (pid, target) in enumerate(truth):
        for k in dict.fromkeys((pid, target.stem)):
            by_key.setdefault(k, i)
    outs = layouts.find_images(pred)
    got: dict[int, Path] = {}
    for o in outs:
        i = by_key.get(o.id, by_key.get(o.input.stem))
        if i is None:
            raise ScoreError(f"{o.input}: no ground truth with this id in {gt} (unpaired output)")
        if i in got:
            raise ScoreError(f"{o.input}: a second output for image {truth[i][0]!r} (also {got[i]})")
        got[i] = o.input
    missing = [truth[i] for i in range(len(truth)) if i not in got]
    if missing:
        pid, target = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ScoreError(f"{target}: no output image for id {pid!r} in {pred}{more} (unpaired ground truth)")
    return sorted(((truth[i][0], got[i], truth[i][1]) for i in got), key=lambda t: layouts.natural_key(t[0]))


def check(items: list[tuple[str, Path, Path]]) -> None:
    """Every file readable (from its header) and each output the size of its ground truth."""
    for _, out, target in items:
        a, b = images.inspect(out), images.inspect(target)
        if (a.width, a.height) != (b.width, b.height):
            raise ScoreError(f"{out}: {a.width}x{a.height} but its ground truth {target} is {b.width}x{b.height}")


def as_float(out8: np.ndarray) -> np.ndarray:
    """The float image whose quantisation (round, round-even, truncate) gives ``out8`` back."""
    f = out8.astype(np.float32) / np.float32(255)
    prod = f * np.float32(255)
    low = prod < out8  # truncation would lose a level: nudge those up by one ulp
    while low.any():
        f = np.where(low, np.nextafter(f, np.float32(2)), f)
        prod = f * np.float32(255)
        low = prod < out8
    return f


def score_folder(pred: str | Path, gt: str | Path, y_mode: str = "uint8", progress: bool = False) -> dict:
    """Per-image and mean metrics of the outputs in ``pred`` against ``gt`` (the shape of
    ``benchmark.evaluation.inference.evaluate``'s result)."""
    from benchmark.evaluation import metrics, protocols

    items = pair(pred, gt)
    check(items)
    rows = []
    for name, out, target in items:
        out8 = images.load_rgb(out)
        tgt8 = images.load_rgb(target)
        row: dict = {"name": name, "file": out.name}
        row.update(metrics.image_metrics(out8, tgt8, y_mode=y_mode))
        row.update(protocols.score_all(as_float(out8), tgt8))
        rows.append(row)
        if progress:
            print(f"{name:>12}  PSNR-Y {row['psnr_y']:7.3f}  SSIM-Y {row['ssim_y']:.4f}")
    keys = [k for k in rows[0] if k not in ("name", "file")]
    mean = {k: float(sum(r[k] for r in rows) / len(rows)) for k in keys}
    return {"n_images": len(rows), "mean": mean, "per_image": rows}


def fingerprint(folder: str | Path) -> str:
    """sha256 over the folder's image files (relative names and bytes): the provenance of a re-score."""
    import hashlib

    h = hashlib.sha256()
    root = Path(folder)
    for f in sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.relative_to(root).as_posix()):
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


def write(out_dir: str | Path, name: str, dataset: str, res: dict, pred: str | Path, gt: str | Path,
          profile: str = "", eval_set: str | None = None) -> dict:
    """``metrics.json`` / ``per_image.csv`` (+ ``headline.json``) in ``out_dir``, the evaluate stage's
    shapes; ``model`` is ``name``, marked ``kind: published-outputs``."""
    from benchmark.core import io, tracking
    from benchmark.core.registry import PUBLISHED
    from benchmark.evaluation import headline

    out_dir = Path(out_dir)
    eval_set = eval_set or dataset
    result = {"model": name, "dataset": dataset, "profile": profile, "key": out_dir.name, "seed": 0,
              "kind": "published-outputs", "display": PUBLISHED.format(name=name), "params_total": 0, "params_trainable": 0,
              "lpips_status": "not computed (scored outputs)",
              "protocol": {"quantise": "as stored (8-bit files)", "y_mode": "uint8", "crop_border": 0,
                           "ssim": "gaussian sigma 1.5, data_range 255"},
              "source": {"pred": str(pred), "gt": str(gt), "fingerprint": fingerprint(pred)},
              "git_commit": tracking.git_commit(), "mlflow_run_id": None, "train_run_id": None,
              "results": {eval_set: {"n_images": res["n_images"], **res["mean"]}}}
    io.write_json(out_dir / "metrics.json", result)
    io.write_json(out_dir / headline.FILE, headline.of_results(out_dir.name, result["results"]))
    io.write_csv(out_dir / "per_image.csv", [{"eval_set": eval_set, **r} for r in res["per_image"]])
    return result
