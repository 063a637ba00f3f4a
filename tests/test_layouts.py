"""Layout adapters on the real naming layouts of the shared fixtures (benchmark/data/layouts.py)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from benchmark.data import layouts
from benchmark.data.layouts import LayoutError, UnknownLayoutError, UnpairedFileError, find_images, find_pairs

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason=f"fixtures not found at {SHARED}")


@pytest.mark.parametrize("folder, layout, count, first", [
    ("Rain100L_test", "input/target", 20, ("input/1.png", "target/1.png")),
    ("Rain100H_test", "inputcrop/cleancrop", 20, ("inputcrop/1.png", "cleancrop/1.png")),
    ("Rain200H_test_samples", "rain/X2", 5, ("rain/X2/norain-1x2.png", "norain/norain-1.png")),
    ("DDN-SIRR_test", "input_val/label_val", 10, ("input_val/input1.png", "label_val/norain1.png")),
])
def test_real_layouts_pair_in_natural_order(folder, layout, count, first):
    root = SHARED / folder
    assert layouts.detect_layout(root) == (layout, root)
    pairs = find_pairs(root)
    assert [p.id for p in pairs] == [str(i) for i in range(1, count + 1)]  # 1, 2, ..., 10 not 1, 10, 2
    inp, tgt, pid = pairs[0]
    assert (inp.relative_to(root).as_posix(), tgt.relative_to(root).as_posix(), pid) == (*first, "1")
    assert all(p.input.stat().st_size > 0 and p.target.stat().st_size > 0 for p in pairs)


def _copy(src: str, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SHARED / src, dst)


def test_ddn_layout_shares_targets(tmp_path):
    for gt, src in ((901, 1), (902, 2)):
        _copy(f"Rain200H_test_samples/norain/norain-{src}.png", tmp_path / "ground truth" / f"{gt}.png")
        for k in (1, 2, 10):
            _copy(f"Rain200H_test_samples/rain/X2/norain-{src}x2.png", tmp_path / "rainy image" / f"{gt}_{k}.png")
    pairs = find_pairs(tmp_path)
    assert [p.id for p in pairs] == ["901_1", "901_2", "901_10", "902_1", "902_2", "902_10"]
    assert {p.target.name for p in pairs[:3]} == {"901.png"}
    (tmp_path / "ground truth" / "903.png").write_bytes((tmp_path / "ground truth" / "901.png").read_bytes())
    with pytest.raises(UnpairedFileError, match="903.png"):
        find_pairs(tmp_path)


def test_jorder_old_release_and_prenet_variants(tmp_path):
    old = tmp_path / "old" / "Rain100H"  # wrapper folder is descended into
    for i in (1, 2, 12):
        _copy(f"Rain100H_test/inputcrop/{i}.png", old / f"rain-{i:03d}.png")
        _copy(f"Rain100H_test/cleancrop/{i}.png", old / f"norain-{i:03d}.png")
    _copy("Rain100H_test/inputcrop/3.png", old / "rainstreak-001.png")  # JORDER extra, not an input
    assert layouts.detect_layout(tmp_path / "old") == ("rain-N/norain-N", old)
    assert [p.id for p in find_pairs(tmp_path / "old")] == ["001", "002", "012"]

    prenet = tmp_path / "prenet"
    for i in (1, 2):
        _copy(f"Rain100H_test/inputcrop/{i}.png", prenet / "rainy" / f"rain-{i}.png")
        _copy(f"Rain100H_test/cleancrop/{i}.png", prenet / f"norain-{i}.png")
    assert [(p.input.parent.name, p.target.name) for p in find_pairs(prenet)] == \
        [("rainy", "norain-1.png"), ("rainy", "norain-2.png")]

    twelve = tmp_path / "test12"
    for i in (1, 2):
        _copy(f"Rain100H_test/inputcrop/{i}.png", twelve / "rainy" / f"{i}.png")
        _copy(f"Rain100H_test/cleancrop/{i}.png", twelve / "groundtruth" / f"{i}.png")
    assert layouts.detect_layout(twelve)[0] == "rainy/groundtruth"


def _input_target(tmp_path: Path, ids) -> Path:
    for i in ids:
        _copy(f"Rain100L_test/input/{i}.png", tmp_path / "input" / f"{i}.png")
        _copy(f"Rain100L_test/target/{i}.png", tmp_path / "target" / f"{i}.png")
    return tmp_path


def test_order_is_natural_not_filesystem(tmp_path):
    root = _input_target(tmp_path, (10, 2, 1, 20))
    assert [p.id for p in find_pairs(root)] == ["1", "2", "10", "20"]
    assert layouts.natural_key("a9") < layouts.natural_key("a10") < layouts.natural_key("b1")


def test_unpaired_files_are_named(tmp_path):
    root = _input_target(tmp_path, (1, 2, 3))
    (root / "target" / "2.png").unlink()
    with pytest.raises(UnpairedFileError, match=r"input/2\.png: input has no target"):
        find_pairs(root)
    _copy("Rain100L_test/target/2.png", root / "target" / "2.png")
    _copy("Rain100L_test/target/4.png", root / "target" / "4.png")
    with pytest.raises(UnpairedFileError, match=r"target/4\.png: target has no input"):
        find_pairs(root)
    (root / "target" / "4.png").unlink()
    _copy("RealWorld_Internet147/real_input/1.jpg", root / "input" / "1.jpg")
    with pytest.raises(UnpairedFileError, match="ambiguous"):
        find_pairs(root)


def test_x2_name_outside_pattern_is_an_error(tmp_path):
    shutil.copytree(SHARED / "Rain200H_test_samples", tmp_path / "r", ignore=shutil.ignore_patterns("SHA256SUMS"))
    shutil.copyfile(tmp_path / "r/rain/X2/norain-1x2.png", tmp_path / "r/rain/X2/extra.png")
    with pytest.raises(UnpairedFileError, match="extra.png"):
        find_pairs(tmp_path / "r")


def test_unknown_layout_and_bad_side(tmp_path):
    with pytest.raises(UnknownLayoutError, match="rainy_side"):
        find_pairs(SHARED / "RealWorld_Internet147")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(UnknownLayoutError, match="Supported: rain/X2"):
        find_pairs(tmp_path)
    with pytest.raises(LayoutError, match="not a folder"):
        find_pairs(tmp_path / "missing")
    with pytest.raises(ValueError, match="left"):
        find_pairs(SHARED / "RealWorld_DIDMDN_samples", rainy_side="top")


def test_side_by_side_pairs_follow_rainy_side(tmp_path):
    pairs = find_pairs(SHARED / "RealWorld_DIDMDN_samples", rainy_side="left")
    assert [p.id for p in pairs] == [str(i) for i in range(9)]
    assert pairs[0].input == pairs[0].target and pairs[0].rainy_side == "left"
    rainy, clean = layouts.read_pair(pairs[0])
    with Image.open(pairs[0].input) as whole:
        w, h = whole.size
        assert rainy.tobytes() == whole.convert("RGB").crop((0, 0, w // 2, h)).tobytes()
        assert clean.tobytes() == whole.convert("RGB").crop((w // 2, 0, w, h)).tobytes()
    swapped = layouts.read_pair(find_pairs(SHARED / "RealWorld_DIDMDN_samples", rainy_side="right")[0])
    assert swapped[0].tobytes() == clean.tobytes() and swapped[1].tobytes() == rainy.tobytes()
    with Image.open(pairs[0].input) as whole:
        whole.crop((0, 0, whole.size[0] - 1, whole.size[1])).save(tmp_path / "odd.png")
    with pytest.raises(LayoutError, match="odd.png.*odd width"):
        layouts.read_pair(find_pairs(tmp_path, rainy_side="left")[0])


def test_find_images_for_real_world_folders():
    images = find_images(SHARED / "RealWorld_Internet147")
    assert [p.id for p in images] == [str(i) for i in range(1, 21)]
    assert all(p.target is None for p in images)
    rainy, clean = layouts.read_pair(find_images(SHARED / "RealWorld_DIDMDN_samples", rainy_side="left")[0])
    assert clean is None and rainy.size[0] * 2 == Image.open(SHARED / "RealWorld_DIDMDN_samples/github/0.jpg").size[0]
