"""Evaluation metrics: MATLAB-compatible Y-channel PSNR/SSIM, RGB PSNR/SSIM, LPIPS, parameter counts.

The named scoring protocols of the papers (matlab-y, prenet, msgnn, skimage-default, ntire-crop) are
built from these functions in ``benchmark.evaluation.protocols`` (a module of its own to keep both small).

Conventions (docs/metrics.md; the reference is Restormer/MPRNet ``evaluate_PSNR_SSIM.m``):
* Images are uint8 RGB arrays [H, W, 3]. Model outputs are clamped to [0, 1] and quantised with
  ``to_uint8`` first (rounding by default; PReNet's official script truncates).
* Y = MATLAB ``rgb2ycbcr``: Y = 16 + 65.481 R + 128.553 G + 24.966 B with R, G, B in [0, 1].
  ``y_mode="uint8"`` (default): Y rounded half away from zero to uint8, what MATLAB returns for
  uint8 input (Restormer/MPRNet ``evaluate_PSNR_SSIM.m``). ``y_mode="float"``: unrounded Y of the
  uint8 image, i.e. ``rgb2ycbcr(im2double(img))`` as in PReNet's and RCDNet's statistic scripts;
  the published PReNet numbers (docs/models.md, official checkpoints) use this one. The two
  differ by a few hundredths of a dB on PReNet outputs.
* PSNR = 10 log10(255^2 / MSE), MSE over every pixel (and channel, for RGB), in float64.
* SSIM = Wang et al.'s MATLAB ssim: 11x11 Gaussian window (sigma 1.5), K = (0.01, 0.03), L = 255,
  population (not sample) covariance, mean over the 'valid' part of the SSIM map; computed by
  scikit-image's ``structural_similarity`` with exactly those settings. RGB SSIM = mean of the
  three per-channel SSIMs with the same settings.
* Identical images give PSNR = +inf (returned as ``float('inf')``). We do not cap it: a mean
  over images that contains an inf is inf (numpy semantics), which makes a degenerate pair
  visible instead of silently inflating a table by some arbitrary cap.
"""
from __future__ import annotations

import hashlib
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import structural_similarity


# BT.601 luma row of MATLAB rgb2ycbcr, for RGB in [0, 1] and Y on the 0..255 scale.
_Y_COEFFS = (65.481, 128.553, 24.966)
_Y_OFFSET = 16.0


def _as_rgb(img: np.ndarray, name: str = "image") -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"{name} must be an RGB array of shape [H, W, 3], got shape {img.shape}")
    return img


def rgb_to_y(img: np.ndarray, quantise: bool | None = None) -> np.ndarray:
    """Luma of MATLAB ``rgb2ycbcr`` on the 0..255 scale.

    uint8 RGB in [0, 255] or float RGB in [0, 1]. ``quantise`` (default: True for uint8 input,
    False for float input, as MATLAB returns the input's class) rounds Y half away from zero to
    uint8; otherwise the float64 Y is returned (= 255 * MATLAB ``rgb2ycbcr(im2double(img))``).
    """
    img = _as_rgb(img)
    if img.dtype == np.uint8:
        rgb = img.astype(np.float64) / 255.0
    elif np.issubdtype(img.dtype, np.floating):
        if img.size and (img.min() < -1e-6 or img.max() > 1 + 1e-6):
            raise ValueError(f"float images must be RGB in [0, 1]; got values in [{img.min()}, {img.max()}]"
                             " (pass uint8 for 0..255 data)")
        rgb = img.astype(np.float64)
    else:
        raise ValueError(f"rgb_to_y expects uint8 or float RGB, got dtype {img.dtype}")
    y = _Y_OFFSET + _Y_COEFFS[0] * rgb[..., 0] + _Y_COEFFS[1] * rgb[..., 1] + _Y_COEFFS[2] * rgb[..., 2]
    if quantise is None:
        quantise = img.dtype == np.uint8
    if quantise:
        # Y > 0 everywhere, so floor(y + 0.5) is MATLAB's round-half-away-from-zero.
        return np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)
    return y


Y_MODES = ("uint8", "float")


