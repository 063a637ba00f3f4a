"""Datasets for training (random paired patches) and evaluation (full images).

Pairs are found by ``benchmark.layouts`` (every real naming layout of the field, plus our
normalised ``{input,target}/<id>.png``), always in sorted order. Sampling is a pure function of
(seed, sample index): sample ``i`` belongs to epoch ``i // n``, whose image order is a seeded
permutation, and its crop/flip come from a generator seeded by ``(seed, i)``. Resuming at step
``s`` therefore only needs ``s`` — no sampler state — and a run killed half way sees exactly
the same batches as one that never stopped.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from benchmark import layouts


class DataError(ValueError):
    """Bad input data; the message names the file and the problem."""


def load_image(path: str | Path) -> np.ndarray:
    """Read an image as uint8 RGB [H,W,3]; raise DataError naming the file if it cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("RGB", "RGBA", "L", "P", "LA"):
                raise DataError(f"{path}: unsupported image mode {im.mode!r} (need 8-bit RGB or grey)")
            arr = np.array(im.convert("RGB"))  # a writable copy: torch.from_numpy needs one
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: not a readable image ({exc}); re-download or remove it") from exc
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise DataError(f"{path}: empty image")
    return arr


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 [H,W,3] → float [3,H,W] in [0,1]."""
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float().div_(255.0)


def load_pair(pair) -> tuple[np.ndarray, np.ndarray]:
    """Both images of a pair; a size mismatch is a DataError naming both files.

    Side-by-side files (DID-MDN, RESCAN/DCSFN training data) hold both halves in one image;
    ``pair.rainy_side`` says which half is rainy.
    """
    if getattr(pair, "rainy_side", None):
        both = load_image(pair.input)
        if both.shape[1] % 2:
            raise DataError(f"{pair.input}: odd width {both.shape[1]} cannot be split into two equal halves")
        left, right = np.split(both, 2, axis=1)
        return (left, right) if pair.rainy_side == "left" else (right, left)
    rainy, clean = load_image(pair.input), load_image(pair.target)
    if rainy.shape != clean.shape:
        raise DataError(f"{pair.input}: size {rainy.shape[1]}x{rainy.shape[0]} differs from its target "
                        f"{pair.target} ({clean.shape[1]}x{clean.shape[0]})")
    return rainy, clean


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
    try:
        with Image.open(pair.input) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{pair.input}: not a readable image ({exc}); re-download or remove it") from exc
    return (h, w // 2) if getattr(pair, "rainy_side", None) else (h, w)


class TrainPatches(Dataset):
    """Item ``i`` of an endless stream of random paired crops (optionally h-flipped)."""

    def __init__(self, root: str | Path, patch: int, seed: int = 0, hflip: bool = True,
                 exemplar: bool = False, split: str = "train", length: int | None = None):
        self.pairs = layouts.find_pairs(find_split(root, split))
        if not self.pairs:
            raise DataError(f"{root}: no image pairs found")
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

    def __init__(self, root: str | Path, split: str = "test", paired: bool = True, limit: int | None = None):
        folder = find_split(root, split)
        self.paired = paired
        self.items = layouts.find_pairs(folder) if paired else layouts.find_images(folder)
        if not self.items:
            raise DataError(f"{folder}: no {'image pairs' if paired else 'images'} found")
        if limit:
            self.items = self.items[:limit]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> EvalItem:
        it = self.items[i]
        if self.paired:
            rainy, clean = load_pair(it)
            return EvalItem(str(it.id), to_tensor(rainy), to_tensor(clean))
        path = Path(getattr(it, "input", it))
        return EvalItem(path.stem, to_tensor(load_image(path)), None)


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
