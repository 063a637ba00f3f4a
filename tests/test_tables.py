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
    # the paper's 1.55M is the exemplar-off 5x5 family: its exact count stands beside ours, named
    assert f7.loc["N2", "paper_family_params"] == 1547625 and "exemplar off" in f7.loc["N2", "paper_family"]
    assert "delta_params" not in f7.columns
    # N4 is Table 2's M6, not a value Fig. 7 prints: shown, labelled inferred, never subtracted
    assert f7.loc["N4", "paper_psnr"] == 29.627 and pd.isna(f7.loc["N4", "delta_psnr"])
    assert "inferred" in f7.loc["N4", "note"]


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


# --- statistics (issue 23): hand-computed cases, scipy's exact test as the reference -------------------

def test_min_attainable_p_and_n_too_small():
    assert [tables.min_two_sided_p(n) for n in (4, 5, 6)] == [0.125, 0.0625, 0.03125]
    a = {str(i): 30.0 + i for i in range(4)}
    b = {str(i): 29.0 + i for i in range(4)}
    t = tables.paired_test(a, b)
    assert t["p"] is None and t["n"] == 4
    assert t["note"] == "n too small (n=4; smallest attainable two-sided p = 0.125)"


def test_wilcoxon_hand_cases_match_scipy_exact():
    from scipy.stats import wilcoxon

    # d = 1, -2, 3, 4, 5, 6: W- = 2; subsets of ranks 1..6 summing to <= 2: {}, {1}, {2} -> p = 2 * 3 / 64
    d = [1.0, -2.0, 3.0, 4.0, 5.0, 6.0]
    a = {str(i): 10 + x for i, x in enumerate(d)}
    b = {str(i): 10.0 for i in range(6)}
    t = tables.paired_test(a, b)
    assert t["p"] == pytest.approx(6 / 64) and t["p"] == pytest.approx(wilcoxon(d, method="exact").pvalue)
    assert t["n"] == 6 and t["dropped"] == 0 and t["unit"] == "images"


def test_infinite_psnr_is_handled_per_pair_and_drops_are_counted():
    base = {str(i): 20.0 + i for i in range(8)}
    a = {k: v + 1 for k, v in base.items()}
    a["7"] = float("inf")  # one image reproduced exactly: the largest positive difference, not a NaN test
    b = dict(base)
    a["extra"] = 1.0  # only one side has it
    b["3"] = float("nan")  # a missing value
    t = tables.paired_test(a, b)
    # 7 usable pairs, all positive -> exact p = 2 / 2^7
    assert t["n"] == 7 and t["dropped"] == 2 and t["p"] == pytest.approx(2 / 2**7)
    assert t["ci"] is None  # a mean difference with an infinite term has no finite interval
    both = {k: float("inf") for k in base}
    assert tables.paired_test(both, dict(both))["note"] == "all differences zero"


def test_rain1400_is_tested_on_background_means_with_a_clustered_bootstrap():
    from scipy.stats import wilcoxon

    rng = np.random.default_rng(3)
    a, b, means = {}, {}, []
    for bg in range(901, 908):  # 7 backgrounds x 14 renderings
        shift = rng.normal(0.5, 1.0)
        diffs = shift + rng.normal(0, 0.3, 14)
        means.append(diffs.mean())
        for j in range(1, 15):
            a[f"{bg}_{j}"], b[f"{bg}_{j}"] = 30 + diffs[j - 1], 30.0
    t = tables.paired_test(a, b, "rain1400")
    assert t["n"] == 7 and t["unit"].startswith("backgrounds")
    assert t["p"] == pytest.approx(wilcoxon(means).pvalue, abs=1e-12)
    lo, hi = t["ci"]
    assert lo < np.mean(means) < hi
    # the same images read as independent (another dataset): 98 units, a far smaller p
    assert tables.paired_test(a, b, "rain200h")["n"] == 98
    assert tables.cluster_of("1000_14", "rain1400") == "1000" and tables.cluster_of("12", "rain1400") == "12"


def test_holm_bonferroni():
    assert tables.holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])
    assert tables.holm([0.5, 0.9]) == [1.0, 1.0]


