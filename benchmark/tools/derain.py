"""Planning and writing for ``msgnn-bench derain``: no output may destroy data.

``plan`` runs before the model is loaded and before anything is written. It refuses an output
folder that holds an input or lies inside an input folder, checks every input with the checked
reader (decoded once, within the pixel limit), gives colliding names distinct outputs and refuses
existing outputs unless ``overwrite``. ``write_png`` writes through a temporary file; without
``overwrite`` it links the finished file into place, which fails rather than replace a file that
appeared in the meantime.
"""
from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from benchmark.core import io
from benchmark.data import images, layouts
from benchmark.data.images import DataError


def _inputs(arg: Path) -> list[tuple[Path, str]]:
    """(file, output name) of one command-line input: a file, a paired folder, or a folder of images."""
    if arg.is_dir():
        try:  # a paired folder: only its rainy inputs, never its clean targets
            return [(p.input, p.id) for p in layouts.find_pairs(arg)]
        except layouts.UnknownLayoutError:
            return [(p.input, p.id) for p in layouts.find_images(arg)]
    if not arg.exists():
        raise DataError(f"{arg}: input not found")
    return [(arg, arg.stem)]


def _distinct(items: list[tuple[Path, str]]) -> list[str]:
    """Output names, unique even on case-insensitive file systems.

    A name shared by several inputs becomes the input's path relative to the colliding inputs'
    common folder, joined by '_' ('a/1.png', 'b/1.png' -> 'a_1', 'b_1'); if that still collides
    the extension is added ('1_png', '1_jpg'), and then a counter.
    """
    names = [n for _, n in items]
    for step in range(3):
        counts = Counter(n.lower() for n in names)
        clash = [i for i, n in enumerate(names) if counts[n.lower()] > 1]
        if not clash:
            return names
        if step == 0:
            groups: dict[str, list[int]] = {}
            for i in clash:
                groups.setdefault(names[i].lower(), []).append(i)
            for group in groups.values():
                common = Path(os.path.commonpath([str(items[i][0].resolve().parent) for i in group]))
                for i in group:
                    names[i] = "_".join(items[i][0].resolve().relative_to(common).with_suffix("").parts)
        elif step == 1:
            for i in clash:
                names[i] = f"{names[i]}_{items[i][0].suffix.lstrip('.').lower()}"
    seen: Counter = Counter()
    for i, n in enumerate(names):
        seen[n.lower()] += 1
        if seen[n.lower()] > 1:
            names[i] = f"{n}-{seen[n.lower()]}"
    return names


def plan(inputs: list[str], output: str, *, overwrite: bool = False, max_pixels: int = images.MAX_PIXELS,
         fits: Callable[[Path, int, int], None] | None = None) -> list[tuple[Path, Path]]:
    """(input file, output file) for every input; raises one DataError before any work.

    ``fits(path, height, width)`` raises a DataError for an image whose inference would not fit in
    memory (``benchmark.tools.memory.check``); it runs on every input from its header, before decoding.
    """
    outdir = Path(output)
    if outdir.exists() and not outdir.is_dir():
        raise DataError(f"{outdir}: -o must be a folder, this is a file")
    out_real = outdir.resolve()
    items: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for arg in map(Path, inputs):
        if arg.is_dir() and (out_real == arg.resolve() or arg.resolve() in out_real.parents):
            raise DataError(f"{outdir}: output folder is the input folder {arg} or inside it; "
                            "choose an output folder outside the inputs")
        for f, name in _inputs(arg):
            real = f.resolve()
            if out_real in real.parents:
                raise DataError(f"{outdir}: output folder holds the input {f}; choose another -o")
            if real not in seen:  # the same file named twice is derained once
                seen.add(real)
                items.append((f, name))
    if not items:
        raise DataError(f"no input images in {' '.join(inputs)}")
    for f, _ in items:  # every input named before the model is even loaded
        if fits is not None:  # from the header, before a too-large image is decoded
            info = images.inspect(f, max_pixels=max_pixels)
            fits(f, info.height, info.width)
        images.inspect(f, max_pixels=max_pixels, decode=True)
    jobs = [(f, outdir / f"{name}.png") for (f, _), name in zip(items, _distinct(items))]
    existing = [dst for _, dst in jobs if dst.exists() or dst.is_symlink()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise DataError(f"{existing[0]}: output exists{more}; pass --overwrite to replace outputs")
    return jobs


def progress_bar(total: int, quiet: bool = False):
    """A bar on stderr for a run of several images, only for a person watching: not with --quiet, not
    when stderr is a pipe or a log file (where it would be noise), not for a single image."""
    shown = not quiet and total > 1 and sys.stderr.isatty()
    return io.progress(total, enabled=shown, desc="derain")


def write_png(dst: Path, arr: np.ndarray, overwrite: bool = False) -> None:
    """Write ``arr`` as PNG at ``dst`` atomically; without ``overwrite`` never replace a file."""
    try:
        io.atomic_write(dst, lambda f: Image.fromarray(arr).save(f, format="PNG"), replace=overwrite)
    except FileExistsError as exc:
        raise DataError(f"{dst}: appeared while deraining; not replaced (pass --overwrite)") from exc
