"""Shared fixtures: the ../shared folder, a tiny generated rain-synth dataset, tiny params."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from benchmark.core import ablations
from benchmark.datasets import synth

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def use_profile(p: dict, name: str) -> None:
    """Switch a params dict to profile ``name`` with every axis `msgnn-bench profile` rewrites."""
    prof = p["profiles"][name]
    p["profile"], p["run_datasets"] = name, list(prof["datasets"])
    p["seeds"], p["extra_seeds"] = list(prof.get("seeds", [0])), list(prof.get("seeds", [0]))[1:]
    p["ablation_dataset"], p["ablation_variants"] = prof["ablation"]["dataset"], list(prof["ablation"]["variants"])
    p["ablation_groups"] = ablations.groups(prof["ablation"])
    p["official_runs"] = dict(prof.get("official") or {})


def tiny_ci(params: dict, db: Path, experiment: str, n_test: int, ckpt_every: int) -> dict:
    """A copy of ``params`` on the ci profile shrunk to a few steps and images, tracking into ``db``."""
    p = copy.deepcopy(params)
    use_profile(p, "ci")
    p["tracking"] = {"enabled": True, "uri": f"sqlite:///{db}", "experiment": experiment}
    p["profiles"]["ci"]["train"].update({"iters": 3, "patch": 24, "batch": 2, "ckpt_every": ckpt_every,
                                         "log_every": 1})
    p["profiles"]["ci"]["dataset_overrides"]["rain-synth"].update(
        {"n_train": 6, "n_test": n_test, "train_size": 48, "test_size": [40, 56]})
    return p


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.skip(f"{SHARED} not present (fixtures live beside the repository)")
    return SHARED


@pytest.fixture
def two_pairs(shared, tmp_path) -> Path:
    """A paired folder (input/, target/) holding Rain100L test images 1 and 2."""
    import shutil

    root = tmp_path / "pairs"
    for sub in ("input", "target"):
        (root / sub).mkdir(parents=True)
        for i in (1, 2):
            shutil.copy(shared / f"data/Rain100L_test/{sub}/{i}.png", root / sub / f"{i}.png")
    return root


@pytest.fixture
def edited_params(repo_params, tmp_path):
    """``edited_params(edit)``: a params.yaml in tmp_path holding the repository's params after ``edit``."""
    def write(edit) -> Path:
        p = copy.deepcopy(repo_params)
        edit(p)
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(p))
        return path
    return write


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A generated rain-synth dataset small enough for unit tests (12 train, 3 test pairs)."""
    root = tmp_path_factory.mktemp("data") / "rain-synth"
    synth.generate(root, synth.SynthParams(seed=1, n_train=12, n_test=3, train_size=48, test_size=(40, 56)))
    return root


@pytest.fixture(scope="session")
def repo_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.fixture
def tiny_params(repo_params, tmp_path) -> dict:
    """The repository's params switched to the ci profile, tracking into a temporary SQLite file."""
    return tiny_ci(repo_params, tmp_path / "mlflow.db", "test", n_test=2, ckpt_every=2)


@pytest.fixture(scope="session")
def site_tree(repo_params, tmp_path_factory) -> Path:
    """A run tree built by the real stages up to the site page (tests/helpers/site_tree.py); read-only."""
    import os

    from .helpers import site_tree as st

    root = tmp_path_factory.mktemp("site_tree")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        st.build(root, repo_params)
    finally:
        os.chdir(cwd)
    return root
