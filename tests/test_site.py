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
from benchmark.reporting import figures, html_tables
from pipelines import site

from .conftest import REPO
from .helpers.site_tree import HOSTILE


def test_page_is_static_escaped_and_complete(site_tree):
    page = (site_tree / "reports/index.html").read_text()
    assert HOSTILE not in page and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&#34;q&#34;" in page
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


def _t1(rows):
    cols = ["model", "trained_on", "dataset", "profile", "protocol", "n_seeds", "psnr", "psnr_std",
            "psnr:msgnn", "ssim:msgnn", "psnr:matlab-y", "ssim:matlab-y"]
    return cols, [dict(zip(cols, r)) for r in rows]


T1 = _t1([["input", "d", "d", "ci", "msgnn", "1", "14", "", "14.0", "0.50", "15.0", "0.51"],
          ["prenet", "d", "d", "ci", "msgnn", "1", "27", "", "27.0", "0.88", "16.0", "0.87"],
          ["msgnn", "d", "d", "ci", "msgnn", "1", "29", "", "29.0", "0.91", "14.5", "0.86"],
          ["spanet", "d", "d", "ci", "msgnn", "1", "11.8", "", "11.8", "0.40", "17.0", "0.85"]])


def test_table1_view_follows_the_protocol_numbers_marks_and_shading():
    cols, rows = T1
    paper = {"d": {"prenet": [27.640, 0.8872]}}
    views = {p: html_tables.table1_view(rows, p, paper) for p in ("msgnn", "matlab-y")}
    for v in views.values():  # methods down in the paper's order, datasets across
        assert [m["model"] for m in v["methods"]] == ["input", "prenet", "spanet", "msgnn"]
        assert v["columns"] == [{"dataset": "d", "trained_on": "d"}]
    cell = {p: {m["model"]: m["cells"][0] for m in v["methods"]} for p, v in views.items()}
    ms, mat = cell["msgnn"], cell["matlab-y"]
    assert ms["msgnn"]["psnr"]["mark"] == "best" and ms["prenet"]["psnr"]["mark"] == "second"
    assert mat["spanet"]["psnr"]["mark"] == "best" and mat["prenet"]["psnr"]["mark"] == "second"
    assert ms["input"]["psnr"]["mark"] == ""  # the rainy input is a reference, never ranked
    assert ms["spanet"]["below"] and not ms["msgnn"]["below"]  # below the input in this protocol …
    assert mat["msgnn"]["below"] and not mat["spanet"]["below"]  # … and in the other
    # every method's margin over the rainy input, in the view's protocol; none for the input itself
    assert (ms["msgnn"]["vs_input"], ms["spanet"]["vs_input"], ms["input"]["vs_input"]) == ("+15.00", "-2.20", "")
    assert mat["spanet"]["vs_input"] == "+2.00"
    assert ms["prenet"]["paper"] == {"psnr": "27.640", "ssim": "0.8872", "delta_psnr": "-0.64", "delta_ssim": "-0.0072"}
    assert mat["prenet"]["psnr"]["text"] == "16.00" and mat["prenet"]["paper"]["delta_psnr"] == "-11.64"
    missing = html_tables.table1_view(rows[:2] + [{**rows[2], "dataset": "e", "trained_on": "e"}], "msgnn", {})
    assert missing["methods"][0]["cells"][1]["missing"] == "not run in this profile"


# --- issue 28: a quick-profile cell below the input says what it would need (reports/below_input.yaml) ---

FACTS = """quick:
  spanet: {needs: null, why: "its green channel
    stays negative"}
  msgnn: {needs: 300, why: measured on a curve}
"""


def test_below_input_note_names_the_steps_trained_and_what_is_needed(tmp_path):
    from benchmark.core import io

    runs = tmp_path / "runs"
    io.write_csv(runs / "train/spanet-d/train_log.csv", [{"step": 5, "loss": -0.2}, {"step": 10, "loss": -0.3}])
    (tmp_path / "below.yaml").write_text(FACTS)
    facts = site.load_below_input(tmp_path / "below.yaml")
    quick = [{**r, "profile": "quick"} for r in T1[1]]

    def notes(rows, proto, facts):
        view = html_tables.table1_view(rows, proto, {}, lambda r, v, b: site.below_reason(runs, r, v, b, facts))
        return {m["model"]: m["cells"][0]["below"] for m in view["methods"] if m["cells"][0]["below"]}

    spanet = notes(quick, "msgnn", facts)["spanet"]  # the fact for its profile and model, steps from its log
    assert spanet == ("PSNR 11.80 dB is below the rainy input's 14.00 dB: trained 10 steps in the 'quick' profile; "
                      'more steps do not help (measured, docs/operations.md "Quick-profile budgets"): '
                      "its green channel stays negative.")
    msgnn = notes(quick, "matlab-y", facts)["msgnn"]  # a number where one was measured; no log: '?' steps
    assert "trained ? steps in the 'quick' profile; needs ≈ 300 steps (measured" in msgnn
    for rows, f in ((T1[1], facts), (quick, {})):  # another profile, or no file: the general smoke-test note
        assert "a smoke-test budget" in notes(rows, "msgnn", f)["spanet"]
        assert "more steps do not help" not in notes(rows, "msgnn", f)["spanet"]
    assert site.load_below_input(tmp_path / "absent.yaml") == {}


