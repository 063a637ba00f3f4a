"""The ablation study as data: variants, parameter counts, validation, and one real run per kind."""
from __future__ import annotations

import copy
import json

import pytest
import yaml

from benchmark.core import ablations, config, runs
from benchmark.core.contract import count_params
from benchmark.core.registry import build_model
from benchmark.tools import cli
from pipelines import prepare, replicate, report

from .conftest import REPO


def _counts(repo_params) -> dict[str, int]:
    return {r["name"]: r["params_total"] for r in cli.ablation_listing(repo_params)}


def test_variant_parameter_counts(repo_params):
    c = _counts(repo_params)
    assert c["default"] == 2061579 and c["m5"] == 1322115  # method as described; M5 = CT, no graph
    for n in range(1, 9):  # Fig. 7: N = 1..8
        assert c["default" if n == 4 else f"n{n}"] == 1059051 + (n - 1) * 334176
    # the paper's Fig. 7 count (1.55M at N=2) is the exemplar-off 5x5 family: the reference file's exact
    # counts of that family are what the builder gives
    family = yaml.safe_load((REPO / "reports/paper_reference.yaml").read_text())["fig7"]["family_params"]
    for cell, count in family.items():
        model = build_model("msgnn", n_subnets=int(cell[1:]), exemplar=False, fusion="official")
        assert count_params(model)["total"] == count, cell
    # Fig. 9 changes one thing: the exemplar branch goes, the 1x1 fuse stays (not the official 5x5 pairing)
    assert c["exemplar-off"] == 1968169 != 2459689
    cells = {t: [r["cells"][t] for r in cli.ablation_listing(repo_params, counts=False) if t in r["cells"]]
             for t in ablations.TABLES}
    assert cells["table2"] == ["M6", "M1", "M2", "M3", "M4", "M5"]
    assert sorted(cells["table3"]) == ["s1-p48", "s1-p64", "s2-p48", "s2-p64", "s3-p48", "s3-p64"]
    assert cells["table4"] == ["l3", "l5", "l7", "l5-s3", "l7-s3"] and cells["table5"] == ["k5", "k3", "k7"]
    assert sorted(cells["fig7"]) == [f"N{n}" for n in range(1, 9)]


def test_profiles_decide_the_grid(repo_params):
    prof = repo_params["profiles"]
    assert prof["paper"]["ablation"]["variants"] == list(repo_params["ablations"])  # the full grid
    assert len(prof["ci"]["ablation"]["variants"]) == 2
    quick = prof["quick"]["ablation"]["variants"]
    ref = yaml.safe_load((REPO / "reports/paper_reference.yaml").read_text())
    for table in ("table2", "table3", "table4", "table5", "fig7"):  # every cell the paper prints, in quick
        printed = set((ref[table].get("values") or {})) | set((ref[table].get("params_m") or {}))
        need = {n for n, v in repo_params["ablations"].items() if v["cells"].get(table) in printed}
        assert need and need <= set(quick), table


def test_resolve_scales_patch_and_sets_seed(repo_params):
    cfg = ablations.resolve("s1-p48", 3, repo_params)
    scale = repo_params["profiles"]["quick"]["ablation"]["patch_scale"]
    assert cfg.model_args == {"stride": 1} and cfg.train.seed == 3 and cfg.train.patch == round(48 * scale)
    assert ablations.resolve("default", 0, repo_params).train.patch == round(64 * scale)
    assert runs.run_key("msgnn", "rain200h", 1, "m1") == "msgnn.m1-rain200h-s1"


@pytest.mark.parametrize("edit, needle", [
    (lambda p: p["ablations"]["m1"].update(cells={"table9": "x"}), "cells must name"),
    (lambda p: p.update(ablation_variants=["default"]), "do not match profile"),
    (lambda p: p.update(ablation_groups=["default"]), "do not match profile"),
    (lambda p: p["profiles"]["quick"]["ablation"].update(stages="each"), "stages must be one of"),
    (lambda p: p.update(seeds=[0, 1]), "do not match profile"),
    (lambda p: (p.update(seeds=[0, 1]), p["profiles"]["quick"].update(seeds=[0, 1])), "extra_seeds must be"),
])
def test_bad_ablation_params_are_named(edited_params, edit, needle):
    with pytest.raises(config.ConfigError, match=needle):
        config.load_params(edited_params(edit))


def test_unknown_switch_is_named(repo_params):
    p = copy.deepcopy(repo_params)
    p["ablations"]["m1"]["args"]["strid"] = 2
    with pytest.raises(config.ConfigError, match=r"ablations.m1.args: unknown MSGNN switch\(es\) \['strid'\]"):
        ablations.resolve("m1", 0, p)


def test_groups_follow_the_profile(repo_params):
    prof = repo_params["profiles"]
    assert ablations.groups(prof["quick"]["ablation"]) == ["all"]  # one process for the whole quick grid
    assert ablations.groups(prof["paper"]["ablation"]) == prof["paper"]["ablation"]["variants"]
    assert ablations.group_variants("all", repo_params) == repo_params["ablation_variants"]
    assert ablations.group_variants("m1", repo_params) == ["m1"]
    with pytest.raises(config.ConfigError, match="ablation group 'x'"):
        ablations.group_variants("x", repo_params)


