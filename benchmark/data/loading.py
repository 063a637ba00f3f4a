"""Model inputs read from a dataset folder: training patches (random pairs) and evaluation images.

This is the torch side of the train and evaluate stages; obtaining, normalising and checking the
folders themselves (the prepare stage) is the ``benchmark.datasets`` package.

Pairs are found by ``benchmark.data.layouts`` (every real naming layout of the field, plus our
normalised ``{input,target}/<id>.png``), always in sorted order. Sampling is a pure function of
(seed, sample index): sample ``i`` belongs to epoch ``i // n``, whose image order is a seeded
permutation, and its crop/flip come from a generator seeded by ``(seed, i)``. Resuming at step
``s`` therefore only needs ``s`` — no sampler state — and a run killed half way sees exactly
the same batches as one that never stopped.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from benchmark.data import images, layouts
from benchmark.data.images import DataError  # re-exported: callers catch data.DataError


def load_image(path: str | Path, max_pixels: int = images.MAX_PIXELS) -> np.ndarray:
    """Read an image as uint8 RGB [H,W,3] through the checked reader (``benchmark.data.images``)."""
    return images.load_rgb(path, max_pixels=max_pixels)


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 [H,W,3] → float [3,H,W] in [0,1]."""
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float().div_(255.0)


def load_pair(pair, max_pixels: int = images.MAX_PIXELS) -> tuple[np.ndarray, np.ndarray]:
    """Both images of a pair as arrays (``layouts.read_pair``: side-by-side files are split there);
    a size mismatch is a DataError naming both files."""
    rainy, clean = (np.array(im) for im in layouts.read_pair(pair, max_pixels))
    if rainy.shape != clean.shape:
        raise DataError(f"{pair.input}: size {rainy.shape[1]}x{rainy.shape[0]} differs from its target "
                        f"{pair.target} ({clean.shape[1]}x{clean.shape[0]})")
    return rainy, clean


def _check_one(it, min_side: int, why: str, decode: bool, max_pixels: int) -> str | None:
    try:
        side = getattr(it, "rainy_side", None)
        a = images.inspect(it.input, max_pixels=max_pixels, decode=decode)
        w = a.width // 2 if side else a.width
        if side and a.width % 2:
            raise DataError(f"{it.input}: odd width {a.width} cannot be split into two equal halves")
        if min(w, a.height) < min_side:
            raise DataError(f"{it.input}: image {w}x{a.height} is smaller than {min_side}x{min_side} ({why})")
        target = getattr(it, "target", None)
        if target is not None and not side:
            b = images.inspect(target, max_pixels=max_pixels, decode=decode)
            if (a.width, a.height) != (b.width, b.height):
                raise DataError(f"{it.input}: size {a.width}x{a.height} differs from its target "
                                f"{target} ({b.width}x{b.height})")
    except DataError as exc:
        return str(exc)
    return None


def check_items(items, *, min_side: int = 1, why: str = "", decode: bool = False,
                max_pixels: int = images.MAX_PIXELS) -> None:
    """Check every file of ``items`` (Pairs) before any work: readable, within the pixel limit, at
    least ``min_side`` per side (per half for side-by-side files), pair sizes equal.

    Header-only by default (fast: no pixel is decoded); ``decode`` also decodes each file, which
    finds truncated data. Raises one DataError naming the first bad file and how many others.
    """
    _raise_first(_problems(items, min_side, why, decode, max_pixels))


def _problems(items, min_side: int, why: str, decode: bool, max_pixels: int) -> list[str]:
    one = partial(_check_one, min_side=min_side, why=why, decode=decode, max_pixels=max_pixels)
    if decode and len(items) > 32:  # Pillow releases the GIL while decoding
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            results = list(pool.map(one, items))
    else:
        results = [one(it) for it in items]
    return [r for r in results if r is not None]


def _raise_first(problems: list[str]) -> None:
    if problems:
        more = f" (and {len(problems) - 1} more bad files)" if len(problems) > 1 else ""
        raise DataError(problems[0] + more)


def check_dataset(root: str | Path, paired: bool = True) -> dict[str, int]:
    """Decode and check every image of a normalised dataset (the prepare stage, before training).

    Test images must hold the SSIM window; the training patch is checked when training starts
    (it depends on the model's settings, which the prepare stage does not read).
    """
    root = Path(root)
    counts, problems = {}, []
    for split in ("train", "test"):
        folder = root / split
        if not folder.is_dir():
            continue
        items = layouts.find_pairs(folder) if paired else layouts.find_images(folder)
        test = split == "test" and paired
        problems += _problems(items, images.SSIM_WINDOW if test else 1, "the SSIM window", True, images.MAX_PIXELS)
        counts[split] = len(items)
    _raise_first(problems)
    if not counts:
        raise DataError(f"{root}: neither a train nor a test split")
    return counts


