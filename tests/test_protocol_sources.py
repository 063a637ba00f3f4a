"""Each scoring protocol against an independent transcription of its source, on real image pairs.

The transcriptions below are written from the primary scripts (cited per function) in plain
numpy/scipy and call none of the suite's metric code, so a shared mistake cannot hide. The pairs
come from ../shared/data (tests/conftest.py); none of the real test sets there has a shorter side
of 384 px or more, so the downscaling branch of PReNet's ssim.m is exercised on real pairs upsampled
with PIL bicubic (768x512: f = 2; 1051x701, odd sizes: f = 3).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage, signal

from benchmark.evaluation import protocols


# --- transcriptions ------------------------------------------------------------------------------

def _gauss11() -> np.ndarray:
    # fspecial('gaussian', 11, 1.5) = cv2.getGaussianKernel(11, 1.5) outer itself: exp(-r^2 / 2s^2), sum 1
    x = np.arange(11) - 5.0
    g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    return g / g.sum()


def ssim_index_valid(img1: np.ndarray, img2: np.ndarray, L: float = 255.0) -> float:
    """Zhou Wang's SSIM_index: filter2(window, ., 'valid') (a correlation), mean2 of the map."""
    w = _gauss11()
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2

    def f2(x):
        return signal.correlate2d(x, w, mode="valid")

    mu1, mu2 = f2(img1), f2(img2)
    s11 = f2(img1 * img1) - mu1 * mu1
    s22 = f2(img2 * img2) - mu2 * mu2
    s12 = f2(img1 * img2) - mu1 * mu2
    m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s11 + s22 + c2))
    return float(m.mean())


def matlab_imfilter_box(img: np.ndarray, f: int) -> np.ndarray:
    """imfilter(img, ones(f)/f^2, 'symmetric', 'same'): MATLAB puts the kernel centre at floor((f+1)/2),
    scipy at f // 2; origin -1 moves scipy's window one pixel forward for even f ('reflect' = 'symmetric')."""
    return ndimage.correlate(img, np.full((f, f), 1.0 / f**2), mode="reflect", origin=-1 if f % 2 == 0 else 0)


def prenet_ssim_m(img1: np.ndarray, img2: np.ndarray) -> float:
    """PReNet statistic/ssim.m (Wang's 2009 ssim.m), default K, window and L = 255."""
    M, N = img1.shape
    f = max(1, math.floor(min(M, N) / 256 + 0.5))  # MATLAB round: half away from zero
    if f > 1:
        img1 = matlab_imfilter_box(img1, f)[0::f, 0::f]
        img2 = matlab_imfilter_box(img2, f)[0::f, 0::f]
    return ssim_index_valid(img1, img2)


def prenet_reference(out: np.ndarray, tgt: np.ndarray) -> tuple[float, float]:
    """test_PReNet.py: np.uint8(255 * clamp(out)) (float32 product, truncation); statistic_*.m:
    rgb2ycbcr(im2double(.)) Y, psnr.m (fmax = 1 since max <= 2), ssim(x*255, x_true*255)."""
    u8 = np.uint8(np.float32(255) * np.clip(out.astype(np.float32), 0, 1))

    def y(img):  # MATLAB rgb2ycbcr on double: imlincomb(T/255 row, R, G, B, 16/255)
        d = img / 255.0
        return 65.481 / 255 * d[..., 0] + 128.553 / 255 * d[..., 1] + 24.966 / 255 * d[..., 2] + 16 / 255

    x, xt = y(u8), y(tgt)
    mse = np.sum((x - xt) ** 2) / x.size
    return 10 * math.log10(1.0 / mse), prenet_ssim_m(x * 255, xt * 255)


