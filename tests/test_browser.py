"""reports/index.html in a real browser (headless Chromium over the DevTools protocol).

Needs Debian's ``chromium`` (``apt-get install -y chromium``; ``$CHROMIUM`` names another binary).
Without it the test FAILS saying so, unless ``MSGNN_ALLOW_NO_BROWSER=1`` explicitly allows a skip.
The full-page screenshot goes to ``$MSGNN_SCREENSHOTS`` (a folder) when set, else the test's tmp
folder; its path is printed.
"""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

from .helpers import cdp

READ_PAGE = """(() => ({
  cells: Array.from(document.querySelectorAll('table[data-source="table1.csv"] tbody tr')).map(tr =>
    [Number(tr.dataset.row), Object.fromEntries(Array.from(tr.querySelectorAll('td[data-col]')).map(td =>
      [td.dataset.col, td.querySelector('.v').textContent]))]),
  models: Array.from(document.querySelectorAll('table[data-source="table1.csv"] td[data-col="model"] .v'))
    .map(e => e.textContent),
  images: Array.from(document.images).map(i => ({src: i.getAttribute('src'), complete: i.complete,
                                                 width: i.naturalWidth})),
  best: Array.from(document.querySelectorAll('td.best')).length,
}))()"""

# Charts (training panels, PSNR vs parameters): the whole image in view, right axis labels included.
READ_CHARTS = """Array.from(document.querySelectorAll('figure img.fit')).map(i => { const f = i.closest('figure');
    const r = i.getBoundingClientRect(), fr = f.getBoundingClientRect();
    return {src: i.getAttribute('src'), right: r.right, figRight: fr.right, scroll: f.scrollWidth - f.clientWidth,
            ratio: r.width / r.height, natural: i.naturalWidth / i.naturalHeight, width: r.width,
            naturalWidth: i.naturalWidth}; })"""

# Table 1 as a reader sees it: the one visible paper-layout table (a hidden one has no layout box).
READ_TABLE1 = """(() => {
  const shown = Array.from(document.querySelectorAll('table.paper-table[data-table="table1"]'))
    .filter(t => t.getClientRects().length > 0);
  if (shown.length !== 1) return {count: shown.length};
  const t = shown[0];
  return {count: 1, protocol: t.dataset.protocol,
    datasets: Array.from(t.querySelectorAll('thead th.group')).map(th => th.dataset.dataset),
    rows: Array.from(t.querySelectorAll('tbody tr')).map(tr => ({
      model: tr.dataset.model, name: tr.querySelector('th').textContent,
      cells: Array.from(tr.querySelectorAll('td')).map(td => ({metric: td.dataset.metric || null,
        text: td.querySelector('.v') ? td.querySelector('.v').textContent : td.textContent,
        mark: td.classList.contains('best') ? 'best' : td.classList.contains('second') ? 'second' : '',
        below: !!td.querySelector('.flag') && td.classList.contains('below'), span: td.colSpan}))}))};
})()"""

# the visible Table 1 provenance table (MSGNN paper | own paper | independent retraining | ours)
READ_PROV = """(() => {
  const shown = Array.from(document.querySelectorAll('table.provenance')).filter(t => t.offsetParent !== null);
  const t = shown[0];
  return {count: shown.length, protocol: t.dataset.protocol,
    heads: Array.from(t.querySelectorAll('thead th')).map(th => th.textContent),
    rows: t.querySelectorAll('tbody tr').length};
})()"""
SWITCH = """(p => { const s = document.getElementById('protocol'); s.value = p;
  s.dispatchEvent(new Event('change')); return s.value; })"""

SLIDE = """(() => { const ba = document.querySelector('.ba'); const r = ba.querySelector('input[type=range]');
  r.value = 20; r.dispatchEvent(new Event('input'));
  const s = ba.querySelector('select'); s.selectedIndex = 0; s.dispatchEvent(new Event('change'));
  const a = ba.querySelector('.ba-after');
  return new Promise(ok => { const done = () => ok({clip: a.style.clipPath, src: a.getAttribute('src'),
                                                     chosen: s.value, width: a.naturalWidth});
                             a.complete ? setTimeout(done, 50) : a.addEventListener('load', done); }); })()"""