def test_table1_statistics_columns_and_legend(fake_runs, tmp_path):
    ref = yaml.safe_load((REPO / "reports/paper_reference.yaml").read_text())
    df = tables.table1(tables.collect(fake_runs), ref, fake_runs).set_index("model")
    pre = df.loc["prenet"]
    assert pre["test_n_psnr"] == 8 and pre["test_dropped_psnr"] == 0 and pre["test_unit"] == "images"
    # four tests in the table (prenet, input x PSNR, SSIM), each p = 2/256: Holm multiplies the smallest by 4
    assert pre["p_holm_psnr"] == pytest.approx(4 * 2 / 2**8) and pre["p_wilcoxon_psnr"] == pytest.approx(2 / 2**8)
    assert pre["ci_low_psnr"] == pytest.approx(1.1) and pre["ci_high_psnr"] == pytest.approx(1.1)
    md = report.markdown1(df.reset_index())
    assert "not over images" in md and "| PReNet | rain200h | PSNR | 8 (images) | 0 |" in md
    small = tmp_path / "small"
    _run(small, "msgnn-rain200h", "msgnn", "rain200h", [21.0, 22, 23, 24])
    _run(small, "prenet-rain200h", "prenet", "rain200h", [20.0, 21, 22, 23])
    df = tables.table1(tables.collect(small), ref, small)
    assert "n too small (n=4; smallest attainable two-sided p = 0.125)" in report.markdown1(df)


def test_every_table_carries_its_profile_and_no_nan(fake_runs, tmp_path):
    """quick/ci numbers are labelled a smoke test in every generated table; empty cells say why."""
    out = tmp_path / "reports"
    assert report.main(["--runs", str(fake_runs), "--out", str(out),
                        "--reference", str(REPO / "reports/paper_reference.yaml"),
                        "--params", str(REPO / "params.yaml")]) == 0
    files = [out / f"{t}.{e}" for t in ("table1", "table2", "table3", "table4", "table5") for e in ("md", "tex", "csv")]
    for f in files + [out / "fig7.csv"]:
        text = f.read_text()
        assert "Profile: quick" in text and "smoke test" in text, f.name
        assert "nan" not in text.lower().replace("nanometre", "").replace("provenance", ""), f.name
    t2 = (out / "table2.md").read_text()
    assert "| M2 | – | – | – | – | not run in this profile | paper 29.451 / 0.9147 |" in t2
    assert "| rain200l, rain1200, rain1400, rain12 | not run in this profile" in (out / "table1.md").read_text()
    assert list(pd.read_csv(out / "table1.csv")["profile_note"].unique()) == [tables.profile_banner(["quick"])]
    assert tables.profile_banner(["paper"]).startswith("Profile: paper")


# --- provenance of every Table 1 number (issue 22) ---------------------------------------------------

def test_table1_carries_own_paper_and_independent_columns(fake_runs, tmp_path):
    out = tmp_path / "reports"
    assert report.main(["--runs", str(fake_runs), "--out", str(out),
                        "--reference", str(REPO / "reports/paper_reference.yaml"),
                        "--params", str(REPO / "params.yaml")]) == 0
    df = pd.read_csv(out / "table1.csv").set_index("model")
    # PReNet on Rain200H: MSGNN's 27.640 beside derain-toolbox's RGB retraining; its authors published none
    pre = df.loc["prenet"]
    assert pre["paper_psnr"] == 27.640 and pre["paper_protocol"] == "msgnn"
    assert pre["indep_psnr"] == 28.01 and pre["indep_ssim"] == 0.891 and pre["indep_source"] == "derain_toolbox"
    assert pd.isna(pre["own_psnr"])
    md = (out / "table1.md").read_text()
    assert "## Provenance of every Table 1 number" in md
    # every cell of the paper's Table 1 has a row, run or not (5 sets x 9 methods)
    prov = md.split("## Provenance of every Table 1 number")[1]
    assert sum(1 for ln in prov.splitlines() if ln.startswith("| ") and " | rain" in ln) == 45
    assert "| PReNet | rain1400 | 30.608 / 0.9181 | 32.60 / 0.946 (`prenet`; prenet_readme) |" in prov
    assert "33.04 / 0.9472 (`prenet`; rcdnet_readme) |" in prov  # RCDNet's own, read in its author's README
    assert "| MSGNN | rain200h | 29.627 / 0.9178 | = MSGNN paper |" in prov
    assert "d73d865cb5e60d5bffc9a14a610146ee3e733da0" in prov and "Not verified:" in prov
    assert "nan" not in prov.lower().replace("provenance", "")
    tex = (out / "table1.tex").read_text()
    assert "own\\_psnr" in tex and "indep\\_psnr" in tex and "28.0100" in tex
    assert "Sources of own\\_* / indep\\_*: " in tex and "derain\\_toolbox: biubiubiiu/derain-toolbox" in tex


