"""Normalisation: write a paired/unpaired source folder as ``{input,target}/<id>.png`` + manifest.

PNG sources are copied byte for byte. JPEG sources and side-by-side files are decoded and written
as lossless PNG (these files are marked as derived in the manifest). ``write_manifest`` records a
folder already in that layout (the rain-synth generator's output) so that ``verify`` can check it.
"""
from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from benchmark.data import images, layouts
from benchmark.data.layouts import Pair
from benchmark.datasets.specs import DatasetSpec, SplitSpec, _in_range
from benchmark.datasets.transfer import DatasetError, say, sha256_file


def _write_png(src: Path, dst: Path, half: str | None, side: str | None) -> str:
    """Write ``src`` (or one half of it) as PNG; returns the transform applied."""
    if half is None and src.suffix.lower() == ".png":
        images.inspect(src, decode=True)  # the copy must be readable by the suite's reader too
        shutil.copyfile(src, dst)
        return "copy"
    image = images.open_rgb(src)
    if half is not None:
        rainy, clean = layouts.split_side_by_side(image, side, str(src))
        image = rainy if half == "rainy" else clean
    image.save(dst, format="PNG")
    if half is None:
        return "decoded-to-png"
    which = side if half == "rainy" else ("right" if side == "left" else "left")
    return f"{which}-half-of-side-by-side"


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def normalise_split(spec: DatasetSpec, split: SplitSpec, folder: Path, out: Path, origin: str = "",
                    file_rows: dict[str, tuple[str, int]] | None = None, workers: int = 4) -> dict:
    """Pair ``folder``, check it and write ``out/{input,target}/<id>.png`` + ``out/manifest.json``."""
    if spec.paired:
        layout, _ = layouts.detect_layout(folder, spec.rainy_side)
        items = layouts.find_pairs(folder, spec.rainy_side)
    else:
        layout, items = "images", layouts.find_images(folder, spec.rainy_side)
    if split.id_range is not None:
        items = [p for p in items if _in_range(p.id, split.id_range)]
    if spec.layout not in ("auto", "images", layout):
        say(f"note: {spec.key}/{split.name}: layout {layout!r} found in {folder} "
             f"(the official release uses {spec.layout!r})")
    if split.count is not None and len(items) != split.count:
        hint = " (does the source hold this split? --split picks the splits to build)" if not items else ""
        raise DatasetError(f"dataset {spec.key!r} split {split.name!r}: found {len(items)} "
                           f"{'pairs' if spec.paired else 'images'} in {folder}, expected {split.count}{hint}")
    if file_rows:
        _check_sources(spec, items, file_rows)
    (out / "input").mkdir(parents=True)
    if spec.paired:
        (out / "target").mkdir()
    first_use = {}
    for p in items:  # DDN: one clean image serves 14 pairs; write it once, link the rest
        if p.target is not None and p.rainy_side is None:
            first_use.setdefault(p.target, p.id)

    def one(p: Pair) -> dict:
        entry = {"id": p.id}
        inp = out / "input" / f"{p.id}.png"
        half = "rainy" if p.rainy_side else None
        entry["input"] = {"from": _rel(p.input, folder),
                          "transform": _write_png(p.input, inp, half, p.rainy_side)}
        if p.target is not None:
            tgt = out / "target" / f"{p.id}.png"
            if p.rainy_side is None and first_use[p.target] != p.id:
                entry["target"] = {"from": _rel(p.target, folder), "transform": "same-as-target-of-"
                                   + first_use[p.target]}
            else:
                entry["target"] = {"from": _rel(p.target, folder),
                                   "transform": _write_png(p.target, tgt, "clean" if half else None, p.rainy_side)}
        return entry

    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL releases the GIL while coding images
        entries = list(pool.map(one, items))
    for p, e in zip(items, entries):
        if "target" in e and e["target"]["transform"].startswith("same-as-target-of-"):
            src = out / "target" / f"{first_use[p.target]}.png"
            _link_or_copy(src, out / "target" / f"{p.id}.png")
    return _finish_manifest(out, entries, dataset=spec.key, split=split.name, layout=layout, source=origin,
                            paired=spec.paired)


def _finish_manifest(out: Path, entries: list[dict], **meta) -> dict:
    """Add sha256 and size of every written file, check pair sizes, write manifest.json."""
    for e in entries:
        inp = out / "input" / f"{e['id']}.png"
        e["input"]["sha256"], size = sha256_file(inp), _size(inp)
        e["size"] = list(size)
        if "target" in e:
            tgt = out / "target" / f"{e['id']}.png"
            e["target"]["sha256"] = sha256_file(tgt)
            if _size(tgt) != size:
                raise DatasetError(f"dataset {meta['dataset']!r}: size mismatch for id {e['id']!r}: input "
                                   f"{e['input']['from']} is {size}, target {e['target']['from']} is {_size(tgt)}")
    manifest = {**meta, "count": len(entries), "created_by": "benchmark.datasets", "items": entries}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def write_manifest(folder: Path | str, dataset: str, split: str, source: str = "") -> dict:
    """Record ids, sizes and sha256 of a split folder already in the normalised layout.

    For data written by other code (the rain-synth generator), so that ``verify`` can check it.
    """
    folder = Path(folder)
    paired = (folder / "target").is_dir()
    items = layouts.find_pairs(folder) if paired else layouts.find_images(folder / "input")
    entries = []
    for p in items:
        if p.input != folder / "input" / f"{p.id}.png":
            raise DatasetError(f"{p.input}: not in the normalised layout input/<id>.png")
        entry = {"id": p.id, "input": {"from": _rel(p.input, folder), "transform": "as-is"}}
        if p.target is not None:
            entry["target"] = {"from": _rel(p.target, folder), "transform": "as-is"}
        entries.append(entry)
    return _finish_manifest(folder, entries, dataset=dataset, split=split,
                            layout="input/target" if paired else "images", source=source, paired=paired)


def _rel(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _check_sources(spec: DatasetSpec, items: list[Pair], rows: dict[str, tuple[str, int]]) -> None:
    """Compare source files of a manually supplied tree with the per-file list (by folder + name)."""
    def key(path: Path) -> tuple[str, str]:
        return path.parent.name.lower().replace(" ", "_"), path.name
    table = {key(Path(r)): d for r, (d, _) in rows.items()}
    files = {p.input for p in items} | {p.target for p in items if p.target is not None}
    bad = [f for f in sorted(files) if key(f) in table and sha256_file(f) != table[key(f)]]
    unknown = [f for f in files if key(f) not in table]
    ok = len(files) - len(bad) - len(unknown)
    if bad or unknown:
        say(f"warning: {spec.key}: {ok} of {len(files)} source files match the published per-file sha256 "
             f"list; {len(bad)} differ (e.g. {bad[:1]}), {len(unknown)} are not listed (e.g. {unknown[:1]})")


def _install(new: Path, final: Path) -> None:
    """Move a finished split into place, replacing an older copy only once the new one is whole."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(new, final)
        shutil.rmtree(old)
    else:
        os.replace(new, final)
