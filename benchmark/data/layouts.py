"""Layout adapters: pair the files of a deraining folder, whatever naming its release uses.

The datasets of MSGNN (Wang et al., "Explore Internal and External Similarity for Single Image
Deraining with Graph Neural Networks", IJCAI 2024) ship in many conventions: Rain13K-style
``input/``+``target/``, MSPFN's ``inputcrop/``+``cleancrop/``, JORDER's new release
``rain/X2/norain-Nx2.png`` + ``norain/norain-N.png``, its old release ``rain-N``/``norain-N`` in one
folder, SIRR's ``input_val/inputN`` + ``label_val/norainN``, DDN's ``rainy image/I_K`` +
``ground truth/I`` (14 rainy versions per clean image) and DID-MDN's side-by-side JPEGs.

``find_pairs(root)`` detects the layout and returns ``Pair``s sorted by a natural numeric sort of
their ids (never filesystem order, because MSGNN's exemplar choice depends on that order).
``find_images(root)`` lists unpaired real-world images. Both are used by ``benchmark.datasets``
to normalise downloads into ``{input,target}/<id>.png`` and by the data loader to read any of
these folders directly.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

from PIL import Image

from benchmark.data import images
from benchmark.data.images import DataError

IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
# Files and folders that archivers and file browsers add; never data.
_JUNK = frozenset({"__macosx", ".ds_store", "thumbs.db", "desktop.ini"})
# JORDER's old release stores rain masks and streak layers beside the pairs; they are not inputs.
_JORDER_EXTRAS = ("rainregion-", "rainstreak-")
SIDES = ("left", "right")


class LayoutError(DataError):
    """A folder that cannot be read as a dataset split (a DataError: one reader, one error family)."""


class UnknownLayoutError(LayoutError):
    """No supported naming layout matches the folder."""


class UnpairedFileError(LayoutError):
    """An input without its target, a target without its input, or an ambiguous name."""


@dataclass(frozen=True)
class Pair:
    """One sample. Iterates as ``(input, target, id)``.

    ``target`` is None for unpaired real-world images. For side-by-side files ``input`` and
    ``target`` are the same file and ``rainy_side`` says which half holds the rainy image.
    """

    input: Path
    target: Path | None
    id: str
    rainy_side: str | None = None

    def __iter__(self) -> Iterator:
        return iter((self.input, self.target, self.id))


def natural_key(text: str) -> tuple:
    """Sort key comparing digit runs as numbers: '2' < '10', 'a9' < 'a10'."""
    parts = re.split(r"(\d+)", text)
    return tuple((0, int(p), p) if p.isdigit() else (1, p.lower(), p) for p in parts if p)


def _is_junk(path: Path) -> bool:
    return path.name.startswith(".") or path.name.lower() in _JUNK


def _is_image_entry(p: Path) -> bool:
    # a dangling symlink is listed too, so that it is reported instead of silently skipped
    return (p.is_file() or p.is_symlink() and not p.is_dir()) and not _is_junk(p) and p.suffix.lower() in IMAGE_EXTS


def _images(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if _is_image_entry(p)),
                  key=lambda p: natural_key(p.name))


def _subdirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not _is_junk(p)),
                  key=lambda p: natural_key(p.name))


def _child(folder: Path, *names: str) -> Path | None:
    """The sub-folder whose name matches one of ``names`` (case-insensitive), if any."""
    wanted = {n.lower() for n in names}
    for sub in _subdirs(folder):
        if sub.name.lower() in wanted:
            return sub
    return None


def _index(files: list[Path], pattern: str | None = None) -> dict[str, Path]:
    """Map each file's key (its stem, or the first group of ``pattern``) to the file.

    Raises for a file that does not follow ``pattern`` and for two files with the same key
    (e.g. ``1.png`` and ``1.jpg``), since either would silently drop a sample.
    """
    out: dict[str, Path] = {}
    for f in files:
        key = f.stem
        if pattern is not None:
            m = re.fullmatch(pattern, f.stem)
            if m is None:
                raise UnpairedFileError(f"{f}: name does not follow the layout's pattern {pattern!r}")
            key = m.group(1)
        if key in out:
            raise UnpairedFileError(f"{f}: ambiguous, {out[key].name} has the same id {key!r}")
        out[key] = f
    return out


def _match(inputs: dict[str, Path], targets: dict[str, Path]) -> list[Pair]:
    for key, f in inputs.items():
        if key not in targets:
            raise UnpairedFileError(f"{f}: input has no target (expected id {key!r})")
    for key, f in targets.items():
        if key not in inputs:
            raise UnpairedFileError(f"{f}: target has no input (expected id {key!r})")
    return [Pair(inputs[k], targets[k], k) for k in inputs]


# Twin folders whose files pair by identical stem: (input folder, target folder).
_TWINS = {
    "input/target": ("input", "target"),          # Rain13K / Restormer copies and our own layout
    "inputcrop/cleancrop": ("inputcrop", "cleancrop"),  # MSPFN copies
    "rainy/groundtruth": ("rainy", "groundtruth"),      # PReNet's test12 (Rain12)
    "rain/norain": ("rain", "norain"),            # PaddleGAN / JORDER-E renamed copies
}


def _twin(names: tuple[str, str]) -> tuple[Callable[[Path], bool], Callable[[Path], list[Pair]]]:
    def detect(root: Path) -> bool:
        return _child(root, names[0]) is not None and _child(root, names[1]) is not None

    def pair(root: Path) -> list[Pair]:
        src, dst = _child(root, names[0]), _child(root, names[1])
        return _match(_index(_images(src)), _index(_images(dst)))
    return detect, pair


def _x2_input_dir(root: Path) -> Path | None:
    rain = _child(root, "rain")
    if rain is None or _child(root, "norain") is None:
        return None
    x2 = _child(rain, "X2")
    if x2 is not None:
        return x2
    return rain if any(re.fullmatch(r"norain-\d+x2", f.stem) for f in _images(rain)) else None


def _pair_x2(root: Path) -> list[Pair]:
    # JORDER's new (Rain200H/L) release: the rainy copy of norain-N.png is rain/X2/norain-Nx2.png.
    inputs = _index(_images(_x2_input_dir(root)), r"norain-(\d+)x2")
    targets = _index(_images(_child(root, "norain")), r"norain-(\d+)")
    return _match(inputs, targets)


def _pair_sirr(root: Path) -> list[Pair]:
    inputs = _index(_images(_child(root, "input_val")), r"input(\d+)")
    targets = _index(_images(_child(root, "label_val")), r"norain(\d+)")
    return _match(inputs, targets)


_DDN_RAINY = ("rainy image", "rainy_image")
_DDN_CLEAN = ("ground truth", "ground_truth")


def _pair_ddn(root: Path) -> list[Pair]:
    # DDN: 14 rainy versions I_1..I_14 of each clean image I, so targets are shared.
    targets = _index(_images(_child(root, *_DDN_CLEAN)), r"(\d+)")
    pairs, used = [], set()
    for f in _images(_child(root, *_DDN_RAINY)):
        m = re.fullmatch(r"(\d+)_(\d+)", f.stem)
        if m is None:
            raise UnpairedFileError(f"{f}: name does not follow DDN's '<image>_<type>' pattern")
        if m.group(1) not in targets:
            raise UnpairedFileError(f"{f}: input has no target (expected ground truth {m.group(1)!r})")
        used.add(m.group(1))
        pairs.append(Pair(f, targets[m.group(1)], f.stem))
    for key, f in targets.items():
        if key not in used:
            raise UnpairedFileError(f"{f}: target has no rainy input")
    return pairs


def _prefix_folder(root: Path) -> Path | None:
    """Where JORDER's old-release rain-N files are: ``root`` itself or PReNet's ``rainy/``."""
    if not any(f.stem.startswith("norain-") for f in _images(root)):
        return None
    for folder in (root, _child(root, "rainy")):
        if folder is not None and any(f.stem.startswith("rain-") for f in _images(folder)):
            return folder
    return None


def _pair_prefix(root: Path) -> list[Pair]:
    rain_dir = _prefix_folder(root)
    inputs, targets = [], []
    for folder in {root, rain_dir}:
        for f in _images(folder):
            if f.stem.startswith("rain-"):
                inputs.append(f)
            elif f.stem.startswith("norain-") and folder == root:
                targets.append(f)
            elif not f.stem.startswith(_JORDER_EXTRAS):
                raise UnpairedFileError(f"{f}: neither rain-<N> nor norain-<N>")
    return _match(_index(inputs, r"rain-(\d+)"), _index(targets, r"norain-(\d+)"))


@dataclass(frozen=True)
class Layout:
    name: str
    detect: Callable[[Path], bool]
    pair: Callable[[Path], list[Pair]]


# Detection order matters: rain/X2 before the plain rain/norain twin.
LAYOUTS: tuple[Layout, ...] = (
    Layout("rain/X2", lambda r: _x2_input_dir(r) is not None, _pair_x2),
    Layout("input_val/label_val",
           lambda r: _child(r, "input_val") is not None and _child(r, "label_val") is not None,
           _pair_sirr),
    Layout("ddn", lambda r: _child(r, *_DDN_RAINY) is not None and _child(r, *_DDN_CLEAN) is not None,
           _pair_ddn),
    *(Layout(name, *_twin(names)) for name, names in _TWINS.items()),
    Layout("rain-N/norain-N", lambda r: _prefix_folder(r) is not None, _pair_prefix),
)
_SUPPORTED = ", ".join(lay.name for lay in LAYOUTS) + ", side-by-side (with rainy_side)"


def _check_side(rainy_side: str | None) -> None:
    if rainy_side is not None and rainy_side not in SIDES:
        raise ValueError(f"rainy_side must be 'left' or 'right', got {rainy_side!r}")


def detect_layout(root: Path | str, rainy_side: str | None = None) -> tuple[str, Path]:
    """Return (layout name, folder holding it), descending through single wrapper folders.

    With ``rainy_side`` the folder is read as side-by-side pairs (a name cannot tell those apart
    from single real-world images, and DID-MDN and MSGNN put the rainy half on opposite sides).
    """
    _check_side(rainy_side)
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"{root}: not a folder")
    current = root
    for _ in range(8):
        if rainy_side is None:
            for layout in LAYOUTS:
                if layout.detect(current):
                    return layout.name, current
        subdirs, images = _subdirs(current), _images(current)
        if rainy_side is not None and (images or len(subdirs) > 1):
            return "side-by-side", current
        if len(subdirs) != 1 or images:
            break
        current = subdirs[0]
    hint = (" Loose images: pass rainy_side='left'/'right' if they are side-by-side pairs, or use "
            "find_images() for unpaired real-world images." if _images(current) else "")
    seen = [p.name for p in _subdirs(current)][:8]
    raise UnknownLayoutError(f"{current}: unknown dataset layout (folders {seen}, "
                             f"{len(_images(current))} images). Supported: {_SUPPORTED}.{hint}")


def _walk_images(root: Path) -> list[tuple[str, Path]]:
    """All images below ``root`` with ids built from their relative path ('a/b/3.jpg' -> 'a_b_3')."""
    found = []
    for f in root.rglob("*"):
        rel = f.relative_to(root)
        if _is_image_entry(f) and not any(_is_junk(Path(p)) for p in rel.parts):
            found.append(("_".join(rel.with_suffix("").parts), f))
    return found


def _check_inside(items: list[Pair], root: Path) -> None:
    """Refuse files that are (or lie below) symbolic links pointing outside the dataset folder."""
    base = root.resolve()
    for item in items:
        for f in {item.input, item.target} - {None}:
            if not f.exists():
                raise LayoutError(f"{f}: broken symbolic link (its target {f.resolve()} does not exist)")
            real = f.resolve()
            if not real.is_relative_to(base):
                raise LayoutError(f"{f}: symbolic link to {real}, outside the dataset folder {base}; "
                                  "copy the file into the dataset instead")


def _sorted_unique(items: list[Pair]) -> list[Pair]:
    seen: dict[str, Pair] = {}
    for item in items:
        if item.id in seen:
            raise UnpairedFileError(f"{item.input}: duplicate id {item.id!r} (also {seen[item.id].input})")
        seen[item.id] = item
    return sorted(items, key=lambda p: natural_key(p.id))


def find_pairs(root: Path | str, rainy_side: str | None = None) -> list[Pair]:
    """Pairs of the folder ``root`` in natural id order; raises LayoutError on any mismatch."""
    name, base = detect_layout(root, rainy_side)
    if name == "side-by-side":
        pairs = [Pair(f, f, key, rainy_side) for key, f in _walk_images(base)]
    else:
        pairs = next(lay for lay in LAYOUTS if lay.name == name).pair(base)
    if not pairs:
        raise LayoutError(f"{base}: layout {name!r} but no image pairs found")
    _check_inside(pairs, Path(root))
    return _sorted_unique(pairs)


def find_images(root: Path | str, rainy_side: str | None = None) -> list[Pair]:
    """Unpaired images below ``root`` (target None), natural id order.

    ``rainy_side`` marks files stored side by side (e.g. DID-MDN's [rainy | rainy] real samples);
    the rainy half is then the image.
    """
    _check_side(rainy_side)
    root = top = Path(root)
    if not root.is_dir():
        raise LayoutError(f"{root}: not a folder")
    while len(_subdirs(root)) == 1 and not _images(root):
        root = _subdirs(root)[0]
    items = [Pair(f, None, key, rainy_side) for key, f in _walk_images(root)]
    if not items:
        raise LayoutError(f"{root}: no images found")
    _check_inside(items, top)
    return _sorted_unique(items)


def split_side_by_side(image: Image.Image, rainy_side: str, name: str = "image") -> tuple[Image.Image, Image.Image]:
    """(rainy, clean) halves of a side-by-side pair image."""
    _check_side(rainy_side)
    w, h = image.size
    if w % 2:
        raise LayoutError(f"{name}: side-by-side pair has odd width {w}; halves would differ")
    left, right = image.crop((0, 0, w // 2, h)), image.crop((w // 2, 0, w, h))
    return (left, right) if rainy_side == "left" else (right, left)


def read_pair(pair: Pair, max_pixels: int = images.MAX_PIXELS) -> tuple[Image.Image, Image.Image | None]:
    """(rainy, clean) RGB images of a pair, decoded by the checked reader; clean is None for unpaired images."""
    read = partial(images.open_rgb, max_pixels=max_pixels)
    if pair.rainy_side is not None:
        rainy, clean = split_side_by_side(read(pair.input), pair.rainy_side, str(pair.input))
        return rainy, (clean if pair.target is not None else None)
    return read(pair.input), (read(pair.target) if pair.target is not None else None)
