"""`prepare` for a dataset that needs a manual download: exit 3 (docs/datasets.md), message once (issue 27)."""
from __future__ import annotations

import shutil

from benchmark.tools import cli
from pipelines import prepare

from .conftest import REPO


def test_manual_dataset_exits_3_and_says_so_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    assert cli.main(["profile", "paper"]) == 0
    capsys.readouterr()
    assert prepare.main(["--dataset", "rain200h"]) == 3
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert text.count("has no public direct download") == 1, text
    assert "prepare rain200h: error:" in captured.err
    assert "data/downloads/rain200h/" in text  # where to put the archive: the step to take
    assert not (tmp_path / "data/rain200h/train").exists()


def test_other_dataset_errors_still_exit_1(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    assert prepare.main(["--dataset", "no-such-set"]) == 1
    assert capsys.readouterr().err.count("error:") == 1
