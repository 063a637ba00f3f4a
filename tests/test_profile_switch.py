"""`msgnn-bench profile NAME` round-trips any params.yaml that DVC itself writes (issue 27).

`dvc exp run -S key=value` (and `dvc exp apply`) rewrite params.yaml through
`dvc.utils.hydra.apply_overrides`, i.e. DVC's own ruamel serializer: block lists, other quoting,
comments padded into columns. Here that same function produces the file, and `profile` must then
switch both ways to a valid file with the profile's axes, every comment and every other value kept.
"""
from __future__ import annotations

import re
import shutil

import pytest
import yaml

from benchmark.core import config
from benchmark.tools import cli, profile_switch

from .conftest import REPO

README_CI = ["profile=ci", "run_datasets=[rain-synth]", "ablation_variants=[default,m5]"]


def _comments(text: str) -> list[str]:
    """Every comment's text, whatever column DVC padded it to."""
    return [m.strip() for m in re.findall(r"(?:^|\s)(#[^\n]*)", text)]


def _dvc_written(tmp_path, overrides=README_CI):
    from dvc.utils.hydra import apply_overrides  # what `dvc exp run -S` runs on params.yaml

    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    apply_overrides(str(path), overrides)
    return path


def _expect_axes(raw: dict, name: str) -> None:
    prof = raw["profiles"][name]
    assert raw["profile"] == name
    assert raw["run_datasets"] == prof["datasets"]
    assert raw["seeds"] == prof["seeds"] and raw["extra_seeds"] == prof["seeds"][1:]
    assert raw["ablation_dataset"] == prof["ablation"]["dataset"]
    assert raw["ablation_variants"] == prof["ablation"]["variants"]


def _without_axes(raw: dict) -> dict:
    return {k: v for k, v in raw.items() if k not in profile_switch.AXES}


def test_dvc_rewrite_really_is_block_style(tmp_path):
    """The premise: DVC's writer turns the flow lists into block lists (what broke the old regexes)."""
    text = _dvc_written(tmp_path).read_text()
    assert re.search(r"(?m)^run_datasets:.*\n(\s*\n)?- rain-synth$", text)
    assert re.search(r"(?m)^ablation_variants:\n- default\n- m5\n", text)


@pytest.mark.parametrize("order", [("quick", "ci"), ("ci", "quick"), ("paper", "quick")])
def test_profile_round_trips_a_params_file_dvc_wrote(tmp_path, order, capsys):
    path = _dvc_written(tmp_path)
    dvc_text = path.read_text()
    dvc_raw = yaml.safe_load(dvc_text)
    for name in order:
        assert cli.main(["profile", name, "--params", str(path)]) == 0, capsys.readouterr().err
        text = path.read_text()
        raw = config.load_params(path)  # valid: the checks every stage runs
        _expect_axes(raw, name)
        assert _without_axes(yaml.safe_load(text)) == _without_axes(dvc_raw)  # nothing else changed
        assert _comments(text) == _comments(dvc_text)  # every comment kept, in order
    if order[-1] == "ci":  # back to what DVC wrote for the README's ci example: the very same bytes
        assert path.read_text() == dvc_text


def test_profile_on_the_committed_file_changes_only_the_axis_lines(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    orig = path.read_text()
    assert cli.main(["profile", config.load_params(path)["profile"], "--params", str(path)]) == 0
    assert path.read_text() == orig  # a no-op switch is byte-identical
    assert cli.main(["profile", "paper", "--params", str(path)]) == 0
    changed = [(a, b) for a, b in zip(orig.splitlines(), path.read_text().splitlines()) if a != b]
    assert len(orig.splitlines()) == len(path.read_text().splitlines())
    assert {a.split(":")[0] for a, _ in changed} <= set(profile_switch.AXES)
    assert "run_datasets: [rain200h, rain200l, rain1200, rain1400]  # DVC matrix axis" in path.read_text()
    _expect_axes(config.load_params(path), "paper")
    assert cli.main(["profile", "quick", "--params", str(path)]) == 0
    assert path.read_text() == orig


def test_seeds_and_missing_axis_key(tmp_path):
    """Block lists grow and shrink (to an empty list too); an old file without ablation_groups gets it."""
    path = _dvc_written(tmp_path, ["++profiles.ci.seeds=[0,1,2]"])
    assert cli.main(["profile", "ci", "--params", str(path)]) == 0
    raw = config.load_params(path)
    assert raw["seeds"] == [0, 1, 2] and raw["extra_seeds"] == [1, 2]
    # back to one seed: the block extra_seeds list becomes empty and the file stays valid
    text = path.read_text().replace("seeds:\n    - 0\n    - 1\n    - 2", "seeds:\n    - 0")
    path.write_text(text)
    assert yaml.safe_load(text)["profiles"]["ci"]["seeds"] == [0]
    assert cli.main(["profile", "ci", "--params", str(path)]) == 0
    raw = config.load_params(path)
    assert raw["seeds"] == [0] and raw["extra_seeds"] == []

    path = tmp_path / "old.yaml"
    path.write_text(re.sub(r"(?m)^ablation_groups:.*\n", "", (REPO / "params.yaml").read_text()))
    assert cli.main(["profile", "ci", "--params", str(path)]) == 0
    text = path.read_text()
    assert re.search(r"(?m)^ablation_variants: \[default, m5\]\nablation_groups: \[all\]$", text)
    _expect_axes(config.load_params(path), "ci")


def test_failure_leaves_the_file_alone(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    orig = path.read_text()
    assert cli.main(["profile", "nosuch", "--params", str(path)]) == 1
    assert "unknown profile 'nosuch'" in capsys.readouterr().err
    # a file that switches but does not validate (a stray key) is reported, not written
    path.write_text(orig + "\nstray_key: 1\n")
    assert cli.main(["profile", "ci", "--params", str(path)]) == 1
    err = capsys.readouterr().err
    assert "stray_key" in err and ".params-" not in err  # names the key, not the temporary file
    assert path.read_text() == orig + "\nstray_key: 1\n"
    assert not list(tmp_path.glob(".params-*"))
    path.write_text("profile: [unclosed\n")
    assert cli.main(["profile", "ci", "--params", str(path)]) == 1
    assert "not valid YAML" in capsys.readouterr().err


def test_unexpected_layout_falls_back_to_the_round_trip_dumper():
    """A value the splice cannot place (an anchor/alias) still gets a correct file, comments kept."""
    text = (REPO / "params.yaml").read_text().replace("seeds: [0]\n", "seeds: &s [0]  # anchored\n", 1)
    text = text.replace("extra_seeds: []", "extra_seeds: []  # extra", 1)
    out = profile_switch.switch(text, "paper")
    raw = yaml.safe_load(out)
    assert raw["profile"] == "paper" and raw["run_datasets"][0] == "rain200h"
    assert "# anchored" in out and "# extra" in out