def basicsr_reference(out: np.ndarray, tgt: np.ndarray, crop: int = 4) -> tuple[float, float]:
    """BasicSR: tensor2img (RGB->BGR, (x * 255.0).round() in float32, uint8), then calculate_psnr /
    calculate_ssim(crop_border=4, test_y_channel=True) with to_y_channel (float Y, not rounded)."""
    def tensor2img(o):
        return (np.clip(o.astype(np.float32), 0, 1) * 255.0).round().astype(np.uint8)[..., ::-1]

    def to_y_channel(img):
        img = img.astype(np.float32) / 255.0
        yy = np.dot(img, [24.966, 128.553, 65.481]) + 16.0  # bgr2ycbcr(y_only=True)
        yy = (yy / 255.0).astype(np.float32)  # _convert_output_type_range(float32)
        return yy[..., None] * 255.0

    a, b = tensor2img(out), tgt[..., ::-1]
    a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
    a, b = to_y_channel(a).astype(np.float64), to_y_channel(b).astype(np.float64)
    psnr = 10.0 * np.log10(255.0 * 255.0 / np.mean((a - b) ** 2))
    ssim = np.mean([ssim_index_valid(a[..., i], b[..., i]) for i in range(a.shape[2])])
    return float(psnr), float(ssim)


def restormer_reference(out: np.ndarray, tgt: np.ndarray, exact_y: bool = False) -> tuple[float, float]:
    """Restormer Deraining/test.py img_as_ubyte (np.rint of x*255 in the output's precision), then
    evaluate_PSNR_SSIM.m: Y of rgb2ycbcr(uint8) (uint8, rounded), 20 log10(255/rmse), SSIM_index.

    rgb2ycbcr's documented formula is Y = 16 + 65.481 R' + 128.553 G' + 24.966 B' with R' = R/255.
    194 of the 2^24 uint8 colours give exactly Y = k + 0.5, where the rounded Y depends on the order of
    the double-precision operations (MATLAB's imlincomb cannot be run here). Default: the formula in
    that order in double; ``exact_y``: integer arithmetic, ties half away from zero (MATLAB round).
    """
    u8 = np.rint(np.clip(out, 0, 1) * out.dtype.type(255)).astype(np.uint8)

    def y(img):
        if exact_y:
            i = img.astype(np.int64)
            num = 65481 * i[..., 0] + 128553 * i[..., 1] + 24966 * i[..., 2] + 16 * 255000
            return ((num + 127500) // 255000).astype(np.float64)
        d = img / 255.0
        return np.floor(16 + 65.481 * d[..., 0] + 128.553 * d[..., 1] + 24.966 * d[..., 2] + 0.5)

    a, b = y(u8), y(tgt)
    rmse = math.sqrt(np.mean((a - b) ** 2))
    return 20 * math.log10(255 / rmse), ssim_index_valid(a, b)


# --- real pairs ------------------------------------------------------------------------------------

def _rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _up(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC))


@pytest.fixture(scope="module")
def pairs(shared) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    d = shared / "data"
    l_tgt = _rgb(d / "Rain100L_old_full/target/1.png")
    derained = _rgb(d / "published_outputs/Rain2Avoid_Rain100L/1.png")  # a real method's output
    h_rain, h_clean = _rgb(d / "Rain100H_old_full/rain/norain-2.png"), _rgb(d / "Rain100H_old_full/norain/norain-2.png")
    h1_rain, h1_clean = _rgb(d / "Rain100H_old_full/rain/norain-1.png"), _rgb(d / "Rain100H_old_full/norain/norain-1.png")
    return {
        # float32 /255 of a uint8 image: x255 lands just below some integers, so truncation matters
        "rain100l-1 (Rain2Avoid output, 480x320)": ((derained / 255.0).astype(np.float32), l_tgt),
        # midpoints of rainy and clean: many x.5 ties, so the rounding rule matters; odd size 321x481
        "rain100h-2 (rain/clean midpoint, 321x481)": (((h_rain.astype(np.float64) + h_clean) / 510).astype(np.float32),
                                                      h_clean),
        # upsampled (no real pair reaches 384 px): PReNet's ssim.m downscales by f = 2 ...
        "rain100l-1 upsampled 768x512 (f=2)": ((_up(derained, (768, 512)) / 255.0).astype(np.float32),
                                               _up(l_tgt, (768, 512))),
        # ... and by f = 3, with odd sizes so the 'symmetric' padding at the far edges is used
        "rain100h-1 upsampled 1051x701 (f=3)": ((_up(h1_rain, (1051, 701)) / 255.0).astype(np.float32),
                                                _up(h1_clean, (1051, 701))),
    }


