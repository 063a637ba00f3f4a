"""Hostile inputs and faults (issue 26): each case ends in one line naming the file and the problem,
touches nothing outside the repository and never yields a silent wrong number."""
from __future__ import annotations

import copy
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