def test_profile_command_writes_the_groups(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    assert cli.main(["profile", "paper", "--params", str(path)]) == 0
    raw = config.load_params(path)
    assert raw["ablation_groups"] == raw["profiles"]["paper"]["ablation"]["variants"]
    assert cli.main(["profile", "quick", "--params", str(path)]) == 0
    assert config.load_params(path)["ablation_groups"] == ["all"]
    path.write_text("\n".join(x for x in path.read_text().splitlines() if not x.startswith("ablation_groups:")))
    assert cli.main(["profile", "paper", "--params", str(path)]) == 0  # an older params.yaml gains the axis
    assert config.load_params(path)["ablation_groups"][:2] == ["default", "m1"]


def test_cli_ablations_json(capsys):
    assert cli.main(["ablations", "--json", "--params", str(REPO / "params.yaml")]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["m5"]["params_total"] == 1322115 and rows["m5"]["args"] == {"graph": False}
    assert rows["default"]["in_profile"] and not rows["exemplar-off"]["in_profile"]


@pytest.fixture
def ablation_params(tiny_params):
    """ci profile with two deliberately tiny variants (variants are data), one with the graph + exemplar."""
    p = tiny_params
    p["tracking"]["enabled"] = False  # tracking is covered by test_pipeline; here it would only cost time
    p["ablations"] = {
        "tiny": {"args": {"n_subnets": 1, "blocks": 1, "graph": False}, "cells": {"table2": "M6", "fig7": "N4"}},
        "tiny-graph": {"args": {"n_subnets": 1, "blocks": 1, "window": 8}, "patch": 48, "cells": {"table3": "s3-p48"}},
    }
    p["profiles"]["ci"]["ablation"].update(variants=["tiny", "tiny-graph"], train={"iters": 1, "batch": 1},
                                           eval_images=1)
    p["ablation_variants"] = ["tiny", "tiny-graph"]
    return p


def test_variant_and_seed_runs_reach_the_tables(tmp_path, monkeypatch, ablation_params):
    monkeypatch.chdir(tmp_path)
    prepare.prepare("rain-synth", ablation_params)
    stale = tmp_path / "runs/train/ablation-all-s0/msgnn.gone-rain-synth-s0"  # a variant since removed
    stale.mkdir(parents=True)
    summary = replicate.run_group("all", 0, params=ablation_params, progress=False)  # stage ablation@all-0
    assert not stale.exists()
    assert json.loads((tmp_path / "runs/eval/ablation-all-s0.json").read_text()) == summary
    for v in ("tiny", "tiny-graph"):
        key = f"msgnn.{v}-rain-synth-s0"
        res = json.loads((tmp_path / f"runs/eval/ablation-all-s0/{key}/metrics.json").read_text())
        assert res["variant"] == v and res["results"]["rain-synth"]["n_images"] == 1
        assert "psnr:msgnn" in res["results"]["rain-synth"]
        assert summary["variants"][v]["results"]["rain-synth"]["psnr:msgnn"] == res["results"]["rain-synth"]["psnr:msgnn"]
        assert (tmp_path / f"runs/train/ablation-all-s0/{key}/model.pt").is_file()
    cfg = json.loads(json.dumps(config.resolve("prenet", "rain-synth", ablation_params).to_dict()))
    assert cfg["train"]["seed"] == 0
    res = replicate.run_seed("prenet", "rain-synth", 1, params=ablation_params, progress=False)
    assert res["key"] == "prenet-rain-synth-s1" and res["seed"] == 1
    import yaml

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(ablation_params))
    assert report.main(["--reference", str(REPO / "reports/paper_reference.yaml")]) == 0
    t2 = (tmp_path / "reports/table2.md").read_text()
    assert "| M6 | tiny |" in t2 and "[29.627 / 0.9178" in t2
    assert "| s3-p48 | tiny-graph |" in (tmp_path / "reports/table3.md").read_text()
    assert "PReNet" in (tmp_path / "reports/table1.md").read_text()
    assert (tmp_path / "reports/figures/fig7_subnetworks.png").stat().st_size > 1000


def test_a_run_in_two_folders_is_named_not_counted_twice(tmp_path, capsys):
    for d in ("eval/msgnn.m1-x-s0", "eval/ablation-all-s0/msgnn.m1-x-s0"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "metrics.json").write_text("{}")
    assert report.main(["--runs", str(tmp_path), "--out", str(tmp_path / "rep")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run msgnn.m1-x-s0 also exists as" in err and "delete the stale one" in err


def test_stage_command_line_prints_scored_sets_and_names_errors(capsys):
    from benchmark.evaluation import run as evaluate

    res = {"key": "k", "results": {"a": {"psnr:msgnn": 30.0}, "real": {"niqe": 4.0}}}
    line = lambda r, name, m: f"{r['key']} on {name}: {m['psnr:msgnn']:.1f}"  # noqa: E731
    assert evaluate.run_and_report("w", lambda: res, "psnr:msgnn", line) == 0
    assert capsys.readouterr().out == "k on a: 30.0\n"  # the set without ground truth prints nothing

    def broken():
        raise FloatingPointError("loss is NaN")

    assert evaluate.run_and_report("w", broken, "psnr:msgnn", line,
                                   evaluate.STAGE_ERRORS + (FloatingPointError,)) == 1
    assert capsys.readouterr().err == "w: error: loss is NaN\n"
    with pytest.raises(FloatingPointError):  # outside the given errors: not swallowed
        evaluate.run_and_report("w", broken, "psnr:msgnn", line)
