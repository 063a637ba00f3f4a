"""Named scoring protocols: how a paper turned a network output into its PSNR/SSIM numbers.

A protocol = output quantisation + colour space + PSNR/SSIM definition + border crop. Deraining
papers differ in all four, and the differences (1–2 dB between Y and RGB) are larger than most
gaps in a results table, so every evaluation computes every protocol from the same network output
(``score_all``) and a table says which protocol each column is.

Inputs are the *raw* network output (float RGB [H, W, 3] on the [0, 1] scale, not clamped: one
protocol scores SSIM before clipping) and the uint8 RGB target. Flat result keys are
``psnr:<protocol>`` / ``ssim:<protocol>`` (per_image.csv columns, metrics.json, CI gate keys).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.metrics import structural_similarity

from benchmark.core.config import PAPER_PROTOCOL
from benchmark.evaluation import metrics


@dataclass(frozen=True)
class Protocol:
    name: str
    quantise: str | None  # round | truncate | None (float output, clipped to [0, 1], not quantised)
    colour: str  # y-uint8 (MATLAB rgb2ycbcr on uint8, rounded) | y-float (unrounded Y) | rgb
    ssim: str  # matlab | zero-pad (PyTorch Gaussian SSIM, 'same' zero padding) | skimage-default
    crop: int = 0  # border pixels removed on every side before scoring
    psnr_cap: float | None = None  # value the script returns for MSE == 0 (None: +inf, our convention)
    source: str = ""


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    # Restormer/MPRNet evaluate_PSNR_SSIM.m: Y of rgb2ycbcr(uint8) (rounded), Wang's ssim ('valid').
    Protocol("matlab-y", "round", "y-uint8", "matlab",
             source="Restormer/MPRNet evaluate_PSNR_SSIM.m (reference/datasets.md §6)"),
    # PReNet test_PReNet.py stores uint8(255*out) (truncation); statistic/*.m score
    # rgb2ycbcr(im2double(img)) (unrounded Y) with psnr.m and Wang's ssim.m on Y*255.
    Protocol("prenet", "truncate", "y-float", "matlab",
             source="csdwren/PReNet test_PReNet.py + statistic/statistic_*.m"),
    # supersupercong/MSGNN config/eval.py: PSNR on all 3 channels of clip(255*out, 0, 255) (never
    # quantised), 20 log10(1/sqrt(MSE)) on /255 values, 100 when MSE == 0; SSIM = cal_ssim.SSIM on the
    # *unclipped* output: 11x11 Gaussian (sigma 1.5) depthwise conv, zero padding 5, C1 = 0.01^2,
    # C2 = 0.03^2 on [0, 1] data, mean over the whole map and the channels.
    Protocol("msgnn", None, "rgb", "zero-pad", psnr_cap=100.0,
             source="supersupercong/MSGNN config/eval.py (PSNR) + cal_ssim.py (SSIM)"),
    # SPANet main.py (and MOSS's test script): RGB clipped to [0, 1], skimage compare_psnr (data
    # range 1 for non-negative floats) and compare_ssim(multichannel=True) with its defaults: 7x7
    # uniform window, sample covariance, data_range = 2 (the float dtype range -1..1 of old skimage).
    Protocol("skimage-default", None, "rgb", "skimage-default",
             source="stevewongv/SPANet main.py (skimage compare_psnr/compare_ssim defaults)"),
    # NTIRE/BasicSR style: the matlab-y statistic with a border of 4 pixels shaved off every side
    # (basicsr/metrics/psnr_ssim.py crop_border), as challenge reports do.
    Protocol("ntire-crop", "round", "y-uint8", "matlab", crop=4,
             source="BasicSR basicsr/metrics/psnr_ssim.py (crop_border=4, test_y_channel=True)"),
)}
ALL = tuple(PROTOCOLS)
PAPER = PAPER_PROTOCOL  # the protocol of the paper's own tables


def get(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown scoring protocol {name!r}; valid: {', '.join(ALL)}, all")
    return PROTOCOLS[name]


_GAUSS = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
_GAUSS /= _GAUSS.sum()


def _filter(img: np.ndarray) -> np.ndarray:
    # the 11x11 Gaussian is separable; mode="constant" (cval 0) = the zero padding of conv2d(padding=5)
    out = ndimage.correlate1d(img, _GAUSS, axis=0, mode="constant", cval=0.0)
    return ndimage.correlate1d(out, _GAUSS, axis=1, mode="constant", cval=0.0)


def _ssim_zero_pad(x: np.ndarray, y: np.ndarray) -> float:
    """MSGNN's cal_ssim.SSIM on [0, 1] HWC arrays, in float64 (its GPU run is float32)."""
    c1, c2 = 0.01**2, 0.03**2
    maps = []
    for k in range(x.shape[-1]):
        a, b = x[..., k], y[..., k]
        mu_a, mu_b = _filter(a), _filter(b)
        saa = _filter(a * a) - mu_a**2
        sbb = _filter(b * b) - mu_b**2
        sab = _filter(a * b) - mu_a * mu_b
        maps.append(((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2)))
    return float(np.mean(maps))


def score(p: Protocol, out: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(PSNR, SSIM) of one raw float output [H, W, 3] against its uint8 target under protocol ``p``."""
    out = metrics._as_rgb(np.asarray(out), "output")
    target = metrics._as_rgb(np.asarray(target), "target")
    if target.dtype != np.uint8:
        raise ValueError(f"target must be uint8 RGB, got {target.dtype}")
    if out.shape != target.shape:
        raise ValueError(f"output {out.shape} and target {target.shape} differ in shape")
    if not np.issubdtype(out.dtype, np.floating):
        raise ValueError(f"output must be the float network output in [0, 1], got {out.dtype}")
    raw = out
    if p.quantise:
        a, b = metrics.to_uint8(out, p.quantise), target
        if p.colour != "rgb":
            a, b = metrics._y_pair(a, b, "uint8" if p.colour == "y-uint8" else "float")
        a, b = a.astype(np.float64), b.astype(np.float64)
    else:
        if np.isnan(out).any():
            raise ValueError("output contains NaN values")
        a = np.clip(out.astype(np.float64), 0.0, 1.0) * 255.0
        b = target.astype(np.float64)
    if p.crop:
        c = p.crop
        if min(a.shape[:2]) < 2 * c + 11:
            raise ValueError(f"protocol {p.name}: image {a.shape[:2]} too small for a {c}-pixel border crop "
                             "and an 11x11 SSIM window")
        a, b, raw = a[c:-c, c:-c], b[c:-c, c:-c], raw[c:-c, c:-c]
    ps = metrics.psnr(a, b, 255.0)
    if p.psnr_cap is not None and ps == float("inf"):
        ps = p.psnr_cap
    if p.ssim == "matlab":
        ss = metrics.ssim(a, b, 255.0)
    elif p.ssim == "zero-pad":
        ss = _ssim_zero_pad(raw.astype(np.float64), b / 255.0)
    else:  # skimage-default
        ss = float(structural_similarity(a / 255.0, b / 255.0, channel_axis=-1, data_range=2.0))
    return ps, ss


def score_all(out: np.ndarray, target: np.ndarray, names: tuple[str, ...] = ALL) -> dict[str, float]:
    """Every protocol's PSNR and SSIM, flat keys ``psnr:<name>`` / ``ssim:<name>``."""
    res = {}
    for n in names:
        ps, ss = score(get(n), out, target)
        res[f"psnr:{n}"], res[f"ssim:{n}"] = ps, ss
    return res
