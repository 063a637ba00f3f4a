"""The ``official`` and ``official_report`` stages: an official checkpoint scored under every protocol
beside its published number (real PReNet file, small crops of the real Rain100L pairs), the profiles'
official entries consistent with the checkpoint registry, and the report's rows."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from benchmark.core import config
from benchmark.evaluation import protocols
from benchmark.reporting import official as report
from benchmark.reporting import provenance
from benchmark.weights import registry
from pipelines import official, official_report

from .conftest import REPO


def test_every_profile_entry_is_a_published_pair_of_the_registry(repo_params):
    reg = registry.load_registry()
    n = 0
    for name, prof in repo_params["profiles"].items():
        for key, e in (prof.get("official") or {}).items():
            spec = reg[e["checkpoint"]]
            assert spec.model == e["model"], key
            assert registry.published_on(spec, e["dataset"]) is not None, key
            assert e["dataset"] in repo_params["datasets"], key
            n += 1
    assert n >= 16
    assert not repo_params["profiles"]["quick"].get("official")  # outside the quick run's budget


def test_config_rejects_a_mismatched_official_axis(tmp_path, repo_params):
    p = dict(repo_params, official_runs={"prn6-rain100h--rain100h": {"model": "prenet", "checkpoint": "prn6-rain100h",
                                                                      "dataset": "rain100h"}})
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(p))
    with pytest.raises(config.ConfigError, match="official_runs does not match"):
        config.load_params(f)


@pytest.fixture
def small_rain100l(shared, tmp_path):
    """Three real Rain100L pairs cut to 48x64 (PReNet runs at any size; keeps the test fast)."""
    root = tmp_path / "data" / "rain100l" / "test"
    for sub in ("input", "target"):
        (root / sub).mkdir(parents=True)
        for i in (1, 2, 3):
            img = Image.open(shared / "data" / "Rain100L_test" / sub / f"{i}.png").convert("RGB")
            img.crop((100, 100, 164, 148)).save(root / sub / f"{i}.png")
    return tmp_path / "data" / "rain100l"


def _weights(shared, tmp_path, name):
    spec = registry.get(name)
    dest = spec.file_path(tmp_path / "weights")
    dest.parent.mkdir(parents=True)
    dest.write_bytes((shared / "official_weights" / "prenet" / spec.path).read_bytes())
    return tmp_path / "weights"


def test_official_stage_scores_every_protocol_and_the_report_shows_delta(shared, tmp_path, small_rain100l, capsys):
    w = _weights(shared, tmp_path, "prn6-r-rain100l")
    out = tmp_path / "runs" / "official" / "prn6-r-rain100l--rain100l"
    rc = official.main(["--model", "prenet", "--checkpoint", "prn6-r-rain100l", "--on", "rain100l", "--data",
                        str(small_rain100l), "--weights", str(w), "--out", str(out), "--device", "cpu"])
    assert rc == 0
    line = capsys.readouterr().out
    assert "published 36.11/0.9730 (prenet)" in line and "msgnn protocol" in line
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_images"] == 3 and set(m["protocols"]) == set(protocols.ALL)
    assert m["published"]["protocol"] == "prenet" and m["published"]["psnr"] == 36.11
    assert all(np.isfinite(v["psnr"]) and 0 < v["ssim"] <= 1 for v in m["protocols"].values())
    assert (out / "per_image.csv").read_text().count("\n") == 4
    rows = report.rows(tmp_path / "runs" / "official", {"prn6-r-rain100l--rain100l"})
    row = next(r for r in rows if r["checkpoint"] == "prn6-r-rain100l" and r["test_set"] == "rain100l")
    assert row["status"] == "measured" and row["n_images"] == 3
    assert row["delta_psnr"] == pytest.approx(m["protocols"]["prenet"]["psnr"] - 36.11)
    assert row["msgnn_psnr"] == pytest.approx(m["protocols"]["msgnn"]["psnr"])
    other = next(r for r in rows if r["checkpoint"] == "spanet-spa")
    assert other["ours_psnr"] is None and "not registered" in other["status"]  # SPA: no datasets.yaml key
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"profile": "paper", "official_runs": {"prn6-r-rain100l--rain100l": {}}}))
    assert official_report.main(["--params", str(params), "--runs", str(tmp_path / "runs" / "official"),
                                 "--out", str(tmp_path / "reports")]) == 0
    md = (tmp_path / "reports" / "official.md").read_text()
    assert "| prn6-r-rain100l | rain100l | 36.11 / 0.973 (`prenet`) |" in md
    assert (tmp_path / "reports" / "official.csv").read_text().count("\n") == len(rows) + 1
    assert r"\begin{tabular}" in (tmp_path / "reports" / "official.tex").read_text()


@pytest.mark.parametrize("args, message", [
    (["--model", "spanet", "--checkpoint", "prn6-r-rain100l", "--on", "rain100l"], "is a prenet checkpoint"),
    (["--model", "prenet", "--checkpoint", "prn6-r-rain100l", "--on", "rain100h"], "no published number on"),
    (["--model", "prenet", "--checkpoint", "nope", "--on", "rain100l"], "unknown checkpoint"),
])
def test_official_stage_refuses_pairs_the_authors_did_not_publish(tmp_path, capsys, args, message):
    assert official.main([*args, "--weights", str(tmp_path)]) == 1
    assert message in capsys.readouterr().err


def test_missing_weights_name_the_download_command(tmp_path, capsys):
    assert official.main(["--model", "prenet", "--checkpoint", "prn6-r-rain100l", "--on", "rain100l",
                          "--weights", str(tmp_path)]) == 1
    assert "msgnn-bench weights download prn6-r-rain100l" in capsys.readouterr().err


def test_report_readme_keeps_the_folder():
    assert (REPO / "runs" / "official" / "README.md").is_file()


def _docs_official_rows() -> list[list[str]]:
    """The rows of docs/models.md's official-checkpoint table (those naming a checkpoint), as cells."""
    text = (REPO / "docs" / "models.md").read_text()
    section = text.split("### Official checkpoints", 1)[1].split("\n### ", 1)[0]
    return [[c.strip() for c in ln.strip().strip("|").split("|")]
            for ln in section.splitlines() if ln.startswith("| `")]


