"""Registry and params.yaml: names, paper defaults, profiles, unknown keys."""
from __future__ import annotations

import copy

import pytest
import yaml

from benchmark.core import config
from benchmark.core.registry import build_model, list_models

from .conftest import REPO


def test_params_axes_match_the_registry(repo_params):
    names = set(list_models())
    assert set(repo_params["trained_models"]) | {"input"} == names
    assert set(repo_params["baselines"]) == names - {"msgnn", "input"}
    assert set(repo_params["models"]) == names


def test_metadata_lists_exactly_the_registered_models():
    """The metadata table is the one model list: every builder has a row, every row a builder."""
    import subprocess
    import sys

    from benchmark.core import registry

    assert set(registry.ORDER) == set(list_models())
    assert registry.ORDER[0] == "input" and registry.ORDER[-1] == "msgnn"  # the paper's column order
    assert registry.display_name("prenet") == "PReNet" and registry.display_name("msgnn.no_graph") == "msgnn.no_graph"
    # reading the metadata imports no model module (the reporting stages read it without torch models)
    code = ("import sys; from benchmark.core import registry; registry.display_name('msgnn'); "
            "print([m for m in sys.modules if m.startswith(('baselines', 'msgnn'))])")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_unknown_model_lists_valid_names():
    with pytest.raises(KeyError, match="valid names: .*prenet"):
        build_model("prenett")


def test_unknown_builder_argument_names_model():
    with pytest.raises(ValueError, match="cannot build model 'prenet'"):
        build_model("prenet", no_such_switch=1)


def test_input_is_identity():
    import torch

    x = torch.rand(1, 3, 9, 7)
    assert torch.equal(build_model("input")(x), x)


def test_every_model_builds_from_params(repo_params):
    for name in repo_params["trained_models"]:
        cfg = config.resolve(name, "rain-synth", repo_params)
        assert build_model(name, **cfg.model_args) is not None


def test_shared_settings_are_the_papers(repo_params):
    p = copy.deepcopy(repo_params)
    p["profile"], p["run_datasets"] = "paper", p["profiles"]["paper"]["datasets"]
    t = config.resolve("prenet", "rain200h", p).train
    assert (t.patch, t.batch, t.lr, t.epochs, t.milestones, t.gamma, t.loss) == (
        64, 8, 5e-4, 500, (0.6, 0.8), 0.1, "neg_ssim")


def test_quick_profile_budget_and_own_recipe(repo_params):
    q = config.resolve("prenet", "rain-synth", repo_params).train
    assert q.iters is not None and q.epochs is None
    p = copy.deepcopy(repo_params)
    p["models"]["prenet"].setdefault("train", {})["recipe"] = "own"
    own = config.resolve("prenet", "rain-synth", p).train
    assert (own.patch, own.batch, own.lr) == (100, 18, 1e-3)
    assert own.iters == q.iters  # outside the paper profile the budget stays the profile's


# What the quick profile may change per model: how long and on how much it trains, never what it learns
# (loss, optimiser, data, augmentation stay the shared recipe; docs/operations.md, quick-profile budgets).
QUICK_BUDGET_KEYS = {"iters", "epochs", "patch", "batch", "lr", "schedule", "milestones", "gamma",
                     "log_every", "ckpt_every", "val_images"}


def test_quick_profile_model_budgets_leave_the_recipe_alone(repo_params):
    deltas = {m: (d or {}).get("train") or {} for m, d in repo_params["profiles"]["quick"]["models"].items()}
    assert deltas and all(set(t) <= QUICK_BUDGET_KEYS for t in deltas.values()), deltas
    p = copy.deepcopy(repo_params)
    p["profile"], p["run_datasets"] = "paper", p["profiles"]["paper"]["datasets"]
    for m in deltas:  # the paper profile never sees them: the shared Sec. 4.2 schedule
        t = config.resolve(m, "rain200h", p).train
        assert (t.lr, t.schedule, t.epochs, t.loss) == (5e-4, "multistep", 500, "neg_ssim"), m
    quick = config.resolve("msgnn", "rain-synth", repo_params).train
    assert (quick.loss, quick.optimizer, quick.hflip) == ("neg_ssim", "adam", False)


@pytest.mark.parametrize("section,key", [("train", "lrr"), ("eval", "quantize"), ("tracking", "url")])
def test_unknown_keys_are_errors(repo_params, tmp_path, section, key):
    p = copy.deepcopy(repo_params)
    p[section][key] = 1
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(p))
    with pytest.raises(config.ConfigError, match=f"unknown key.*{key}.*{section}"):
        config.load_params(f)


def test_active_profile_must_have_every_key_dvc_yaml_reads(edited_params):
    """dvc.yaml's stages list profiles.<active>.dataset_overrides etc. as params: a profile without one
    is refused at load with the key named, not left to DVC's missing-parameter error."""
    def drop(p):
        del p["profiles"][p["profile"]]["dataset_overrides"]
    with pytest.raises(config.ConfigError, match=r"profiles\.quick lacks dataset_overrides .*write \{\} for none"):
        config.load_params(edited_params(drop))


def test_required_profile_keys_are_the_ones_dvc_yaml_names():
    """config's required sub-keys of the active profile are exactly the `profiles.${profile}.*` params
    entries of dvc.yaml's run stages (the `ablation` block only the ablation stages read)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    named = {e.split(".", 2)[2] for st in stages.values() for e in st.get("params", [])
             if isinstance(e, str) and e.startswith("profiles.${profile}.")}
    assert named - {"ablation"} == set(config._STAGE_PROFILE_KEYS)


def test_unknown_top_level_and_model_keys(edited_params):
    for mutate, msg in ((lambda p: p.update(trian={}), "trian"),
                        (lambda p: p["models"]["prenet"].update(arg={}), "models.prenet"),
                        (lambda p: p["models"]["prenet"].update(train={"batchsize": 4}), "batchsize")):
        with pytest.raises(config.ConfigError, match=msg):
            config.load_params(edited_params(mutate))


def test_profile_switch_rewrites_axis_and_keeps_comments(repo_params, tmp_path):
    from benchmark.tools import cli

    f = tmp_path / "params.yaml"
    f.write_text((config.Path("params.yaml")).read_text())
    assert cli.main(["profile", "paper", "--params", str(f)]) == 0
    p = config.load_params(f)
    assert p["profile"] == "paper" and p["run_datasets"] == p["profiles"]["paper"]["datasets"]
    assert "# msgnn-bench parameters" in f.read_text()
    assert cli.main(["profile", "nope", "--params", str(f)]) == 1


def test_mismatched_axis_is_explained(repo_params, tmp_path):
    p = copy.deepcopy(repo_params)
    p["profile"] = "paper"
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(p))
    with pytest.raises(config.ConfigError, match="msgnn-bench profile paper"):
        config.load_params(f)
