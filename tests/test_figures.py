"""benchmark.reporting.figures: comparison grids (Figs. 5/6/8/9), training panels, PSNR vs parameters."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from benchmark.core import registry
from benchmark.reporting import figures


def test_crop_box_stays_inside_and_defaults_to_centre():
    assert figures.crop_box((40, 60, 3), None) == (23, 13, 37, 27)  # 0.35 × 40 = 14 px, centred
    x0, y0, x1, y1 = figures.crop_box((40, 60, 3), (0.99, 0.99, 0.5))
    assert (x1, y1) == (60, 40) and x1 - x0 == y1 - y0 == 20


def test_grid_draws_columns_box_and_crop():
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 200, (40, 60, 3), dtype=np.uint8) for _ in range(3)]
    box = (10, 5, 30, 25)
    g = np.asarray(figures.grid([("a", imgs[0], "1"), ("b", imgs[1], "2"), ("c", imgs[2], "3")], box, 60, "t"))
    assert g.shape[1] == 6 + 3 * 66
    top = 24 + 20  # title + label rows, as laid out by grid()
    # the box outline is drawn in the first column's full image at the box's corner (scale 1)
    assert tuple(g[top + 5, 6 + 10]) == figures.BOX
    # the zoomed crop (3×) of column 2 starts with the crop's top-left pixel
    assert tuple(g[top + 40 + 6, 6 + 66]) == tuple(imgs[1][5, 10])
    again = np.asarray(figures.grid([("a", imgs[0], "1"), ("b", imgs[1], "2"), ("c", imgs[2], "3")], box, 60, "t"))
    assert np.array_equal(g, again)  # deterministic
    wide = figures.grid([(str(i), imgs[0], "") for i in range(11)], box, 60, "t")  # 11 tiles → bands of 6 + 5
    assert wide.size == (6 + 6 * 66, 24 + 2 * (g.shape[0] - 24))


def test_comparison_grid_from_runs(site_tree):
    runs = figures.load_runs(site_tree / "runs")
    keys = [r.key for r in figures.runs_for_set(runs, "rain-synth")]
    assert keys[:3] == ["input-rain-synth", "rescan-rain-synth", "prenet-rain-synth"]  # the paper's order
    img, cols = figures.comparison_grid(site_tree / "runs", site_tree / "data", "rain-synth", "2",
                                        ["prenet-rain-synth", "input-rain-synth"], (0.2, 0.3, 0.5), 96)
    assert [c[0] for c in cols] == ["Rainy input", "PReNet", "Ground truth"]
    out = np.asarray(Image.open(site_tree / "runs/eval/prenet-rain-synth/samples/rain-synth/2.png").convert("RGB"))
    assert np.array_equal(cols[1][1], out)
    with open(site_tree / "runs/eval/prenet-rain-synth/per_image.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["name"] == "2")
    assert figures.caption(row, "msgnn") == f"{float(row['psnr:msgnn']):.2f} dB / {float(row['ssim:msgnn']):.4f}"
    with pytest.raises(figures.FigureError, match="no test image '9'"):
        figures.comparison_grid(site_tree / "runs", site_tree / "data", "rain-synth", "9", keys, None, 96)


def _log(path, steps, val_at=None):
    path.parent.mkdir(parents=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["step", "loss", "lr", "val_psnr_y"])
        w.writeheader()
        for s in steps:
            w.writerow({"step": s, "loss": 1 / s, "lr": 1e-3, "val_psnr_y": 20 + s / 10 if s == val_at else ""})


def test_training_panels_one_per_run_in_paper_order(tmp_path):
    models = ["msgnn", "rescan", "prenet", "spanet", "dcsfn", "mspfn", "rcdnet", "dualgcn", "moss"]
    for m in models:
        _log(tmp_path / "train" / f"{m}-d" / "train_log.csv", range(1, 21), val_at=20)
    out = tmp_path / "curves.png"
    keys = figures.training_panels(tmp_path, out)
    assert keys == [f"{m}-d" for m in registry.ORDER if m in models]
    w, h = Image.open(out).size
    assert w > 1200 and h > 800  # 3 × 3 panels


def test_psnr_vs_params_uses_every_set_with_ground_truth(tmp_path):
    def run(model, params, psnr):
        return figures.Run(f"{model}-d", model, "d", {"params_total": params, "results": {
            "d": {"psnr:msgnn": psnr}, "real": {"ground_truth": False}}})

    sets = figures.psnr_vs_params([run("input", 0, 14.0), run("prenet", 168963, 27.0), run("msgnn", 2e6, 29.0)],
                                  tmp_path / "p.png")
    assert sets == ["d"] and (tmp_path / "p.png").stat().st_size > 5000


def test_real_world_grid_has_no_ground_truth_column(tmp_path):
    """Figs. 6/8/9: a set without ground truth shows the rainy input and the outputs, no scores."""
    rng = np.random.default_rng(1)
    rainy = rng.integers(0, 255, (30, 44, 3), dtype=np.uint8)
    (tmp_path / "data/realx/test/input").mkdir(parents=True)
    Image.fromarray(rainy).save(tmp_path / "data/realx/test/input/street.png")
    out = rng.integers(0, 255, (30, 44, 3), dtype=np.uint8)
    (tmp_path / "runs/eval/prenet-d/samples/realx").mkdir(parents=True)
    Image.fromarray(out).save(tmp_path / "runs/eval/prenet-d/samples/realx/street.png")
    img, cols = figures.comparison_grid(tmp_path / "runs", tmp_path / "data", "realx", "street", ["prenet-d"],
                                        None, 64, paired=False)
    assert [c[0] for c in cols] == ["Rainy input", "PReNet"]
    assert np.array_equal(cols[0][1], rainy) and np.array_equal(cols[1][1], out)
    assert img.size[0] == 6 + 2 * 70
    with pytest.raises(figures.FigureError, match="re-run evaluate@rescan-d"):
        figures.comparison_grid(tmp_path / "runs", tmp_path / "data", "realx", "street", ["rescan-d"], None, 64,
                                paired=False)


def test_comparison_figures_take_only_table1_runs():
    """Ablation variants and seed replicas evaluate fewer images (quick profile): the grids, the
    viewers and the training panels show one run per method, as the paper's figures do."""
    from benchmark.reporting.figures import Run, is_table1_run, runs_for_set

    res = {"results": {"rain-synth": {"psnr_y": 20.0}}}
    runs = [Run(k, k.split("-")[0].split(".")[0], "rain-synth", res)
            for k in ("prenet-rain-synth", "msgnn-rain-synth", "msgnn.m1-rain-synth-s0", "prenet-rain-synth-s1")]
    assert [r.key for r in runs_for_set(runs, "rain-synth")] == ["prenet-rain-synth", "msgnn-rain-synth"]
    assert is_table1_run("msgnn-rain200h") and not is_table1_run("msgnn.default-rain200h-s0")