# --- tests ---------------------------------------------------------------------------------------

def test_transcribed_imfilter_and_our_downscale_agree_with_hand_values():
    # imfilter([1 2 3 4; ...], ones(2)/4, 'symmetric'): pixel i averages i and i+1; the last row/column
    # repeats itself (symmetric padding). Subsampling 1:2:end keeps the 2x2 block means.
    a = np.arange(1.0, 17.0).reshape(4, 4)
    assert matlab_imfilter_box(a, 2)[0].tolist() == [3.5, 4.5, 5.5, 6.0]
    assert matlab_imfilter_box(a, 2)[::2, ::2].tolist() == [[3.5, 5.5], [11.5, 13.5]]
    # ours on a 512x512 ramp (f = 2): the 2x2 block means, (0,0) block first
    big = np.add.outer(np.arange(512.0) * 1000, np.arange(512.0))
    assert np.array_equal(protocols.wang_downscale(big), big.reshape(256, 2, 256, 2).mean(axis=(1, 3)))
    assert protocols.wang_downscale(big[:383, :500]).shape == (383, 500)  # round(383/256) = 1: untouched
    assert protocols.wang_downscale(big[:384, :500]).shape == (192, 250)  # round(1.5) = 2 (half away from 0)


@pytest.mark.parametrize("name, reference", [("prenet", prenet_reference), ("ntire-crop", basicsr_reference),
                                             ("matlab-y", restormer_reference)])
def test_protocol_matches_transcription_of_its_source(pairs, name, reference):
    for label, (out, tgt) in pairs.items():
        if name != "prenet" and "f=3" in label:
            continue  # the large pair only matters for the downscaling branch
        got = protocols.score(protocols.get(name), out, tgt)
        exp = reference(out, tgt)
        assert got[0] == pytest.approx(exp[0], abs=1e-6), (name, label, "psnr")
        assert got[1] == pytest.approx(exp[1], abs=1e-6), (name, label, "ssim")


def test_the_corrections_move_the_numbers_they_should(pairs):
    """Guards against the old definitions: no downscaling, rounded Y, ties away from zero."""
    out, tgt = pairs["rain100l-1 upsampled 768x512 (f=2)"]
    ps, ss = protocols.score(protocols.get("prenet"), out, tgt)
    u8 = np.uint8(np.float32(255) * np.clip(out, 0, 1))
    y = lambda i: 16 + (65.481 * i[..., 0] + 128.553 * i[..., 1] + 24.966 * i[..., 2]) / 255.0  # noqa: E731
    undownscaled = ssim_index_valid(y(u8.astype(np.float64)), y(tgt.astype(np.float64)))
    assert ss < undownscaled - 1e-3  # downscaling lowers the SSIM of this pair (measured: see docs/metrics.md)
    out, tgt = pairs["rain100h-2 (rain/clean midpoint, 321x481)"]
    ntire = protocols.score(protocols.get("ntire-crop"), out, tgt)
    mat = protocols.score(protocols.get("matlab-y"), out[4:-4, 4:-4], tgt[4:-4, 4:-4])  # rounded Y, same crop
    assert abs(ntire[0] - mat[0]) > 1e-3


def test_matlab_y_tie_rounding_is_bounded(pairs):
    """The only freedom left in matlab-y: the 194 colours whose exact Y ends in .5 (see restormer_reference)."""
    for label, (out, tgt) in pairs.items():
        if "f=3" in label:
            continue
        got = protocols.score(protocols.get("matlab-y"), out, tgt)
        exact = restormer_reference(out, tgt, exact_y=True)
        assert got[0] == pytest.approx(exact[0], abs=1e-4) and got[1] == pytest.approx(exact[1], abs=1e-5), label
