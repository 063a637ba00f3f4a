"""DVC experiments work as the README and docs/pipeline.md say.

* every `dvc exp run ... -S key=value` example in the docs applies to params.yaml (through DVC's
  own override code) and gives valid settings, on the `ci` profile;
* (slow) two experiments run on the `ci` profile in a scratch copy: `dvc exp show` lists the
  metrics of both, and `dvc exp apply` restores a workspace that `dvc status` calls up to date.
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from benchmark.core import config

from .conftest import REPO
from .test_dvc_deps import _dvc, _git_commit, _scratch_repo, _stale, placeholder_outputs


def readme_examples() -> list[list[str]]:
    """The -S overrides of every complete `dvc exp run` example in the README and the pipeline page."""
    text = (REPO / "README.md").read_text() + (REPO / "docs/pipeline.md").read_text()
    spans = re.findall(r"`(dvc exp run[^`]*)`", text) + re.findall(r"^\s*(dvc exp run .*)$", text, re.M)
    out = []
    for span in spans:
        args = shlex.split(" ".join(span.split()), comments=True)
        if "-S" in args and "..." not in span and "…" not in span and args[-1] != "-S":  # complete examples only
            out.append([args[i + 1] for i, a in enumerate(args) if a == "-S"])
    return out


def _set_profile(path: Path, name: str) -> None:
    from benchmark.tools import cli

    # the real command: it also rewrites the seed and ablation axes the profile decides
    assert cli.main(["profile", name, "--params", str(path)]) == 0


def test_readme_set_examples_apply_on_the_ci_profile(tmp_path):
    from dvc.utils.hydra import apply_overrides

    examples = readme_examples()
    assert len(examples) >= 3 and ["++models.prenet.train.recipe=own"] in examples
    for overrides in examples:
        path = tmp_path / "params.yaml"
        shutil.copy(REPO / "params.yaml", path)
        _set_profile(path, "ci")
        apply_overrides(str(path), overrides)  # what `dvc exp run -S` does; raises on a bad key
        raw = config.load_params(path)
        for ov in overrides:
            key, _, value = ov.lstrip("+").partition("=")
            node = raw
            for part in key.split("."):
                node = node[part]
            assert node == yaml.safe_load(value), ov
        config.resolve("prenet", raw["run_datasets"][0], raw)  # a complete, valid run config


def test_readme_recipe_example_changes_the_resolved_recipe(tmp_path):
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    _set_profile(path, "ci")
    apply_overrides(str(path), ["++models.prenet.train.recipe=own"])
    cfg = config.resolve("prenet", "rain-synth", config.load_params(path))
    assert cfg.train.recipe == "own" and cfg.train.patch == 100 and cfg.train.iters == 6  # ci budget kept


@pytest.mark.slow
def test_two_experiments_show_their_metrics(tmp_path):
    """Minutes on 2 CPU cores: two real `dvc exp run`s of the PReNet chain on the ci profile.

    The other stages get placeholder outputs recorded by `dvc commit` (as after a user's own full
    `dvc repro`: `exp apply` checks out every locked output, so all must be in the cache)."""
    repo = _scratch_repo(tmp_path)
    (repo / "dvc.lock").unlink(missing_ok=True)
    from dvc.utils.hydra import apply_overrides

    apply_overrides(str(repo / "params.yaml"), ["profile=ci", "run_datasets=[rain-synth]",
                                                     "ablation_variants=[default,m5]", "tracking.enabled=false"])
    _dvc(repo, "repro", "-q", "prepare@rain-synth")
    others = [m for m in yaml.safe_load((repo / "params.yaml").read_text())["trained_models"] if m != "prenet"]
    placeholder_outputs(repo, others)
    stages = [f"train@{m}-rain-synth" for m in others if m != "msgnn"] + ["train_msgnn@rain-synth"]
    stages += [f"evaluate@{m}-rain-synth" for m in others if m != "msgnn"]
    stages += ["evaluate_msgnn@rain-synth", "evaluate_input@rain-synth", "report", "site", "official_report"]
    ci = yaml.safe_load((repo / "params.yaml").read_text())
    stages += [f"ablation@{g}-{s}" for g in ci["ablation_groups"] for s in ci["seeds"]]
    _dvc(repo, "commit", "-f", "-q", *stages)
    _git_commit(repo, "ci profile, prepared, placeholders for the other models")

    _dvc(repo, "exp", "run", "-q", "--name", "ci-shared", "evaluate@prenet-rain-synth")
    _dvc(repo, "exp", "run", "-q", "--name", "ci-own", "-S", "++models.prenet.train.recipe=own",
         "evaluate@prenet-rain-synth")
    rows = json.loads(_dvc(repo, "exp", "show", "--json"))
    found = {}
    for row in rows:
        for exp in row.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = (rev.get("data") or {})
                m = (data.get("metrics") or {}).get("runs/eval/prenet-rain-synth/headline.json") or {}
                if "data" in m:
                    found[rev.get("name")] = m["data"]["prenet-rain-synth"]["rain-synth"]["psnr"]
    assert set(found) == {"ci-shared", "ci-own"}, rows
    assert found["ci-shared"] != found["ci-own"]  # two different trainings, two numbers
    _dvc(repo, "exp", "apply", "ci-shared")
    # outputs, metrics and params of one experiment (report and site only ran on the placeholders)
    assert _stale(repo) <= {"report", "site"}
    applied = json.loads((repo / "runs/eval/prenet-rain-synth/metrics.json").read_text())
    assert round(applied["results"]["rain-synth"]["psnr:msgnn"], 3) == found["ci-shared"]


def test_train_and_evaluate_on_ones_own_folder(tmp_path, monkeypatch, synth_root, tiny_params, capsys):
    from benchmark.tools import cli

    tiny_params["tracking"]["enabled"] = False
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))  # the ci profile: 3 steps
    assert cli.main(["train", "--model", "prenet", "--data", str(synth_root)]) == 0
    ckpt = tmp_path / "runs/own/prenet-rain-synth/model.pt"
    assert ckpt.is_file() and (ckpt.parent / "train_log.csv").is_file()
    assert not (tmp_path / "runs/train").exists()  # never mixes into the pipeline's runs (Table 1)
    capsys.readouterr()
    assert cli.main(["evaluate", "--model", "prenet", "--checkpoint", str(ckpt), "--data", str(synth_root),
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_images"] == 3
    assert cli.main(["train", "--model", "prenet", "--data", str(tmp_path / "nope")]) == 1
    assert "nope: not a folder" in capsys.readouterr().err
    (tmp_path / "flat").mkdir()
    assert cli.main(["train", "--model", "prenet", "--data", str(tmp_path / "flat")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "flat" in err
