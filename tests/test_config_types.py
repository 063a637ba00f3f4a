"""params.yaml values are checked for type and range at load: one line naming the key and the file."""
from __future__ import annotations

import copy

import pytest
import yaml

from benchmark.core import config


def _write(tmp_path, p):
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(p))
    return f


@pytest.mark.parametrize("where,key,value,needle", [
    ("train", "hflip", "false", "train.hflip must be true or false (unquoted), got 'false' (a string)"),
    ("tracking", "enabled", "false", "tracking.enabled must be true or false"),
    ("train", "batch", "eight", "train.batch must be a whole number, got 'eight'"),
    ("train", "lr", "fast", "train.lr must be a number, got 'fast'"),
    ("train", "milestones", 0.6, "train.milestones must be a list, got 0.6"),
    ("train", "milestones", [0.8, 0.6], "train.milestones must be in ascending order"),
    ("train", "patch", -1, "train.patch must be >= 1, got -1"),
    ("train", "gamma", "1e308", "train.gamma must be <= 1, got 1e+308"),
    ("train", "gamma", float("inf"), "train.gamma must be a finite number"),
    ("train", "betas", [0.9], "train.betas must be a list of 2 values"),
    ("train", "optimizer", "sgd", "train.optimizer must be one of adam, adamw; got 'sgd'"),
    ("eval", "crop_border", 1.5, "eval.crop_border must be a whole number, got 1.5"),
    ("eval", "lpips", "yes", "eval.lpips must be true or false"),
])
def test_bad_values_are_one_line_naming_key_and_file(repo_params, tmp_path, where, key, value, needle):
    p = copy.deepcopy(repo_params)
    p[where][key] = value
    f = _write(tmp_path, p)
    with pytest.raises(config.ConfigError) as exc:
        config.load_params(f)
    msg = str(exc.value)
    assert msg.startswith(f"{f}: ") and needle in msg and "\n" not in msg


def test_nested_sections_are_checked_too(repo_params, tmp_path):
    for mutate, needle in ((lambda p: p["profiles"]["ci"]["train"].update(batch="2"), "profiles.ci.train.batch"),
                           (lambda p: p["models"]["rescan"]["own"].update(hflip="no"), "models.rescan.own.hflip"),
                           (lambda p: p["models"]["prenet"].update(train={"lr": -1.0}), "models.prenet.train.lr")):
        p = copy.deepcopy(repo_params)
        mutate(p)
        with pytest.raises(config.ConfigError, match=needle.replace(".", r"\.")):
            config.load_params(_write(tmp_path, p))


def test_a_number_yaml_reads_as_a_string_is_taken_as_that_number(repo_params, tmp_path):
    f = tmp_path / "params.yaml"
    p = copy.deepcopy(repo_params)
    p["train"]["lr"] = "LR_HERE"
    text = yaml.safe_dump(p).replace("lr: LR_HERE", "lr: 5e-4")
    f.write_text(text)
    assert yaml.safe_load(text)["train"]["lr"] == "5e-4"  # what PyYAML (YAML 1.1) makes of it
    p = config.load_params(f)
    p["profile"], p["run_datasets"] = "paper", p["profiles"]["paper"]["datasets"]
    t = config.resolve("prenet", "rain200h", p).train
    assert t.lr == 5e-4 and isinstance(t.lr, float) and isinstance(t.epochs, float)


def test_the_repository_params_pass(repo_params):
    for m in repo_params["trained_models"]:
        cfg = config.resolve(m, "rain-synth", repo_params)
        assert cfg.train.hflip is False and cfg.tracking.enabled is True


def test_amp_off_written_without_quotes_reads_as_off(tmp_path):
    """`dvc exp run -S` rewrites params.yaml with `amp: off` unquoted, which YAML reads as false."""
    import yaml

    from benchmark.core import config
    from tests.conftest import REPO

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["amp"] = False
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert config.resolve("prenet", raw["run_datasets"][0], config.load_params(path)).train.amp == "off"
    raw["train"]["amp"] = True  # no choice means "on": still refused, naming the key
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(config.ConfigError, match="train.amp"):
        config.load_params(path)
