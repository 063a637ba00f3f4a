"""Verification: re-check a normalised dataset folder against its manifest and its spec."""
from __future__ import annotations

import json
from pathlib import Path

from benchmark.data import layouts
from benchmark.data.layouts import LayoutError
from benchmark.datasets.normalise import _size
from benchmark.datasets.specs import SplitSpec, get_spec
from benchmark.datasets.transfer import DatasetError, sha256_file


def split_ready(folder: Path, split: SplitSpec) -> bool:
    """A split folder whose manifest count matches its files (and the spec's count where published)."""
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        count = json.loads(manifest.read_text()).get("count")
    except json.JSONDecodeError:
        return False
    n = sum(1 for _ in (folder / "input").glob("*.png")) if (folder / "input").is_dir() else -1
    return n == count and (split.count is None or count == split.count)


def verify(name: str, root: Path | str = "data", registry: dict | Path | str | None = None) -> dict[str, int]:
    """Re-check a normalised dataset: pairing, sizes, sha256 against the manifest, spec counts.

    Returns {split: count}; raises DatasetError listing the problems.
    """
    spec = get_spec(name, registry)
    dest = Path(root) / name
    counts, problems = {}, []
    for s in spec.splits.values():
        folder = dest / s.name
        if not folder.is_dir():
            if not s.optional:
                problems.append(f"{folder}: missing (run `msgnn-bench datasets download {name}`)")
            continue
        try:
            items = layouts.find_pairs(folder) if spec.paired else layouts.find_images(folder / "input")
        except LayoutError as exc:
            problems.append(str(exc))
            continue
        manifest_path = folder / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
        except json.JSONDecodeError as exc:
            problems.append(f"{manifest_path}: unreadable ({exc})")
            continue
        expected = s.count if s.count is not None else (manifest or {}).get("count")
        if expected is not None and len(items) != expected:
            problems.append(f"{folder}: {len(items)} {'pairs' if spec.paired else 'images'}, "
                            f"expected {expected}{'' if s.count is not None else ' (recorded)'}")
        if manifest is None and spec.source != "embedded":
            problems.append(f"{manifest_path}: missing; the folder was not written by `datasets download`")
        elif manifest is not None:
            known = {e["id"]: e for e in manifest["items"]}
            for p in items:
                e = known.get(p.id)
                if e is None:
                    problems.append(f"{p.input}: not in {manifest_path}")
                    continue
                for role, path in (("input", p.input), ("target", p.target)):
                    if path is not None and sha256_file(path) != e[role]["sha256"]:
                        problems.append(f"{path}: sha256 differs from {manifest_path}")
                if p.target is not None and _size(p.input) != _size(p.target):
                    problems.append(f"{p.input}: size differs from its target {p.target}")
        counts[s.name] = len(items)
    if problems:
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DatasetError(f"dataset {name!r} failed verification:\n  " + "\n  ".join(problems[:20]) + more)
    return counts