def _y_pair(out: np.ndarray, target: np.ndarray, y_mode: str) -> tuple[np.ndarray, np.ndarray]:
    if y_mode not in Y_MODES:
        raise ValueError(f"unknown y_mode {y_mode!r}; valid: {', '.join(Y_MODES)}")
    q = y_mode == "uint8"
    return rgb_to_y(out, quantise=q), rgb_to_y(target, quantise=q)


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("cannot compare empty images")
    return a, b


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """PSNR in dB over all elements (float64); +inf for identical inputs."""
    a, b = _check_pair(a, b)
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    if mse == 0:
        return float("inf")
    return float(10.0 * math.log10(data_range**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """MATLAB-style SSIM of two grey images [H, W]; for [H, W, C] the mean over channels."""
    a, b = _check_pair(a, b)
    if a.ndim == 3:
        return float(np.mean([ssim(a[..., k], b[..., k], data_range) for k in range(a.shape[-1])]))
    if a.ndim != 2:
        raise ValueError(f"ssim expects [H, W] or [H, W, C] arrays, got shape {a.shape}")
    if min(a.shape) < 11:
        raise ValueError(f"ssim needs images of at least 11x11 pixels (window size), got {a.shape}")
    return float(structural_similarity(
        a.astype(np.float64), b.astype(np.float64), data_range=data_range,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False))


def _check_uint8_rgb(out: np.ndarray, target: np.ndarray) -> None:
    for name, img in (("output", out), ("target", target)):
        _as_rgb(img, name)
        if np.asarray(img).dtype != np.uint8:
            raise ValueError(f"{name} must be uint8 RGB (quantise with to_uint8 first), got {np.asarray(img).dtype}")


def psnr_y(out: np.ndarray, target: np.ndarray, y_mode: str = "uint8") -> float:
    _check_uint8_rgb(out, target)
    return psnr(*_y_pair(out, target, y_mode))


def ssim_y(out: np.ndarray, target: np.ndarray, y_mode: str = "uint8") -> float:
    _check_uint8_rgb(out, target)
    return ssim(*_y_pair(out, target, y_mode))


def psnr_rgb(out: np.ndarray, target: np.ndarray) -> float:
    _check_uint8_rgb(out, target)
    return psnr(out, target)


def ssim_rgb(out: np.ndarray, target: np.ndarray) -> float:
    _check_uint8_rgb(out, target)
    return ssim(out, target)


def image_metrics(out: np.ndarray, target: np.ndarray, y_mode: str = "uint8") -> dict[str, float]:
    """All four pixel metrics of one uint8 RGB output against its uint8 RGB target."""
    _check_uint8_rgb(out, target)
    y_out, y_tgt = _y_pair(out, target, y_mode)
    return {
        "psnr_y": psnr(y_out, y_tgt),
        "ssim_y": ssim(y_out, y_tgt),
        "psnr_rgb": psnr(out, target),
        "ssim_rgb": ssim(out, target),
    }


def to_uint8(img: torch.Tensor | np.ndarray, mode: str = "round") -> np.ndarray:
    """Clamp to [0, 1], scale by 255 and quantise: ``round`` (half away from zero) or ``truncate``.

    Torch tensors are [3, H, W] or [B, 3, H, W] and come back channels-last ([H, W, 3] /
    [B, H, W, 3]); numpy arrays keep their layout. The x255 product is taken in the input's own
    precision (float32 for network outputs), exactly as ``np.uint8(255 * out)`` in PReNet's
    test script, because truncation is sensitive to the last bit.
    """
    if mode not in ("round", "truncate"):
        raise ValueError(f"unknown quantisation mode {mode!r}; valid: round, truncate")
    if isinstance(img, torch.Tensor):
        t = img.detach().cpu()
        arr = (t if t.dtype in (torch.float32, torch.float64) else t.float()).numpy()
        if arr.ndim == 3:
            arr = arr.transpose(1, 2, 0)
        elif arr.ndim == 4:
            arr = arr.transpose(0, 2, 3, 1)
        else:
            raise ValueError(f"to_uint8 expects a [3,H,W] or [B,3,H,W] tensor, got shape {tuple(img.shape)}")
    else:
        arr = np.asarray(img)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"to_uint8 expects float data in [0, 1], got dtype {arr.dtype}")
    if np.isnan(arr).any():  # clipping would silently turn a diverged output into black pixels
        raise ValueError("to_uint8: image contains NaN values")
    scaled = np.clip(arr, 0.0, 1.0) * arr.dtype.type(255)
    if mode == "truncate":
        return scaled.astype(np.uint8)
    # float64 makes the +0.5 exact, so ties really go up (MATLAB im2uint8 behaviour).
    return np.floor(scaled.astype(np.float64) + 0.5).astype(np.uint8)


# torchvision's ImageNet AlexNet; 7be5be79 = sha256 prefix. Its download: the `lpips-alexnet` entry of
# benchmark/weights/checkpoints.yaml (tests check that both name the same file).
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
# torchvision AlexNet conv layers (features.N) -> the lpips slice that holds the same layer.
_ALEX_SLICES = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}


