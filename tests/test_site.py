"""The site stage (reports/index.html), the evaluate outputs it needs, and `dvc plots show`."""
from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.core import config, tracking
from benchmark.reporting import html_tables
from pipelines import site

from .conftest import REPO
from .helpers.site_tree import HOSTILE


def test_page_is_static_escaped_and_complete(site_tree):
    page = (site_tree / "reports/index.html").read_text()
    assert HOSTILE not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;&quot;q&quot;" in page
    assert page.count("<script") == 1  # only the page's own inline script
    assert not re.search(r'(src|href)="(https?:)?//', page), "the page must not load anything from a network"
    for src in re.findall(r'<img[^>]* src="([^"]+)"', page):
        assert (site_tree / "reports" / src).is_file(), src
    with open(site_tree / "reports/table1.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert page.count('<tr data-row="') == len(rows) == 4
    for sec in ("tables", "figures", "compare", "runs", "provenance"):
        assert f'<section id="{sec}">' in page
    assert 'src="site/fig7_subnetworks.png"' in page  # the report stage's Fig. 7, shown on the page
    # provenance: profile, commit and the dataset fingerprint
    assert "profile (params.yaml)</td><td>ci" in page and "git commit" in page
    assert re.search(r"<td>rain-synth</td><td><code>[0-9a-f]{16}</code>", page)


def test_runs_link_to_mlflow_and_folders(site_tree):
    m = json.loads((site_tree / "runs/eval/prenet-rain-synth/metrics.json").read_text())
    params = config.load_params(site_tree / "params.yaml")
    cfg = config.resolve("prenet", "rain-synth", params).tracking
    by_name = {r["name"]: r for r in tracking.list_runs(cfg)}
    train_run, eval_run = by_name["train/prenet-rain-synth"], by_name["evaluate/prenet-rain-synth"]
    assert m["train_run_id"] == train_run["run_id"] and m["mlflow_run_id"] == eval_run["run_id"]
    assert eval_run["tags"]["train_run_id"] == train_run["run_id"]
    assert eval_run["params"]["params_total"] == "168963"
    assert m["protocol"] == {"quantise": "round", "y_mode": "uint8", "crop_border": 0,
                             "ssim": "gaussian sigma 1.5, data_range 255"}
    assert m["git_commit"]
    page = (site_tree / "reports/index.html").read_text()
    assert m["train_run_id"] in page and m["mlflow_run_id"] in page
    assert 'href="../runs/eval/prenet-rain-synth/metrics.json"' in page


def test_evaluate_keeps_the_report_images(site_tree):
    # ci profile saves 1 image by count; report.images adds "2"; "3" is neither
    saved = sorted(p.name for p in (site_tree / "runs/eval/prenet-rain-synth/samples/rain-synth").iterdir())
    assert saved == ["1.png", "2.png"]
    assert (site_tree / "reports/site/compare_rain-synth_2.png").is_file()
    assert (site_tree / "reports/site/ablation.png").is_file()


def test_missing_sample_is_one_clear_error(site_tree, tmp_path, monkeypatch, capsys):
    work = tmp_path / "w"
    shutil.copytree(site_tree, work, ignore=shutil.ignore_patterns("mlflow.db", "mlruns"))
    (work / "runs/eval/rescan-rain-synth/samples/rain-synth/2.png").unlink()
    monkeypatch.chdir(work)
    assert site.main(["--reference", str(REPO / "reports/paper_reference.yaml")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "runs/eval/rescan-rain-synth/samples/rain-synth/2.png" in err
    assert "evaluate@rescan-rain-synth" in err


def _table(cols, rows):
    return cols, [dict(zip(cols, r)) for r in rows]


def test_table_marks_best_second_paper_delta_and_below_input():
    cols, rows = _table(["model", "dataset", "profile", "psnr_y", "ssim_y", "lpips"], [
        ["input", "rain200h", "paper", "14.0", "0.50", "0.40"],
        ["prenet", "rain200h", "paper", "27.0", "0.88", "0.10"],
        ["msgnn", "rain200h", "paper", "29.0", "0.91", "0.20"],
        ["spanet", "rain200h", "paper", "11.8", "0.40", "0.05"],
    ])
    rk = html_tables.ranks(cols, rows)
    assert rk[(2, "psnr_y")] == "best" and rk[(1, "psnr_y")] == "second" and (0, "psnr_y") not in rk
    assert rk[(3, "lpips")] == "best" and rk[(1, "lpips")] == "second"  # LPIPS: lower is better
    assert html_tables.below_input(cols, rows) == {3}
    paper = {"rain200h": {"prenet": [27.640, 0.8872]}}
    out = html_tables.render("t.csv", cols, rows, paper, {3: "why <b>"})
    assert ">-0.64</td>" in out and "27.64 / 0.8872" in out
    assert "why &lt;b&gt;" in out and 'tr data-row="3" data-protocol="" class="below"' in out


def test_protocol_columns_and_rows_are_switchable():
    cols, rows = _table(["model", "dataset", "psnr:matlab-y", "ssim:matlab-y", "psnr:msgnn"], [
        ["prenet", "d", "27", "0.8", "26"], ["msgnn", "d", "29", "0.9", "25"]])
    assert html_tables.protocols([(cols, rows), (["model", "protocol"], [{"protocol": "prenet"}])]) == [
        "matlab-y", "msgnn", "prenet"]
    out = html_tables.render("t.csv", cols, rows, {}, {})
    assert '<td data-col="psnr:msgnn" data-value="26" data-protocol="msgnn" class="best">' in out


def test_plot_definitions_render_with_dvc(site_tree, tmp_path):
    """The dvc.yaml `plots:` section, unchanged, renders the site stage's CSVs (`dvc plots show`)."""
    import yaml

    work = tmp_path / "p"
    shutil.copytree(site_tree / "reports/site/plots", work / "reports/site/plots")
    shutil.copytree(REPO / "pipelines/plots", work / "pipelines/plots")
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    (work / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots}))
    dvc = str(Path(sys.executable).with_name("dvc"))
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=work, check=True)
    r = subprocess.run([dvc, "plots", "show", "-o", "out"], cwd=work, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    html = (work / "out/index.html").read_text()
    for name in ("training_loss", "validation_psnr", "per_image_psnr", "prenet-rain-synth", "rescan-rain-synth"):
        assert name in html


@pytest.mark.parametrize("bad,msg", [({"crops": {"rain-synth/1": [0.5, 0.5]}}, "report.crops.rain-synth/1"),
                                     ({"ablation_image": "x"}, "report.ablation_image"),
                                     ({"colour": 1}, "unknown key(s) ['colour'] in report")])
def test_report_section_is_validated(repo_params, bad, msg):
    p = {**repo_params, "report": {**repo_params["report"], **bad}}
    with pytest.raises(config.ConfigError, match=re.escape(msg)):
        config.report_cfg(p)
