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

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.metrics import structural_similarity

from benchmark.core.config import PAPER_PROTOCOL
from benchmark.evaluation import metrics


@dataclass(frozen=True)
class Protocol:
    name: str
    # round (half away from zero, MATLAB im2uint8) | round-even (half to even, numpy round) |
    # truncate | None (float output, clipped to [0, 1], not quantised)
    quantise: str | None
    # y-uint8 (MATLAB rgb2ycbcr on uint8, rounded) | y-float (unrounded Y, float64) |
    # y-float32 (unrounded Y held in float32, BasicSR to_y_channel) | rgb
    colour: str
    # wang-valid: Zhou Wang's SSIM_index (11x11 Gaussian, sigma 1.5, mean over the 'valid' map) |
    # wang-valid-downscaled: the same after Wang's automatic f x f box-filter downscaling (PReNet ssim.m) |
    # zero-pad (PyTorch Gaussian SSIM, 'same' zero padding) | skimage-default
    ssim: str
    crop: int = 0  # border pixels removed on every side before scoring
    psnr_cap: float | None = None  # value the script returns for MSE == 0 (None: +inf, our convention)
    source: str = ""


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    # Restormer/MPRNet Deraining/test.py saves img_as_ubyte(clamped output): skimage multiplies by 255 in
    # the output's precision and np.rint()s (ties to even). evaluate_PSNR_SSIM.m then takes the
    # Y of rgb2ycbcr(uint8) (MATLAB rounds it to uint8),
    # PSNR 20 log10(255 / RMSE), SSIM = the bundled SSIM_index (Zhou Wang's 2003 ssim_index.m, v1.0):
    # filter2(..., 'valid') with an 11x11 Gaussian, mean2 of the map. Not MATLAB's built-in ssim(), which
    # pads (replicate) and averages the full map, and not Wang's later ssim.m, which downscales (prenet).
    Protocol("matlab-y", "round-even", "y-uint8", "wang-valid",
             source="Restormer/MPRNet evaluate_PSNR_SSIM.m: Y of rgb2ycbcr(uint8), Zhou Wang's SSIM_index "
                    "(v1.0, 'valid' region)"),
    # PReNet test_PReNet.py stores uint8(255*out) (truncation); statistic/statistic_*.m score
    # rgb2ycbcr(im2double(img)) (unrounded Y) with psnr.m and statistic/ssim.m on Y*255. That ssim.m is
    # Wang's 2009 version: before the SSIM map it shrinks images by f = max(1, round(min(M,N)/256))
    # (f x f mean filter, 'symmetric' padding, then every f-th pixel), so f = 2 from a 384-px shorter side.
    Protocol("prenet", "truncate", "y-float", "wang-valid-downscaled",
             source="csdwren/PReNet test_PReNet.py + statistic/statistic_*.m + statistic/ssim.m (downscaling)"),
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
    # BasicSR (NTIRE challenges): tensor2img quantises with numpy round() (half to even) on the float32
    # x255 product; calculate_psnr/calculate_ssim shave crop_border = 4 pixels, then to_y_channel gives
    # an UNROUNDED Y computed in float32 (bgr2ycbcr on float32 [0, 1] data, x255); SSIM is _ssim:
    # cv2.filter2D 11x11 Gaussian, [5:-5, 5:-5] = the valid region, i.e. Wang's SSIM_index.
    Protocol("ntire-crop", "round-even", "y-float32", "wang-valid", crop=4,
             source="XPixelGroup/BasicSR basicsr/metrics/psnr_ssim.py (crop_border=4, test_y_channel=True), "
                    "metric_util.to_y_channel (float Y), utils/img_util.tensor2img (round)"),
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


def _round_even_uint8(out: np.ndarray) -> np.ndarray:
    """Clamp to [0, 1], x255 in the output's own precision, round ties to even: skimage img_as_ubyte
    (np.rint) and BasicSR tensor2img (ndarray.round() after .float(), a no-op on float32 network outputs)."""
    if np.isnan(out).any():
        raise ValueError("output contains NaN values")
    return np.rint(np.clip(out, 0.0, 1.0) * out.dtype.type(255)).astype(np.uint8)


def _y_float32(img: np.ndarray) -> np.ndarray:
    """BasicSR to_y_channel on a uint8 RGB image: unrounded Y, rounded to float32 where BasicSR stores it
    (uint8 / 255 in float32, BT.601 dot product, /255 back to float32, then x255 in float32)."""
    # the float32 quotient, widened: BasicSR's np.dot with a Python list of coefficients computes in float64
    x = (img.astype(np.float32) / np.float32(255.0)).astype(np.float64)
    y = x[..., 0] * 65.481 + x[..., 1] * 128.553 + x[..., 2] * 24.966 + 16.0
    return ((y / 255.0).astype(np.float32) * np.float32(255.0)).astype(np.float64)


def _matlab_round(x: float) -> int:
    return int(math.floor(x + 0.5))  # MATLAB round(): half away from zero (x > 0 here)


def wang_downscale(img: np.ndarray) -> np.ndarray:
    """The automatic downscaling of Zhou Wang's 2009 ssim.m (PReNet statistic/ssim.m) on one [M, N] image.

    f = max(1, round(min(M, N) / 256)); for f > 1 an f x f mean filter, imfilter(..., 'symmetric', 'same'),
    then img(1:f:end, 1:f:end). imfilter correlates with the kernel's centre at floor((f+1)/2) (1-based),
    so output pixel i averages rows i-(c-1) .. i+(f-c): for f = 2 the pixel and its successor, not its
    predecessor, which decides which 2x2 blocks survive the subsampling.
    """
    m, n = img.shape
    f = max(1, _matlab_round(min(m, n) / 256))
    if f == 1:
        return img
    c = (f + 1) // 2
    pad = (c - 1, f - c)
    p = np.pad(img.astype(np.float64), (pad, pad), mode="symmetric")  # MATLAB 'symmetric' repeats the edge
    acc = np.zeros((m, n))
    for dy in range(f):
        for dx in range(f):
            acc += p[dy:dy + m, dx:dx + n]
    return (acc / (f * f))[::f, ::f]


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
        a = _round_even_uint8(out) if p.quantise == "round-even" else metrics.to_uint8(out, p.quantise)
        b = target
        if p.colour == "y-float32":
            a, b = _y_float32(a), _y_float32(b)
        elif p.colour != "rgb":
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
        # colour conversion is per pixel, so cropping after it equals BasicSR's crop-then-convert
        a, b, raw = a[c:-c, c:-c], b[c:-c, c:-c], raw[c:-c, c:-c]
    ps = metrics.psnr(a, b, 255.0)
    if p.psnr_cap is not None and ps == float("inf"):
        ps = p.psnr_cap
    if p.ssim == "wang-valid":
        ss = metrics.ssim(a, b, 255.0)  # skimage with Wang's settings: the mean of the valid map
    elif p.ssim == "wang-valid-downscaled":
        ss = metrics.ssim(wang_downscale(a), wang_downscale(b), 255.0)
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
