"""Hostile inputs and faults (issue 26): each case ends in one line naming the file and the problem,
touches nothing outside the repository and never yields a silent wrong number."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmark.core import config

REPO = Path(__file__).resolve().parents[1]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# --- 1. every key that becomes a path is validated when the settings load -------------------------

def test_train_with_path_model_name_creates_nothing_outside_runs(repo_params, tmp_path):
    # a params.yaml that declares the hostile name, so that only the name check can stop it
    repo = tmp_path / "a" / "b" / "c" / "repo"
    repo.mkdir(parents=True)
    p = copy.deepcopy(repo_params)
    p["models"]["../../../evil"] = {"args": {}}
    p["baselines"].append("../../../evil")
    p["trained_models"].append("../../../evil")
    (repo / "params.yaml").write_text(yaml.safe_dump(p))
    before = _tree(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "pipelines.train", "--model", "../../../evil", "--dataset", "rain-synth",
                        "--device", "cpu"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "models.../../../evil" in lines[0] and "not allowed" in lines[0]
    assert _tree(tmp_path) - before == set()  # not even runs/train/


@pytest.mark.parametrize("edit, where", [
    (lambda p: p["models"].update({"x/y": {}}), "models.x/y"),
    (lambda p: p["models"].update({"nosuch": {}}), "not a registered model"),
    (lambda p: (p["baselines"].append(".."), p["trained_models"].append(".."), p["models"].update({"..": {}})),
     "'..'"),
    (lambda p: p["datasets"].update({"../up": {}}), "datasets.../up"),
    (lambda p: p["datasets"].update({"Rain": {}}), "datasets.Rain"),
    (lambda p: p["datasets"]["rain200h"].update(eval_sets=["/etc"]), "datasets.rain200h.eval_sets"),
    (lambda p: p["ablations"].update({"a/b": {"args": {}, "cells": {"table2": "M1"}}}), "ablations.a/b"),
    (lambda p: (p["ablations"].update({"../v": {"args": {}, "cells": {"table2": "M1"}}}),
                p["profiles"]["quick"]["ablation"]["variants"].append("../v"), p["ablation_variants"].append("../v")),
     "ablations.../v"),
    (lambda p: p["profiles"]["quick"]["dataset_overrides"].update({"..": {}}), "dataset_overrides"),
    (lambda p: (p.update(seeds=[0, -1], extra_seeds=[-1]), p["profiles"]["quick"].update(seeds=[0, -1])),
     "seed -1"),
    (lambda p: p["report"].update(ablation_runs=["../../x"]), "report.ablation_runs"),
])
def test_path_names_refused_at_load(edited_params, edit, where):
    with pytest.raises(config.ConfigError) as e:
        config.load_params(edited_params(edit))
    msg = str(e.value)
    assert "\n" not in msg and "params.yaml" in msg and where in msg


@pytest.mark.parametrize("model, dataset", [("../prenet", "rain-synth"), ("prenet", "../../rain-synth"),
                                            ("prenet", "a/b"), ("prenet", ".")])
def test_resolve_refuses_path_names(repo_params, model, dataset):
    # names from the command line (--model/--dataset, `msgnn-bench train --name`) go through resolve
    with pytest.raises(config.ConfigError, match="not allowed"):
        config.resolve(model, dataset, repo_params)


# --- 2. params.yaml: no anchors/aliases (alias bombs), no duplicate keys ---------------------------

_BOMB = "\n".join(["  a: &a [x, x, x, x, x, x, x, x, x]"]
                  + [f"  {c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
                     for p, c in zip("abcdefgh", "bcdefghi")])


def _with_extra(text: str, block: str) -> str:
    # a `rain-synth` dataset entry that holds `block` (indented) under an extra key
    return text.replace("  rain-synth:\n", "  rain-synth:\n    extra:\n" + "\n".join("    " + ln for ln in block.splitlines())
                        + "\n", 1)


def test_alias_bomb_refused_naming_file_and_line(tmp_path):
    text = (REPO / "params.yaml").read_text()
    path = tmp_path / "params.yaml"
    path.write_text(_with_extra(text, _BOMB))
    line = path.read_text().splitlines().index("      a: &a [x, x, x, x, x, x, x, x, x]") + 1
    with pytest.raises(config.ConfigError) as e:
        config.load_params(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}:{line}:") and "anchors and aliases" in msg


def test_duplicate_key_refused_naming_both_lines(tmp_path):
    text = (REPO / "params.yaml").read_text()
    lines = text.splitlines()
    first = lines.index("  lr: 5.0e-4") + 1  # train.lr
    path = tmp_path / "params.yaml"
    path.write_text(text.replace("  lr: 5.0e-4\n", "  lr: 5.0e-4\n  lr: 1.0e-1\n", 1))
    with pytest.raises(config.ConfigError) as e:
        config.load_params(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}:{first + 1}:")
    assert f"duplicate key 'lr' (first at line {first})" in msg


def test_profile_switch_refuses_duplicate_key_in_one_line(tmp_path, capsys):
    from benchmark.tools import cli

    path = tmp_path / "params.yaml"
    text = (REPO / "params.yaml").read_text()
    path.write_text(text.replace("profile: quick", "profile: quick\nprofile: paper", 1))
    line = text.splitlines().index(next(x for x in text.splitlines() if x.startswith("profile:"))) + 2
    assert cli.main(["profile", "ci", "--params", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{path}:{line}:" in err[0] and "duplicate key 'profile'" in err[0]
    assert path.read_text().count("profile: paper") == 1  # untouched


# --- 3. the CI gate and the tables take each run once: copies and renamed run folders refused ------

def _metrics(key: str, psnr: float) -> dict:
    model, dataset = key.split("-", 1)
    return {"key": key, "model": model, "dataset": dataset, "profile": "ci", "params_total": 10,
            "params_trainable": 10, "results": {dataset: {"psnr_y": psnr, "ssim_y": 0.9, "n_images": 4}}}


def _run(runs: Path, folder: str, m: dict) -> None:
    (runs / "eval" / folder).mkdir(parents=True)
    (runs / "eval" / folder / "metrics.json").write_text(json.dumps(m))


def test_gate_refuses_a_copied_run_folder_that_would_hide_a_regression(tmp_path, capsys):
    from benchmark.tools import gate

    runs = tmp_path / "runs"
    _run(runs, "prenet-rain-synth", _metrics("prenet-rain-synth", 20.0))  # a 16 dB regression
    _run(runs, "prenet-rain-synth.bak", _metrics("prenet-rain-synth", 36.0))  # the copy still holds the old values
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"prenet-rain-synth/rain-synth/psnr_y": 36.0, "prenet-rain-synth/rain-synth/ssim_y": 0.9,
                               "prenet-rain-synth/params_total": 10}))
    assert gate.main(["--runs", str(runs), "--reference", str(ref), "--params", str(tmp_path / "none.yaml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run prenet-rain-synth is held by 2 folders" in err[0], err


def test_tables_refuse_a_renamed_run_folder(tmp_path):
    from benchmark.core.runs import RunFolderError
    from benchmark.reporting import tables

    runs = tmp_path / "runs"
    _run(runs, "prenet-rain-synth", _metrics("prenet-rain-synth", 30.0))
    _run(runs, "spanet-rain-synth", _metrics("msgnn-rain-synth", 40.0))  # MSGNN's numbers under SPANet's name
    with pytest.raises(RunFolderError) as e:
        tables.collect(runs)
    msg = str(e.value)
    assert "\n" not in msg and "spanet-rain-synth/metrics.json: holds run msgnn-rain-synth" in msg


def test_report_names_an_unreadable_metrics_file(tmp_path, capsys):
    from pipelines import report

    runs = tmp_path / "runs"
    _run(runs, "prenet-rain-synth", _metrics("prenet-rain-synth", 30.0))
    (runs / "eval/prenet-rain-synth/metrics.json").write_text('{"key": "prenet-rain-synth", ')  # cut short
    assert report.main(["--runs", str(runs), "--out", str(tmp_path / "reports")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "prenet-rain-synth/metrics.json: not readable JSON" in err[0]


# --- 5. models.<name>.args range-checked at load, with the ranges checkpoints get -------------------

@pytest.mark.parametrize("args, where", [({"channels": 8000}, "models.prenet.args.channels must be between 0 and"),
                                         ({"stages": 1000000}, "models.prenet.args.stages must be between 0 and"),
                                         ({"stages": -1}, "models.prenet.args.stages"),
                                         ({"stages": "6"}, "models.prenet.args.stages must be a whole number"),
                                         ({"nosuch": 1}, "models.prenet.args.nosuch is not a builder argument"),
                                         ([1, 2], "models.prenet.args must be a mapping")])
def test_model_args_range_checked_at_load(edited_params, repo_params, args, where):
    import time

    path = edited_params(lambda p: p["models"]["prenet"].update(args=args))
    t = time.monotonic()
    with pytest.raises(config.ConfigError) as e:
        config.load_params(path)
    assert time.monotonic() - t < 10  # refused from the numbers, nothing built
    assert "\n" not in str(e.value) and str(e.value).startswith(f"{path}: {where}"), str(e.value)
    p = copy.deepcopy(repo_params)  # a params mapping handed to resolve (the CLI, tests) gets the same check
    p["models"]["prenet"]["args"] = args
    with pytest.raises(config.ConfigError, match=where.split(" ")[0].replace(".", r"\.")):
        config.resolve("prenet", "rain-synth", p)


def test_model_args_in_range_load(edited_params):
    path = edited_params(lambda p: p["models"]["prenet"].update(args={"stages": 2, "channels": 16}))
    raw = config.load_params(path)
    assert config.resolve("prenet", "rain-synth", raw).model_args == {"stages": 2, "channels": 16}
