"""Own training recipes (``recipe: own``, ``paper`` profile) run as many steps as the originals.

The README's own-recipe table is computed here: every model on Rain100H's 1,800 training images of
481x321, with each original's epoch as its code defines it (PReNet: all 100x100 patches at stride 80;
MOSS: the file list repeated ``data_augment`` = 5 times; the others one sample per image or a fixed
number of steps)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from benchmark.core import config
from benchmark.data import loading as data
from benchmark.training import engine
from benchmark.data.layouts import Pair

N_RAIN100H = 1800
ORIGINAL = {  # steps of the original recipe on Rain100H (sources: the own blocks of params.yaml)
    "msgnn": 500 * math.ceil(N_RAIN100H / 8),  # 500 epochs, batch 8
    "rescan": 20_000,
    "prenet": 100 * math.ceil(N_RAIN100H * 3 * 5 / 18),  # 3 x 5 patches of 100 at stride 80 per 321x481 image
    "spanet": 40_000,
    "dcsfn": 800 * N_RAIN100H // 24,  # total_steps = 800 * N / 24
    "mspfn": 50 * math.ceil(N_RAIN100H / 12),  # released checkpoint: epoch 50
    "rcdnet": 100 * 1000,  # 100 "epochs" of 1,000 batches
    "dualgcn": 300 * math.ceil(N_RAIN100H / 10),  # unverified third-party recipe
    "moss": 500 * math.ceil(N_RAIN100H * 5 / 32),  # 500 supervised epochs of 5 passes, batch 32
}


@pytest.fixture(scope="module")
def rain100h_pairs(tmp_path_factory) -> list[Pair]:
    """1,800 pairs of 481x321 images (one file on disk; only the header is read)."""
    path = tmp_path_factory.mktemp("rain100h") / "im.png"
    Image.fromarray(np.zeros((321, 481, 3), np.uint8)).save(path)
    return [Pair(path, path, str(i)) for i in range(N_RAIN100H)]


def own_recipe(model: str) -> config.TrainCfg:
    params = config.load_params()
    params["profile"] = "paper"
    params["models"][model]["train"] = {"recipe": "own"}
    return config.resolve(model, "rain200h", params).train


@pytest.mark.parametrize("model", sorted(ORIGINAL))
def test_own_recipe_runs_as_many_steps_as_the_original(model, rain100h_pairs):
    cfg = own_recipe(model)
    assert engine.total_iters(cfg, len(rain100h_pairs), rain100h_pairs) == ORIGINAL[model]


def test_the_table_numbers():
    assert ORIGINAL["prenet"] == 150_000 and ORIGINAL["moss"] == 141_000  # one crop per image: 10,000 / 28,500
    others = (ORIGINAL["msgnn"], ORIGINAL["dcsfn"], ORIGINAL["mspfn"], ORIGINAL["dualgcn"])
    assert others == (112_500, 60_000, 7_500, 54_000)


def test_patch_grid_count_and_side_by_side_sizes(tmp_path):
    assert engine.patch_grid_count((321, 481), 100, 80) == 15 == engine.patch_grid_count((481, 321), 100, 80)
    assert engine.patch_grid_count((99, 500), 100, 80) == 0
    both = tmp_path / "pair.png"
    Image.fromarray(np.zeros((50, 240, 3), np.uint8)).save(both)
    assert data.image_size(Pair(both, both, "0", rainy_side="left")) == (50, 120)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(data.DataError, match="bad.png"):
        data.image_size(Pair(bad, bad, "1"))


def test_samples_per_image_and_grid_stride_need_sensible_values():
    with pytest.raises(ValueError, match="samples_per_image"):
        engine.total_iters(config.TrainCfg(epochs=1, samples_per_image=0), n_train=10)
    with pytest.raises(ValueError, match="pairs"):
        engine.total_iters(config.TrainCfg(epochs=1, grid_stride=80), n_train=10)
    assert engine.total_iters(config.TrainCfg(epochs=2, batch=8, samples_per_image=5), n_train=20) == 26
