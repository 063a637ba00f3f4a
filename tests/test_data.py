"""Data loading from the real fixture layouts, the synthetic generator, and bad input."""
from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.data import loading as data
from benchmark.datasets import synth


def test_synth_is_deterministic_and_rainy():
    r1, c1 = synth.make_batch(2, 32, seed=4)
    r2, c2 = synth.make_batch(2, 32, seed=4)
    assert torch.equal(r1, r2) and torch.equal(c1, c2)
    assert (r1 >= c1 - 1e-6).all()  # rain only adds light
    assert (r1 - c1).abs().mean() > 0.01
    assert not torch.equal(synth.make_batch(2, 32, seed=5)[0], r1)


def test_synth_generate_writes_split_layout(synth_root):
    for split, n in (("train", 12), ("test", 3)):
        assert len(list((synth_root / split / "input").glob("*.png"))) == n
        assert len(list((synth_root / split / "target").glob("*.png"))) == n
    assert data.load_image(synth_root / "test" / "input" / "1.png").shape == (40, 56, 3)


def test_synth_files_identical_across_runs(tmp_path):
    p = synth.SynthParams(seed=2, n_train=2, n_test=1, train_size=32, test_size=(32, 40))
    synth.generate(tmp_path / "a", p)
    synth.generate(tmp_path / "b", p)
    for f in sorted((tmp_path / "a").rglob("*.png")):
        g = tmp_path / "b" / f.relative_to(tmp_path / "a")
        assert hashlib.sha256(f.read_bytes()).digest() == hashlib.sha256(g.read_bytes()).digest()


@pytest.mark.parametrize("folder,n", [("Rain100L_test", 20), ("Rain100H_test", 20), ("Rain200H_test_samples", 5),
                                      ("DDN-SIRR_test", 10)])
def test_real_layouts_load_as_pairs(shared, folder, n):
    ds = data.EvalImages(shared / "data" / folder, "test")
    assert len(ds) == n
    it = ds[0]
    assert it.input.shape == it.target.shape and it.input.shape[0] == 3
    names = [ds.items[i].id for i in range(len(ds))]
    assert names == sorted(names, key=lambda s: int("".join(c for c in s if c.isdigit()) or 0))


def test_train_patches_from_real_layout(shared):
    ds = data.TrainPatches(shared / "data" / "Rain200H_test_samples", 64, seed=0, exemplar=True)
    item = ds[3]
    assert item["input"].shape == item["target"].shape == item["exemplar"].shape == (3, 64, 64)


def test_unpaired_real_world_folder(shared):
    ds = data.EvalImages(shared / "data" / "RealWorld_Internet147", "test", paired=False)
    assert len(ds) == 20 and ds[0].target is None


def test_side_by_side_pairs_split_halves(tmp_path):
    left = np.full((8, 6, 3), 200, np.uint8)
    right = np.full((8, 6, 3), 20, np.uint8)
    Image.fromarray(np.concatenate([left, right], 1)).save(tmp_path / "1.png")
    from benchmark.data import layouts

    (pair,) = layouts.find_pairs(tmp_path, rainy_side="left")
    rainy, clean = data.load_pair(pair)
    assert rainy.mean() == 200 and clean.mean() == 20


def _copy_fixture(shared, tmp_path, n=3):
    root = tmp_path / "ds"
    for sub in ("input", "target"):
        (root / sub).mkdir(parents=True)
        for i in range(1, n + 1):
            shutil.copy(shared / "data" / "Rain100L_test" / sub / f"{i}.png", root / sub / f"{i}.png")
    return root


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(data.DataError, match="no_such.*not found"):
        data.EvalImages(tmp_path / "no_such")


def test_unpaired_file_is_named(shared, tmp_path):
    root = _copy_fixture(shared, tmp_path)
    (root / "target" / "2.png").unlink()
    with pytest.raises(ValueError, match="2.png"):
        data.EvalImages(root)


def test_size_mismatch_is_named(shared, tmp_path):
    root = _copy_fixture(shared, tmp_path)
    Image.open(root / "target" / "2.png").crop((0, 0, 100, 100)).save(root / "target" / "2.png")
    with pytest.raises(data.DataError, match=r"input.2\.png.*differs from its target"):
        data.EvalImages(root)  # named before any image is evaluated


def test_corrupt_image_is_named(shared, tmp_path):
    root = _copy_fixture(shared, tmp_path)
    (root / "input" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(data.DataError, match=r"3\.png: unreadable image header"):
        data.EvalImages(root)


def test_patch_larger_than_image_is_named(synth_root):
    with pytest.raises(data.DataError, match="smaller than 128x128 .the training patch 128"):
        data.TrainPatches(synth_root, 128, seed=0)