def _find_alexnet(weights_path: str | Path | None) -> Path:
    """Where the AlexNet weights should be: an explicit file, a folder (also <folder>/hub/checkpoints),
    or torch hub's checkpoint folder ($TORCH_HOME/hub/checkpoints)."""
    if weights_path is None:
        return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE
    p = Path(weights_path)
    if p.is_dir():
        for cand in (p / ALEXNET_FILE, p / "hub" / "checkpoints" / ALEXNET_FILE):
            if cand.is_file():
                return cand
        return p / ALEXNET_FILE
    return p


class LPIPSMetric:
    """LPIPS (Zhang et al., CVPR 2018) with the AlexNet trunk and the linear layers of ``lpips`` v0.1.

    The ``lpips`` package would fetch the ImageNet AlexNet through torchvision (a download).
    Instead the trunk is always built randomly initialised and then filled from a local copy
    of ``alexnet-owt-7be5be79.pth``. If that file is missing or unreadable the metric is
    *unavailable*: ``available`` is False, ``reason`` says why, and ``compute`` raises. A
    random trunk is only used with the explicit ``pnet_rand=True`` (plumbing tests), and the
    resulting numbers are not LPIPS.
    """

    def __init__(self, weights_path: str | Path | None = None, pnet_rand: bool = False,
                 device: str | torch.device = "cpu") -> None:
        self.pnet_rand = pnet_rand
        self.device = torch.device(device)
        self.available = False
        self.reason = ""
        self.weights_file: Path | None = None
        self.model = None
        state = None
        if not pnet_rand:
            self.weights_file = _find_alexnet(weights_path)
            state, self.reason = self._read_alexnet(self.weights_file)
            if state is None:
                return
        import lpips

        with warnings.catch_warnings():  # torchvision's 'pretrained' deprecation notice
            warnings.simplefilter("ignore", UserWarning)
            model = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
        if state is not None:
            mapped = {}
            for idx, sl in _ALEX_SLICES.items():
                for p in ("weight", "bias"):
                    mapped[f"slice{sl}.{idx}.{p}"] = state[f"features.{idx}.{p}"]
            model.net.load_state_dict(mapped, strict=True)
        self.model = model.eval().to(self.device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.available = True
        self.reason = "random AlexNet trunk (pnet_rand=True): plumbing only, not LPIPS" if pnet_rand else ""

    @staticmethod
    def _read_alexnet(path: Path) -> tuple[dict | None, str]:
        if not path.is_file():
            return None, (f"LPIPS unavailable: AlexNet ImageNet weights {ALEXNET_FILE} not found at {path} "
                          "(fetch them with `msgnn-bench weights download lpips-alexnet`, which puts them in "
                          "$TORCH_HOME/hub/checkpoints; evaluation itself downloads nothing)")
        if path.name == ALEXNET_FILE:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if not digest.startswith(ALEXNET_FILE.split("-")[-1].split(".")[0]):
                return None, f"LPIPS unavailable: {path} is corrupt (sha256 {digest[:8]}..., expected 7be5be79...)"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            return None, f"LPIPS unavailable: cannot read {path} ({type(exc).__name__}: {exc})"
        need = [f"features.{i}.{p}" for i in _ALEX_SLICES for p in ("weight", "bias")]
        if not isinstance(state, dict) or any(k not in state for k in need):
            return None, f"LPIPS unavailable: {path} is not a torchvision AlexNet state_dict"
        return state, ""

    @torch.no_grad()
    def compute(self, out: np.ndarray, target: np.ndarray) -> float:
        """LPIPS distance of two uint8 RGB images [H, W, 3] (lower = more similar)."""
        if not self.available:
            raise RuntimeError(self.reason)
        _check_uint8_rgb(out, target)
        _check_pair(out, target)

        def prep(img: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0
            return t.to(self.device)

        return float(self.model(prep(out), prep(target), normalize=True).item())