def find_split(root: str | Path, split: str | None) -> Path:
    """``root/split`` when the dataset is normalised into splits, else ``root`` itself."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found (run the prepare stage or `msgnn-bench datasets download`)")
    if split and (root / split).is_dir():
        return root / split
    return root


def _sample_rng(seed: int, i: int) -> torch.Generator:
    # a distinct, reproducible stream per sample; the large odd multiplier keeps (seed, i) pairs apart
    return torch.Generator().manual_seed((seed * 1_000_003 + i) % (2**63))


def image_size(pair) -> tuple[int, int]:
    """(h, w) of a pair's rainy image from the file header (half the width for side-by-side files)."""
    info = images.inspect(pair.input)
    return (info.height, info.width // 2) if getattr(pair, "rainy_side", None) else (info.height, info.width)


class TrainPatches(Dataset):
    """Item ``i`` of an endless stream of random paired crops (optionally h-flipped)."""

    def __init__(self, root: str | Path, patch: int, seed: int = 0, hflip: bool = True,
                 exemplar: bool = False, split: str = "train", length: int | None = None):
        self.pairs = layouts.find_pairs(find_split(root, split))
        if not self.pairs:
            raise DataError(f"{root}: no image pairs found")
        # named before the first step; full decoding was done by the prepare stage
        check_items(self.pairs, min_side=patch, why=f"the training patch {patch}")
        self.patch, self.seed, self.hflip, self.exemplar = patch, seed, hflip, exemplar
        self.length = length if length is not None else len(self.pairs)
        self._perm_cache: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.length

    def _image_index(self, i: int) -> int:
        n = len(self.pairs)
        epoch, pos = divmod(i, n)
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._perm_cache = (epoch, torch.randperm(n, generator=g))
        return int(self._perm_cache[1][pos])

    def _crop(self, arrs: list[np.ndarray], g: torch.Generator, name: Path) -> list[np.ndarray]:
        h, w = arrs[0].shape[:2]
        p = self.patch
        if h < p or w < p:
            raise DataError(f"{name}: image {w}x{h} is smaller than the training patch {p}")
        y = int(torch.randint(0, h - p + 1, (1,), generator=g))
        x = int(torch.randint(0, w - p + 1, (1,), generator=g))
        return [a[y:y + p, x:x + p] for a in arrs]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = _sample_rng(self.seed, i)
        k = self._image_index(i)
        pair = self.pairs[k]
        rainy, clean = self._crop(list(load_pair(pair)), g, pair.input)
        if self.hflip and bool(torch.rand((), generator=g) < 0.5):
            rainy, clean = rainy[:, ::-1], clean[:, ::-1]
        item = {"input": to_tensor(rainy), "target": to_tensor(clean)}
        if self.exemplar:
            # MSGNN's exemplar: the rainy half of a random *other* training image (paper, Sec. 4.2)
            n = len(self.pairs)
            j = (k + 1 + int(torch.randint(0, max(n - 1, 1), (1,), generator=g))) % n if n > 1 else k
            (ex,) = self._crop([load_image(self.pairs[j].input)], g, self.pairs[j].input)
            item["exemplar"] = to_tensor(ex)
        return item


@dataclass
class EvalItem:
    name: str
    input: torch.Tensor  # [3,H,W]
    target: torch.Tensor | None


class EvalImages(Dataset):
    """Full test images of a paired folder (any supported layout), or unpaired images."""

    def __init__(self, root: str | Path, split: str = "test", paired: bool = True, limit: int | None = None,
                 max_pixels: int = images.MAX_PIXELS, check: bool = True):
        folder = find_split(root, split)
        self.paired, self.max_pixels = paired, max_pixels
        self.items = layouts.find_pairs(folder) if paired else layouts.find_images(folder)
        if not self.items:
            raise DataError(f"{folder}: no {'image pairs' if paired else 'images'} found")
        if limit:
            self.items = self.items[:limit]
        if check:
            self.check()

    def check(self) -> None:
        """Every file decoded once before the model sees any (test sets are small)."""
        check_items(self.items, min_side=images.SSIM_WINDOW if self.paired else 1,
                    why="the SSIM window", decode=True, max_pixels=self.max_pixels)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> EvalItem:
        it = self.items[i]
        if self.paired:
            rainy, clean = load_pair(it, self.max_pixels)
            return EvalItem(str(it.id), to_tensor(rainy), to_tensor(clean))
        path = Path(getattr(it, "input", it))
        return EvalItem(path.stem, to_tensor(load_image(path, self.max_pixels)), None)


def eval_exemplar(root: str | Path, source: str, seed: int, test_ds: EvalImages | None = None) -> torch.Tensor:
    """The fixed exemplar used for a whole evaluation (MSGNN).

    ``source='train'`` (default, the paper's intent: an *external* image the model never has
    to restore) picks a seeded training-split rainy image; ``'test'`` reproduces the official
    code, which takes it from the test folder.
    """
    if source == "test":
        if test_ds is None:
            raise ValueError("exemplar source 'test' needs the test dataset")
        g = torch.Generator().manual_seed(seed)
        return test_ds[int(torch.randint(len(test_ds), (1,), generator=g))].input
    if source != "train":
        raise ValueError(f"unknown exemplar source {source!r}; valid: train, test")
    pairs = layouts.find_pairs(find_split(root, "train"))
    g = torch.Generator().manual_seed(seed)
    return to_tensor(load_image(pairs[int(torch.randint(len(pairs), (1,), generator=g))].input))
