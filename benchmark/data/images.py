"""The one checked image reader of the suite: every image any command reads goes through here.

Rules (also in README, "Failure behaviour"):

* refused, one ``DataError`` line naming the file: missing, not a regular file, empty (0 bytes),
  not an image, truncated/corrupt, 16-bit or float samples, colour modes other than those below,
  transparent pixels, more than ``max_pixels`` pixels (checked from the header, before any pixel
  is decoded), sides shorter than the caller's minimum (training patch, SSIM window);
* oriented: an EXIF orientation tag (phone photos: the sensor's pixels plus "rotate 90°") is applied
  on read, as every photo viewer does, so inputs, targets and ``derain`` outputs are all upright and
  a rotated input is never scored against an upright target; sizes are reported as oriented;
* converted: grey (and 1-bit) → RGB by replicating the channel; palette → RGB through its palette;
  RGBA/LA/PA whose alpha is 255 everywhere → RGB (alpha dropped: it carries nothing). Any
  transparent pixel is refused rather than composited, because the result would depend on an
  arbitrary background colour and so would every metric.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# 4096 x 4096: above every image of the paper's datasets (the largest, DID-MDN's real set, is
# ~8 MP), far below the 100 MP header that got `derain` killed at 21 GB. `--max-pixels` raises it.
MAX_PIXELS = 4096 * 4096
SSIM_WINDOW = 11  # MATLAB ssim's Gaussian window: smaller images have no SSIM
_MODES = ("RGB", "L", "1", "P", "RGBA", "LA", "PA")
_ALPHA_MODES = ("RGBA", "LA", "PA")


class DataError(ValueError):
    """Bad input data; the message names the file and the problem (one line)."""


@dataclass(frozen=True)
class ImageInfo:
    path: Path
    width: int
    height: int
    mode: str


def _open(path: Path, max_pixels: int) -> Image.Image:
    if not path.exists():
        raise DataError(f"{path}: image file not found" + (" (broken symbolic link)" if path.is_symlink() else ""))
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes); re-download or remove it")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 89 and 179 MP; our own limit below decides instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: header declares more than {2 * Image.MAX_IMAGE_PIXELS} pixels "
                        f"(decompression-bomb size; the limit is {max_pixels})") from exc
    except UnidentifiedImageError as exc:
        raise DataError(f"{path}: not a readable image (not an image, or a format Pillow cannot read)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: unreadable image header ({exc})") from exc


_ORIENTATION = 0x0112  # EXIF tag; values 5-8 turn the picture by 90 degrees (width and height swap)


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block: no orientation, like a photo viewer
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _check_header(path: Path, im: Image.Image, max_pixels: int, min_side: int, why: str) -> ImageInfo:
    w, h = im.size
    if _orientation(im) >= 5:
        w, h = h, w  # the size the picture is shown (and read) at
    if w * h > max_pixels:
        raise DataError(f"{path}: {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} pixels "
                        f"(raise it with --max-pixels if the memory is there)")
    if min(w, h) < min_side:
        raise DataError(f"{path}: image {w}x{h} is smaller than {min_side}x{min_side} ({why})")
    rawmode = im.tile[0].args if im.tile and isinstance(im.tile[0].args, str) else ""
    if im.mode.startswith(("I", "F")) or ";16" in rawmode:
        raise DataError(f"{path}: {'16-bit' if '16' in im.mode + rawmode else 'integer/float'} samples "
                        f"(mode {im.mode}); convert it to 8 bits per channel")
    if im.mode not in _MODES:
        raise DataError(f"{path}: unsupported colour mode {im.mode!r} (need 8-bit RGB, grey or palette)")
    return ImageInfo(path, w, h, im.mode)


def inspect(path: str | Path, *, max_pixels: int = MAX_PIXELS, min_side: int = 1, why: str = "",
            decode: bool = False) -> ImageInfo:
    """Check one image from its header (and, with ``decode``, its pixels) without keeping it."""
    path = Path(path)
    with _open(path, max_pixels) as im:
        info = _check_header(path, im, max_pixels, min_side, why)
        if decode:
            _to_rgb(path, im)
    return info


def _to_rgb(path: Path, im: Image.Image) -> Image.Image:
    try:
        im.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: truncated or corrupt image ({exc}); re-download or remove it") from exc
    if _orientation(im) != 1:
        im = ImageOps.exif_transpose(im)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in _ALPHA_MODES:
        lo = im.getchannel("A").getextrema()[0]
        if lo < 255:
            raise DataError(f"{path}: has transparent pixels (alpha down to {lo}); flatten it onto a "
                            f"background first (the suite does not guess one)")
    return im.convert("RGB")


def open_rgb(path: str | Path, *, max_pixels: int = MAX_PIXELS, min_side: int = 1, why: str = "") -> Image.Image:
    """The checked image as a decoded PIL RGB image."""
    path = Path(path)
    with _open(path, max_pixels) as im:
        _check_header(path, im, max_pixels, min_side, why)
        return _to_rgb(path, im)  # convert() always returns a new image, valid after close


def load_rgb(path: str | Path, *, max_pixels: int = MAX_PIXELS, min_side: int = 1, why: str = "") -> np.ndarray:
    """The checked image as uint8 RGB [H, W, 3] (a writable copy)."""
    return np.array(open_rgb(path, max_pixels=max_pixels, min_side=min_side, why=why))