def test_docs_table_has_every_published_pair_with_its_number_and_delta():
    """docs/models.md states, for every published (checkpoint, test set) pair of the registry, the
    published number as the registry records it (one source) and either our measurement with Δ =
    ours - published as printed, or why it was not run."""
    reg = registry.load_registry()
    rows = _docs_official_rows()
    seen = set()
    for ck, ds, _images, pub_txt, ours_txt, delta_txt, *_ in rows:
        ck, ds = ck.strip("`"), ds.strip("`")
        spec = reg[ck]
        pub = registry.published_on(spec, ds)
        assert pub is not None, (ck, ds)
        assert (ck, ds) not in seen, (ck, ds)
        seen.add((ck, ds))
        assert pub_txt == f"{provenance.printed(pub.psnr, pub.ssim)} (`{pub.protocol}`)", (ck, ds, pub_txt)
        if ours_txt.startswith("not run"):
            assert delta_txt == "–", (ck, ds)
            continue
        ours_p, ours_s = (float(v) for v in ours_txt.split(" / "))
        d_p, d_s = (float(v.replace("−", "-").replace(" dB", "")) for v in delta_txt.split(" / "))
        # the printed delta is the difference of the unrounded mean (3 decimals) and the published number
        assert d_p == pytest.approx(ours_p - pub.psnr, abs=0.0015), (ck, ds)
        assert d_s == pytest.approx(ours_s - pub.ssim, abs=0.00015), (ck, ds)
    published = {(n, p.test_set) for n, s in reg.items() for p in s.published}
    assert seen == published, sorted(published ^ seen)