def test_provenance_findings_hold_against_table1():
    """The findings the note prints are facts about the stored numbers: re-derive them from the YAML."""
    from benchmark.reporting import provenance

    ref = yaml.safe_load((REPO / "reports/paper_reference.yaml").read_text())
    provenance.validate(ref)
    same = {m: all(e["value"] == ref["table1"][d][m] for d in ref["table1"]
                   for e in provenance.cell(ref, d, m)["also"] if e["source"] == "hocn_table" and e["as"] != "NLEDN")
            for m in ("rescan", "spanet", "dcsfn", "mspfn", "rcdnet", "prenet")}
    assert same == {"rescan": True, "spanet": True, "dcsfn": True, "mspfn": True, "rcdnet": True, "prenet": False}
    for m in ("rescan", "spanet", "dcsfn", "mspfn", "rcdnet"):  # all five sets printed, for every such row
        assert sum(1 for d in ref["table1"] for e in provenance.cell(ref, d, m)["also"]
                   if e["source"] == "hocn_table") == 5
    nledn = [e for e in provenance.cell(ref, "rain200l", "prenet")["also"] if e["as"] == "NLEDN"]
    assert nledn[0]["value"] == ref["table1"]["rain200l"]["prenet"]
    # SSID-KD's README table: its PReNet row is MSGNN's (to 0.001 dB), its ReHEN row is hocn_table's PreNet
    # row, its MSPFN Rain1200/Rain1400 values are MSGNN's RCDNet cells
    ssid = ref["provenance"]["other_tables"]["ssidkd_readme"]
    t1 = ref["table1"]
    equal = [ssid["PReNet"][d] == t1[d]["prenet"] for d in ssid["PReNet"]]
    assert equal.count(True) == 2 and all(ssid["PReNet"][d][1] == t1[d]["prenet"][1]
                                          and abs(ssid["PReNet"][d][0] - t1[d]["prenet"][0]) <= 0.001 + 1e-9
                                          for d in ssid["PReNet"])
    hocn_prenet = {d: e["value"] for d in ssid["ReHEN"] for e in provenance.cell(ref, d, "prenet")["also"]
                   if e["source"] == "hocn_table" and e["as"] == "PreNet"}
    assert ssid["ReHEN"] == hocn_prenet and all(ssid["ReHEN"][d] != t1[d]["prenet"] for d in ssid["ReHEN"])
    assert [ssid["MSPFN"][d] == t1[d]["rcdnet"] for d in ("rain1200", "rain1400")] == [True, True]
    assert ssid["MSPFN"]["rain200l"] == t1["rain200l"]["mspfn"]
    # a value only quoted, not read in its source, says so
    own = dict(provenance.cell(ref, "rain1400", "rcdnet")["own"], verified=False)
    assert provenance.fmt_entry(ref, own, "-").endswith("; rcdnet_readme; not verified)")


def test_bad_provenance_entry_is_one_clear_line(fake_runs, tmp_path, capsys):
    ref = yaml.safe_load((REPO / "reports/paper_reference.yaml").read_text())
    ref["provenance"]["cells"]["rain200h"]["prenet"]["independent"][0]["source"] = "nowhere"
    bad = tmp_path / "ref.yaml"
    bad.write_text(yaml.safe_dump(ref))
    out = tmp_path / "reports"
    assert report.main(["--runs", str(fake_runs), "--out", str(out), "--reference", str(bad),
                        "--params", str(REPO / "params.yaml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ref.yaml" in err[0] and "rain200h.prenet.independent[0]" in err[0] and "nowhere" in err[0]
    assert not out.exists()  # nothing half-written
