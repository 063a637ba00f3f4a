"""Tables 1–5 and Fig. 7 from run folders: paper protocol cells, seeds, deltas, Wilcoxon p-values."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmark.core import io
from benchmark.evaluation import protocols
from benchmark.reporting import tables
from pipelines import report

REPO = Path(__file__).resolve().parents[1]


def _run(runs: Path, key: str, model: str, dataset: str, psnr: list[float], seed=0, variant=None, params=10):
    """A fake evaluated run: per-image PSNR/SSIM under every protocol (SSIM = PSNR / 100)."""
    per = [{"eval_set": dataset, "name": f"{i}", **{f"{m}:{p}": v / (100 if m == "ssim" else 1)
                                                    for p in protocols.ALL for m in ("psnr", "ssim")},
            "psnr_y": v, "ssim_y": v / 100, "psnr_rgb": v, "ssim_rgb": v / 100} for i, v in enumerate(psnr)]
    mean = {k: float(np.mean([r[k] for r in per])) for k in per[0] if k not in ("eval_set", "name")}
    m = {"model": model, "dataset": dataset, "profile": "quick", "key": key, "seed": seed,
         "params_total": params, "params_trainable": params, "results": {dataset: {"n_images": len(psnr), **mean}}}
    if variant:
        m["variant"] = variant
    io.write_json(runs / "eval" / key / "metrics.json", m)
    io.write_csv(runs / "eval" / key / "per_image.csv", per)


@pytest.fixture
def fake_runs(tmp_path):
    runs = tmp_path / "runs"
    base = [20.0 + 0.1 * i for i in range(8)]
    _run(runs, "msgnn-rain200h", "msgnn", "rain200h", [b + 1 for b in base], params=2061579)
    _run(runs, "msgnn-rain200h-s1", "msgnn", "rain200h", [b + 1.2 for b in base], seed=1, params=2061579)
    _run(runs, "prenet-rain200h", "prenet", "rain200h", base, params=168963)
    _run(runs, "input-rain200h", "input", "rain200h", [b - 3 for b in base], params=0)
    for v, d in (("default", 0.0), ("m1", -0.5), ("n2", -0.2), ("s1-p48", -0.3)):
        _run(runs, f"msgnn.{v}-rain200h-s0", "msgnn", "rain200h", [b + d for b in base], variant=v, params=1000)
    return runs


def test_table1_cells_seeds_delta_and_wilcoxon(fake_runs):
    ref = yaml.safe_load((REPO / "reports/paper_reference.yaml").read_text())
    df = tables.table1(tables.collect(fake_runs), ref, fake_runs).set_index("model")
    ms = df.loc["msgnn"]
    assert ms["protocol"] == protocols.PAPER and ms["n_seeds"] == 2
    assert ms["psnr"] == pytest.approx(20.35 + 1.1) and ms["psnr_std"] == pytest.approx(np.std([1, 1.2], ddof=1))
    assert ms["paper_psnr"] == 29.627 and ms["delta_psnr"] == pytest.approx(ms["psnr"] - 29.627)
    pre = df.loc["prenet"]
    assert pre["n_seeds"] == 1 and np.isnan(pre["psnr_std"])
    # MSGNN beats PReNet by 1.1 dB on all 8 images: the exact two-sided p of 8/8 positive ranks
    assert pre["p_wilcoxon_psnr"] == pytest.approx(2 / 2**8)
    assert all(c in df.columns for c in tables.PROTO_COLS)


def test_ablation_tables_follow_params_and_reference(fake_runs):
    ref = yaml.safe_load((REPO / "reports/paper_reference.yaml").read_text())
    variants = yaml.safe_load((REPO / "params.yaml").read_text())["ablations"]
    rows = tables.collect(fake_runs)
    t2 = tables.ablation_table("table2", rows, ref, variants).set_index("cell")
    assert list(t2.index) == ["M6", "M1"]  # params.yaml order, only variants that ran
    assert t2.loc["M1", "paper_psnr"] == 29.161 and t2.loc["M1", "delta_psnr"] == pytest.approx(19.85 - 29.161)
    t3 = tables.ablation_table("table3", rows, ref, variants).set_index("cell")
    assert t3.loc["s1-p48", "train_patch"] == 48 and t3.loc["s3-p64", "paper_ssim"] == 0.9178
    f7 = tables.ablation_table("fig7", rows, ref, variants).set_index("cell")
    assert f7.loc["N2", "paper_params_m"] == 1.55


def test_report_writes_every_table_and_fig7(fake_runs, tmp_path):
    out = tmp_path / "reports"
    assert report.main(["--runs", str(fake_runs), "--out", str(out),
                        "--reference", str(REPO / "reports/paper_reference.yaml"),
                        "--params", str(REPO / "params.yaml")]) == 0
    for t in ("table1", "table2", "table3", "table4", "table5"):
        for ext in ("md", "csv", "tex"):
            assert (out / f"{t}.{ext}").stat().st_size > 0, (t, ext)
    assert (out / "figures/fig7_subnetworks.png").stat().st_size > 0
    md = (out / "table1.md").read_text()
    assert "2,061,579" in md and "2,459,689" in md and "[29.627 / 0.9178; Δ" in md and "(n=2)" in md
    assert list(pd.read_csv(out / "table2.csv")["cell"]) == ["M6", "M1"]


def test_paper_reference_counts_every_ablation_number():
    ref = yaml.safe_load((REPO / "reports/paper_reference.yaml").read_text())
    counts = {t: sum(v is not None for v in ref[t]["values"].values()) for t in ("table2", "table3", "table4", "table5")}
    assert counts == {"table2": 6, "table3": 5, "table4": 3, "table5": 3}
    assert ref["table3"]["values"]["s1-p64"] is None and "memory" in ref["table3"]["notes"]["s1-p64"]
    assert ref["fig7"]["params_m"] == {"N2": 1.55}
    assert all("paper.md" in ref[t]["source"] for t in ("table2", "table3", "table4", "table5", "fig7"))
    # Table 2's M6 is Table 1's Rain200H MSGNN cell
    assert ref["table2"]["values"]["M6"] == ref["table1"]["rain200h"]["msgnn"]
