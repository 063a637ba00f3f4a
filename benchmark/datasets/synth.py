"""rain-synth: the embedded, offline, deterministic synthetic deraining dataset.

Rain streaks are made the way the classic synthetic sets describe them: sparse random
"drops" (uniform noise above a density threshold), smeared by a motion-blur line kernel of
some length and angle, lightly softened, scaled by an intensity and added onto a clean
background. Backgrounds are the natural colour photos that scikit-image ships inside its
wheel, so nothing is downloaded. Each background is split by columns: the left part feeds
training crops, the right part test crops, so no test pixel is ever seen in training.

Everything is driven by one ``torch.Generator`` seeded from params, hence byte-identical
output on every machine for the same parameters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

BACKGROUNDS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle")


@dataclass(frozen=True)
class SynthParams:
    """Generator settings (params.yaml ``datasets.rain-synth``)."""

    seed: int = 0
    n_train: int = 200
    n_test: int = 20
    train_size: int = 96  # square training images; the engine crops patches from them
    test_size: tuple[int, int] = (96, 128)  # (h, w) of test images: non-square on purpose
    train_fraction: float = 0.7  # share of each background's width reserved for training crops
    density: tuple[float, float] = (0.004, 0.02)  # fraction of pixels that start a streak
    length: tuple[int, int] = (7, 21)  # streak length in pixels
    angle: tuple[float, float] = (-25.0, 25.0)  # degrees from vertical
    intensity: tuple[float, float] = (0.5, 0.9)
    extra: dict = field(default_factory=dict)  # unused; keeps the dataclass hashable-friendly


def _load_background(name: str) -> torch.Tensor:
    from skimage import data as skdata

    img = getattr(skdata, name)()
    if isinstance(img, tuple):  # stereo_motorcycle returns (left, right, disparity)
        img = img[0]
    img = np.ascontiguousarray(img[..., :3])
    return torch.from_numpy(img).permute(2, 0, 1).float().div(255.0)


_BG_CACHE: dict[str, torch.Tensor] = {}


def backgrounds() -> list[torch.Tensor]:
    """The clean background photos as float [3,H,W] tensors (cached)."""
    for n in BACKGROUNDS:
        if n not in _BG_CACHE:
            _BG_CACHE[n] = _load_background(n)
    return [_BG_CACHE[n] for n in BACKGROUNDS]


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=g).item()


def _line_kernel(length: int, angle_deg: float) -> torch.Tensor:
    """Normalised motion-blur kernel: a line of ``length`` pixels tilted ``angle`` from vertical."""
    size = length if length % 2 == 1 else length + 1
    k = torch.zeros(size, size)
    c = size // 2
    a = math.radians(angle_deg)
    # sample densely along the segment so tilted lines have no gaps
    for t in torch.linspace(-(length - 1) / 2, (length - 1) / 2, steps=4 * length):
        y = int(round(c + float(t) * math.cos(a)))
        x = int(round(c + float(t) * math.sin(a)))
        k[y, x] = 1.0
    return k / k.sum()


def rain_layer(h: int, w: int, p: SynthParams, g: torch.Generator) -> torch.Tensor:
    """One [1,h,w] streak map in [0,1] (identical across colour channels, as rain is near-white)."""
    density = _uniform(g, *p.density)
    length = int(round(_uniform(g, *p.length)))
    angle = _uniform(g, *p.angle)
    intensity = _uniform(g, *p.intensity)
    drops = (torch.rand(1, 1, h, w, generator=g) < density).float()
    drops = drops * (0.5 + 0.5 * torch.rand(1, 1, h, w, generator=g))  # uneven drop brightness
    k = _line_kernel(length, angle)[None, None]
    pad = k.shape[-1] // 2
    streaks = F.conv2d(F.pad(drops, (pad, pad, pad, pad), mode="reflect" if min(h, w) > pad else "constant"), k)
    # soften: a small box blur makes streaks look like out-of-focus rain rather than pixel lines
    streaks = F.avg_pool2d(F.pad(streaks, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    streaks = streaks / streaks.amax().clamp_min(1e-6)
    return (intensity * streaks)[0]


def _crop(g: torch.Generator, split: str, hw: tuple[int, int], frac: float) -> torch.Tensor:
    bgs = backgrounds()
    bg = bgs[int(torch.randint(len(bgs), (1,), generator=g))]
    h, w = hw
    H, W = bg.shape[1:]
    cut = int(W * frac)
    x_lo, x_hi = (0, cut - w) if split == "train" else (cut, W - w)
    if x_hi < x_lo or H < h:
        raise ValueError(f"rain-synth: crop {hw} does not fit the {split} part of a {H}x{W} background")
    y = int(torch.randint(0, H - h + 1, (1,), generator=g))
    x = int(torch.randint(x_lo, x_hi + 1, (1,), generator=g))
    return bg[:, y : y + h, x : x + w]


def make_pair(g: torch.Generator, p: SynthParams, split: str, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(rainy, clean) float [3,h,w] in [0,1]; rainy is quantised to uint8 levels like a saved PNG."""
    clean = _crop(g, split, hw, p.train_fraction)
    clean = (clean * 255).round() / 255
    rainy = (clean + rain_layer(hw[0], hw[1], p, g)).clamp(0, 1)
    return (rainy * 255).round() / 255, clean


def make_batch(batch: int, size: int | tuple[int, int], seed: int, split: str = "train",
               params: SynthParams | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of rain-synth pairs generated in memory (for tests and quick checks)."""
    p = params or SynthParams()
    hw = (size, size) if isinstance(size, int) else tuple(size)
    g = torch.Generator().manual_seed(seed)
    pairs = [make_pair(g, p, split, hw) for _ in range(batch)]
    return torch.stack([r for r, _ in pairs]), torch.stack([c for _, c in pairs])


def generate(root: str | Path, p: SynthParams) -> dict[str, int]:
    """Write ``root/{train,test}/{input,target}/<id>.png``; returns the image count per split.

    Files are written into a temporary sibling folder and moved into place at the end, so an
    interrupted run never leaves a half-written dataset behind.
    """
    import shutil

    from PIL import Image

    root = Path(root)
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    g = torch.Generator().manual_seed(p.seed)
    counts = {}
    target = tmp
    try:
        for split, n, hw in (("train", p.n_train, (p.train_size, p.train_size)),
                             ("test", p.n_test, tuple(p.test_size))):
            for sub in ("input", "target"):
                target = tmp / split / sub
                target.mkdir(parents=True, exist_ok=True)
            for i in range(1, n + 1):
                rainy, clean = make_pair(g, p, split, hw)
                for sub, t in (("input", rainy), ("target", clean)):
                    arr = (t * 255).round().byte().permute(1, 2, 0).numpy()
                    target = tmp / split / sub / f"{i}.png"
                    Image.fromarray(arr).save(target)
            counts[split] = n
            # a manifest like a download's, so that `datasets list` and `verify` treat it alike
            from benchmark.datasets.normalise import write_manifest

            # the old module name stays in the text so that the generated data (and its DVC hash) is unchanged
            target = tmp / split / "manifest.json"
            write_manifest(tmp / split, "rain-synth", split, source=f"generated by benchmark.synth (seed {p.seed})")
    except OSError as exc:  # a full disk: one line naming the file, and no half-generated folder left
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(f"{target}: could not write ({exc.strerror or exc}); {root} was left as it was") from None
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return counts