def _chromium() -> str:
    exe = cdp.find_chromium()
    if exe:
        return exe
    msg = ("Chromium not found (looked for $CHROMIUM, chromium, chromium-browser, google-chrome): install "
           "Debian's package with `apt-get install -y chromium`")
    if os.environ.get("MSGNN_ALLOW_NO_BROWSER") == "1":
        pytest.skip(msg + " (skipped: MSGNN_ALLOW_NO_BROWSER=1)")
    pytest.fail(msg + "; set MSGNN_ALLOW_NO_BROWSER=1 to skip this test deliberately", pytrace=False)


def _display(col: str, raw: str) -> float:
    return float(raw.replace(",", ""))


def test_report_page_in_headless_chromium(site_tree, tmp_path):
    exe = _chromium()
    browser = cdp.Browser(exe, tmp_path / "profile")
    try:
        for domain in ("Runtime", "Log", "Page"):
            browser.call(f"{domain}.enable")
        browser.call("Page.navigate", url=(site_tree / "reports/index.html").as_uri())
        browser.wait_event("Page.loadEventFired")
        page = browser.evaluate(READ_PAGE)
        shown = {"msgnn": browser.evaluate(READ_TABLE1)}
        prov = {"msgnn": browser.evaluate(READ_PROV)}
        for proto in ("matlab-y", "prenet"):
            assert browser.evaluate(f"{SWITCH}({proto!r})") == proto
            shown[proto] = browser.evaluate(READ_TABLE1)
            prov[proto] = browser.evaluate(READ_PROV)
        slid = browser.evaluate(SLIDE)
        charts = {"wide": browser.evaluate(READ_CHARTS)}
        # a narrow window (a laptop split screen): charts wider than the page scale down, never cut off
        browser.call("Emulation.setDeviceMetricsOverride", width=700, height=1000, deviceScaleFactor=1, mobile=False)
        charts["narrow"] = browser.evaluate(READ_CHARTS)
        browser.call("Emulation.clearDeviceMetricsOverride")
        shot_dir = Path(os.environ.get("MSGNN_SCREENSHOTS") or tmp_path)
        shot_dir.mkdir(parents=True, exist_ok=True)
        browser.screenshot(shot_dir / "report_index.png")
        errors = browser.errors()
    finally:
        browser.close()
    print(f"screenshot: {shot_dir / 'report_index.png'}")

    with open(site_tree / "reports/table1.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(i for i, _ in page["cells"]) == list(range(len(rows)))  # every CSV row, once
    _check_table1(rows, shown)
    for proto, p in prov.items():  # one provenance table visible, the chosen protocol's, every paper cell
        assert (p["count"], p["protocol"], p["rows"]) == (1, proto, 45), (proto, p)
        assert p["heads"][2:6] == ["MSGNN paper (msgnn)", "own paper", "independent retraining", f"ours ({proto})"]
    assert page["models"] == [r["model"] for r in rows]  # the full CSV: its rows in file order
    for i, shown in page["cells"]:
        row = rows[i]
        assert set(shown) == set(row)
        for col, text in shown.items():
            raw = row[col]
            if col.startswith(("psnr", "ssim", "lpips", "params", "n_images")) and raw:
                digits = len(text.split(".")[1]) if "." in text else 0
                assert abs(_display(col, text) - float(raw)) <= 0.5 * 10 ** -digits, (col, text, raw)
            else:
                assert text == raw, (col, text, raw)  # strings, hostile ones included, shown verbatim
    assert page["best"] > 0
    assert len(page["images"]) >= 6
    for img in page["images"]:
        assert img["complete"] and img["width"] > 0, f"image did not load: {img['src']}"
    for width, shown in charts.items():
        assert {c["src"] for c in shown} >= {"site/training_curves.png", "site/psnr_vs_params.png"}
        for c in shown:
            assert c["right"] <= c["figRight"] + 0.5 and c["scroll"] == 0, (width, c)  # nothing cut off
            assert abs(c["ratio"] - c["natural"]) < 0.01, (width, c)  # scaled, not squeezed
    assert any(c["width"] < c["naturalWidth"] for c in charts["narrow"])  # the narrow case did scale one down
    assert slid["clip"] == "inset(0px 0px 0px 20%)" and slid["src"] == slid["chosen"] and slid["width"] > 0
    assert errors == [], errors
    png = (shot_dir / "report_index.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20000


def _check_table1(rows: list[dict], shown: dict) -> None:
    """Table 1 is methods × datasets, and its numbers, marks and shading are the selected protocol's."""
    from benchmark.core.registry import display_name, paper_rank

    models = sorted({r["model"] for r in rows}, key=lambda m: (paper_rank(m), m))
    columns = list(dict.fromkeys((r["dataset"], r["trained_on"]) for r in rows))
    by = {(r["model"], r["dataset"], r["trained_on"]): r for r in rows}
    for proto, t in shown.items():
        assert t["count"] == 1 and t["protocol"] == proto  # exactly one Table 1 visible: the chosen protocol's
        assert [r["model"] for r in t["rows"]] == models  # methods down, in the paper's order
        assert [r["name"] for r in t["rows"]] == [display_name(m) for m in models]
        assert t["datasets"] == [d for d, _ in columns]  # datasets across
        for m, tr in zip(models, t["rows"]):
            cells, k = tr["cells"], 0
            for d, tn in columns:
                r = by.get((m, d, tn))
                if r is None:  # a missing combination says why, never "nan"
                    assert cells[k]["text"] == "not run in this profile"
                    k += 1
                    continue
                ps, ss = cells[k], cells[k + 1]
                assert (ps["metric"], ss["metric"]) == ("psnr", "ssim")
                assert ps["text"] == f"{float(r[f'psnr:{proto}']):.2f}", (proto, m, ps, r[f"psnr:{proto}"])
                assert ss["text"] == f"{float(r[f'ssim:{proto}']):.4f}"
                # marks: best / second of this protocol's PSNR in this column (rainy input excluded)
                vals = sorted({float(by[(o, d, tn)][f"psnr:{proto}"]) for o in models
                               if o != "input" and (o, d, tn) in by}, reverse=True)
                v = float(r[f"psnr:{proto}"])
                want = "" if m == "input" else "best" if v == vals[0] else "second" if len(vals) > 1 and v == vals[1] else ""
                assert ps["mark"] == want, (proto, m, ps)
                base = by.get(("input", d, tn))
                assert ps["below"] == (m != "input" and base is not None and v < float(base[f"psnr:{proto}"]))
                k += 2
    texts = {p: [c["text"] for r in t["rows"] for c in r["cells"]] for p, t in shown.items()}
    assert texts["msgnn"] != texts["matlab-y"] or texts["msgnn"] != texts["prenet"], "switching changed nothing"


def test_missing_browser_is_not_a_silent_pass(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CHROMIUM", raising=False)
    monkeypatch.delenv("MSGNN_ALLOW_NO_BROWSER", raising=False)
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium"):
        _chromium()
    monkeypatch.setenv("MSGNN_ALLOW_NO_BROWSER", "1")
    with pytest.raises(pytest.skip.Exception, match="MSGNN_ALLOW_NO_BROWSER=1"):
        _chromium()
    assert shutil.which("chromium") is None


# Every chart of a `dvc plots show` page, read back from its SVG (the templates ask vega-embed for SVG).
READ_PLOTS = """new Promise(ok => { const t0 = Date.now(); const want = %d; const poll = () => {
  const charts = Array.from(document.querySelectorAll('div[id]')).filter(d => d.querySelector('svg.marks'));
  if (charts.length < want && Date.now() - t0 < 30000) return setTimeout(poll, 100);
  ok(Object.fromEntries(charts.map(d => [d.id, {
    lines: Array.from(d.querySelectorAll('g.mark-line.role-mark path')).map(p => p.getAttribute('d') || ''),
    points: Array.from(d.querySelectorAll('g.mark-symbol.role-mark path')).map(p => p.getAttribute('transform')),
    height: Number(d.querySelector('svg.marks').getAttribute('height'))}])));
  }; poll(); })"""


@pytest.fixture(scope="session")
def plots_template(tmp_path_factory) -> Path:
    """.dvc/plots.html as `msgnn-bench plots-page` builds it (npm pack of the pinned Vega packages)."""
    from benchmark.tools import plots_page

    if shutil.which("npm") is None:
        pytest.fail("npm not found: `msgnn-bench plots-page` packs Vega from the npm registry (Node.js/npm "
                    "from Debian or nodejs.org)", pytrace=False)
    return plots_page.build(tmp_path_factory.mktemp("plots_page") / "plots.html")


def test_dvc_plots_show_draws_offline(site_tree, plots_template, tmp_path):
    """Plain `dvc plots show` with the repo's .dvc/config draws every plot with networking off, and a
    missing validation value is a gap in its line, never a point at the floor."""
    import subprocess
    import sys

    import yaml

    exe = _chromium()
    repo = Path(__file__).resolve().parents[1]
    work = tmp_path / "p"
    shutil.copytree(site_tree / "reports/site/plots", work / "reports/site/plots")
    shutil.copytree(repo / "pipelines/plots", work / "pipelines/plots")
    (work / "dvc.yaml").write_text(yaml.safe_dump({"plots": yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]}))
    dvc = str(Path(sys.executable).with_name("dvc"))
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=work, check=True)
    shutil.copyfile(repo / ".dvc/config", work / ".dvc/config")
    shutil.copyfile(plots_template, work / ".dvc/plots.html")

    # the site stage writes validated steps only (no blank cells), every one of them
    val_csv = work / "reports/site/plots/validation.csv"
    with open(val_csv, newline="") as fh:
        val = list(csv.DictReader(fh))
    logged = []
    for log in sorted((site_tree / "runs/train").glob("*/train_log.csv")):
        with open(log, newline="") as fh:
            logged += [(log.parent.name, r["step"]) for r in csv.DictReader(fh) if r.get("val_psnr_y")]
    assert sorted((r["run"], r["step"]) for r in val) == sorted(logged) and all(r["val_psnr_y"] for r in val)
    runs = sorted({r["run"] for r in val})
    # a run whose middle validation is missing (a blank cell, as other tools write it)
    with open(val_csv, "a", newline="") as fh:
        csv.writer(fh).writerows([["zz-gap", 5, 20.0], ["zz-gap", 10, ""], ["zz-gap", 15, 22.0], ["zz-gap", 20, 23.0]])

    r = subprocess.run([dvc, "plots", "show", "-o", "out"], cwd=work, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    page = (work / "out/index.html").read_text()
    assert "<script src" not in page and "cdn." not in page  # nothing to fetch: the libraries are inline

    # no network: every proxied request (loopback included) goes to a closed port
    browser = cdp.Browser(exe, tmp_path / "profile", extra_args=("--proxy-server=127.0.0.1:9",
                                                                  "--proxy-bypass-list=<-loopback>"))
    try:
        for domain in ("Runtime", "Log", "Page", "Network"):
            browser.call(f"{domain}.enable")
        browser.call("Page.navigate", url=(work / "out/index.html").as_uri())
        browser.wait_event("Page.loadEventFired")
        charts = browser.evaluate(READ_PLOTS % 3)
        errors = browser.errors()
        requests = [e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"]
    finally:
        browser.close()
    assert errors == [], errors
    assert requests and all(u.startswith(("file:", "data:", "blob:")) for u in requests), requests
    assert set(charts) == {"training_loss", "validation_psnr", "per_image_psnr"}, list(charts)
    n_train = len(list((site_tree / "runs/train").glob("*/train_log.csv")))
    assert len(charts["training_loss"]["lines"]) == n_train and all(charts["training_loss"]["lines"])
    assert len(charts["per_image_psnr"]["points"]) > 0
    v = charts["validation_psnr"]
    assert len(v["lines"]) == len(runs) + 1
    subpaths = sorted(d.count("M") for d in v["lines"])
    assert subpaths == [1] * len(runs) + [2], v["lines"]  # the gap run's line is broken in two, the rest whole
    assert len(v["points"]) == len(val) + 3  # the blank cell draws no point (not one at 0)


def test_plots_page_refuses_a_tarball_that_is_not_the_pinned_one(tmp_path, capsys):
    """`msgnn-bench plots-page --from DIR`: a damaged tarball is one error line naming it, and no template
    (not even a partial one) is written; the intact set builds a template DVC can fill."""
    from benchmark.tools import cli, plots_page

    if shutil.which("npm") is None:
        pytest.fail("npm not found (Node.js/npm is needed to pack the pinned Vega packages)", pytrace=False)
    src = tmp_path / "tgz"
    src.mkdir()
    plots_page.fetch(plots_page.PACKAGES, src)
    out = tmp_path / "plots.html"
    assert cli.main(["plots-page", "--from", str(src), "--out", str(out)]) == 0
    page = out.read_text()
    assert page.count("{plot_divs}") == 1 and "{scripts}" not in page and "<script src" not in page
    assert all(f"{p.name} {p.version}" in page for p in plots_page.PACKAGES)
    assert page.count("Redistribution and use in source and binary forms") == 3  # each BSD-3 licence kept
    capsys.readouterr()
    out.unlink()
    bad = src / plots_page.PACKAGES[2].tarball
    bad.write_bytes(bad.read_bytes() + b"\0")
    assert cli.main(["plots-page", "--from", str(src), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and "differs from the pinned" in err
    assert not out.exists() and list(tmp_path.glob("plots.html*")) == []