def test_repo_below_input_facts_are_valid_and_name_known_models(repo_params):
    facts = site.load_below_input(REPO / site.BELOW_INPUT)
    assert facts["quick"]["spanet"]["needs"] is None  # measured: no step count (docs/operations.md)
    assert all(set(models) <= set(repo_params["trained_models"]) for models in facts.values())
    assert set(facts) <= set(repo_params["profiles"]) - {"paper"}  # smoke-test profiles only


@pytest.mark.parametrize("text,msg", [
    ("quick: {spanet: {needs: -3, why: x}}", "quick.spanet.needs: must be a positive number of steps or null"),
    ("quick: {spanet: {needs: true, why: x}}", "quick.spanet.needs"),
    ("quick: {spanet: {needs: 3}}", "quick.spanet: must have exactly the keys needs and why"),
    ("quick: {spanet: {needs: 3, why: '  '}}", "quick.spanet.why: must be a non-empty sentence"),
    ("quick: [spanet]", "quick: must map model"),
    ("quick: {spanet: [", "not valid YAML"),
])
def test_bad_below_input_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, text, msg):
    bad = tmp_path / "below.yaml"
    bad.write_text(text)
    monkeypatch.chdir(tmp_path)
    assert site.main(["--params", str(REPO / "params.yaml"), "--reference", str(REPO / "reports/paper_reference.yaml"),
                      "--below-input", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and msg in err, err
    assert not (tmp_path / "reports").exists()


def test_page_shows_one_protocol_at_a_time_and_escapes(tmp_path):
    cols, rows = T1
    rows = rows + [{**rows[1], "model": "<b>x</b>"}]
    t = {"name": "table1", "csv": "table1.csv", "title": "T1", "raw": html_tables.raw_view(cols, rows),
         "files": ["table1.csv"], "kind": "table1", "notes": {},
         "views": [(p, html_tables.table1_view(rows, p, {})) for p in ("msgnn", "matlab-y")]}
    page = site._template().render(
        banner="b", tables=[t], protocols=["msgnn", "matlab-y"], selected="matlab-y", paper_protocol="msgnn",
        lpips=["LPIPS ran (1 run)."], reports="reports", figures=[], missing=[], viewers=[], runs=[],
        provenance=[], fingerprints=[], official=html_tables.official_view(None))
    assert '<div class="view hidden" data-protocol="msgnn">' in page
    assert '<div class="view" data-protocol="matlab-y">' in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert page.count('<tr data-row="') == len(rows) and "LPIPS ran (1 run)." in page
    assert page.count("+13.00 dB vs input") == 2  # PReNet and its copy <b>x</b>, 27 - 14 dB (msgnn view)


def test_ablation_view_marks_within_the_table():
    rows = [{"cell": "M1", "variant": "a", "protocol": "msgnn", "psnr:msgnn": "20", "ssim:msgnn": "0.5",
             "paper_psnr": "29.161", "paper_ssim": "0.9111", "delta_psnr": "-9.161", "params": "1000"},
            {"cell": "M2", "variant": "b", "protocol": "msgnn", "psnr:msgnn": "21", "ssim:msgnn": "0.4",
             "paper_psnr": "29.6", "paper_ssim": "0.91", "delta_psnr": "", "params": "2000"}]
    v = html_tables.ablation_view(rows, "msgnn")
    a, b = (r["c"] for r in v["rows"])
    assert b["psnr"]["mark"] == "best" and a["psnr"]["mark"] == "second" and a["ssim"]["mark"] == "best"
    assert a["paper"]["delta_psnr"] == "-9.16" and b["paper"]["delta_psnr"] == "inferred, no Δ"
    assert v["rows"][0]["params"] == "1,000"


def test_lpips_line_says_whether_it_ran():
    run = lambda k, st: figures.Run(k, "m", "d", {"lpips_status": st})  # noqa: E731
    assert site.lpips_lines([run("a", "ok")]) == ["LPIPS ran (1 run)."]
    lines = site.lpips_lines([run("a", "ok"), run("b", "no weights")])
    assert lines == ["LPIPS did not run (1 run: b): no weights", "LPIPS ran (1 run: a)."]


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


# --- issue 22: Table 1 provenance and the official-checkpoint section ---------------------------------

def test_page_shows_table1_provenance_per_protocol(site_tree):
    page = (site_tree / "reports/index.html").read_text()
    assert page.count('data-table="table1-provenance"') >= 1
    one = page.split('data-table="table1-provenance"')[1].split("</table>")[0]
    assert one.count("<tr data-model=") == 45  # every cell of the paper's Table 1, run here or not
    assert "<th>own paper</th><th>independent retraining</th>" in page
    # PReNet / Rain1400: MSGNN's value, its authors' (Y channel) and derain-toolbox's RGB retraining
    row = one.split('data-model="prenet" data-dataset="rain1400">')[1].split("</tr>")[0]
    assert "30.608 / 0.9181" in row and "32.60 / 0.946 (prenet; prenet_readme)" in row
    assert "30.21 / 0.913 (msgnn; derain_toolbox)" in row and "not run in this profile" in row
    assert "`" not in one  # Markdown quoting stays out of the page
    assert "d73d865cb5e60d5bffc9a14a610146ee3e733da0" in page and "Not verified:" in page
    assert "nan" not in re.sub(r"provenance|nanometre", "", one.lower())


def test_official_section_without_runs_says_so(site_tree):
    page = (site_tree / "reports/index.html").read_text()
    sec = page.split('<section id="official">')[1].split("</section>")[0]
    assert "not run in this profile: there is no reports/official.csv" in sec and "<table" not in sec


def test_official_section_shows_published_ours_delta_and_msgnn(site_tree, tmp_path, monkeypatch):
    """reports/official.csv as the official_report stage writes it (one measured row, the rest with why)."""
    from benchmark.core import io
    from benchmark.reporting import official

    work = tmp_path / "w"
    shutil.copytree(site_tree, work, ignore=shutil.ignore_patterns("mlflow.db", "mlruns"))
    monkeypatch.chdir(work)
    runs = work / "runs/official"
    io.write_json(runs / "prenet6-rain100h--rain100h/metrics.json",
                  {"n_images": 100, "protocols": {"prenet": {"psnr": 29.465, "ssim": 0.8991},
                                                  "msgnn": {"psnr": 28.1, "ssim": 0.88}}})
    official.write(work / "reports", official.rows(runs, {"prenet6-rain100h--rain100h"}), "paper")
    assert site.main(["--reference", str(REPO / "reports/paper_reference.yaml")]) == 0
    sec = (work / "reports/index.html").read_text().split('<section id="official">')[1].split("</section>")[0]
    row = sec.split('data-checkpoint="prenet6-rain100h">')[1].split("</tr>")[0]
    assert "29.46 / 0.899 (prenet)" in row and "29.465 / 0.8991" in row and "+0.005 / +0.0001" in row
    assert "28.100 / 0.8800" in row and "<td>100</td>" in row and "measured" in row
    assert "No official checkpoint was run" not in sec
    assert 'data-checkpoint="rcdnet-rain100l"' in sec  # unmeasured rows stay, with their status
    assert "nan" not in sec.lower() and "None" not in sec
    assert "csdwren/PReNet README.md at 6d908d1" in sec


def test_official_view_with_nothing_measured_says_so():
    rows = [{"checkpoint": "a", "test_set": "rain100h", "published_psnr": "29.46", "published_ssim": "0.899",
             "published_protocol": "prenet", "ours_psnr": "", "ours_ssim": "", "delta_psnr": "", "delta_ssim": "",
             "msgnn_psnr": "", "msgnn_ssim": "", "n_images": "", "subset": "",
             "status": "not in this profile's official_runs", "published_source": "s"}]
    v = html_tables.official_view(rows)
    assert v["note"].startswith("No official checkpoint was run in this profile")
    r = v["rows"][0]
    shown = (r["published"], r["ours"], r["delta"], r["msgnn"], r["n"])
    assert shown == ("29.46 / 0.899 (prenet)", "–", "–", "–", "–")
