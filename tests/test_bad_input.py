"""Bad data is converted by a documented rule or named in one line before work starts (issue 15).

Every case goes through the one checked reader (benchmark.images) and, end to end, through
`msgnn-bench evaluate` (weightless `input` model) and the training/prepare checks.
"""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.tools import cli
from benchmark.data import loading as data
from benchmark.data import images, layouts

RNG = np.random.default_rng(0)


def rgb(h=24, w=32) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def paired(tmp_path: Path, n: int = 2, h: int = 24, w: int = 32) -> Path:
    root = tmp_path / "ds"
    for sub in ("input", "target"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i in range(1, n + 1):
            Image.fromarray(rgb(h, w)).save(root / sub / f"{i}.png")
    return root


def png_header(path: Path, w: int, h: int, depth: int = 8) -> Path:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def evaluate(capsys, root: Path):
    code = cli.main(["evaluate", "--model", "input", "--data", str(root), "--json"])
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, root: Path, bad: Path, needle: str) -> None:
    code, out, err = evaluate(capsys, root)
    assert code == 1 and out == "", err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert str(bad) in err and needle in err, err


def _truncated(p: Path) -> None:
    Image.fromarray(rgb()).save(p)
    p.write_bytes(p.read_bytes()[:-60])


def _grey16(p: Path) -> None:
    Image.fromarray(RNG.integers(0, 65535, (24, 32), dtype=np.uint16)).save(p)


BAD = {  # case: (writer of input/2.png, the words of the one-line error)
    "zero-byte": (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    "non-image": (lambda p: p.write_text("<html>404</html>"), "not a readable image"),
    "truncated": (_truncated, "truncated or corrupt image"),
    "16-bit grey": (_grey16, "16-bit samples"),
    "16-bit rgb": (lambda p: png_header(p, 32, 24, depth=16), "16-bit samples"),
    "transparent": (lambda p: Image.fromarray(np.dstack([rgb(), np.full((24, 32), 128, np.uint8)])).save(p),
                    "transparent pixels"),
    "cmyk": (lambda p: Image.fromarray(rgb()).convert("CMYK").save(p.with_suffix(".tif")), "colour mode 'CMYK'"),
    "tiny": (lambda p: Image.fromarray(rgb(5, 5)).save(p), "5x5 is smaller than 11x11 (the SSIM window)"),
    "bomb": (lambda p: png_header(p, 10000, 10000), "exceeds the limit of 16777216 pixels"),
    "huge bomb": (lambda p: png_header(p, 100000, 100000), "decompression-bomb size"),
    "size mismatch": (lambda p: Image.fromarray(rgb(24, 30)).save(p), "differs from its target"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_file_is_named_before_work(tmp_path, capsys, case):
    root = paired(tmp_path)
    write, needle = BAD[case]
    bad = root / "input" / "2.png"
    if case == "cmyk":
        bad.unlink()
        (root / "target" / "2.png").rename(root / "target" / "2.tif")
        bad = bad.with_suffix(".tif")
    write(bad)
    if case == "tiny":
        Image.fromarray(rgb(5, 5)).save(root / "target" / "2.png")
    refused(capsys, root, bad, needle)


def test_conversion_rules(tmp_path):
    base = rgb()
    cases = {
        "grey.png": (Image.fromarray(base[..., 0]), np.repeat(base[..., :1], 3, axis=2)),
        "opaque_rgba.png": (Image.fromarray(np.dstack([base, np.full((24, 32), 255, np.uint8)])), base),
        "bilevel.png": (Image.fromarray(base[..., 0] > 127), np.repeat((base[..., :1] > 127) * np.uint8(255), 3, 2)),
    }
    pal = Image.fromarray(base).quantize(16)
    cases["palette.png"] = (pal, np.asarray(pal.convert("RGB")))
    for name, (im, want) in cases.items():
        im.save(tmp_path / name)
        got = data.load_image(tmp_path / name)
        assert got.dtype == np.uint8 and got.shape == (24, 32, 3), name
        np.testing.assert_array_equal(got, want, err_msg=name)
    # a palette with a transparent entry in use follows the alpha rule: refused
    pal.save(tmp_path / "pal_t.png", transparency=int(np.asarray(pal)[0, 0]))
    with pytest.raises(data.DataError, match="pal_t.png: has transparent pixels"):
        data.load_image(tmp_path / "pal_t.png")


def test_unpaired_file_is_named(tmp_path, capsys):
    root = paired(tmp_path)
    Image.fromarray(rgb()).save(root / "input" / "3.png")
    refused(capsys, root, root / "input" / "3.png", "input has no target")


def test_links_leaving_the_dataset_are_refused(tmp_path, capsys):
    root = paired(tmp_path)
    outside = tmp_path / "elsewhere.png"
    Image.fromarray(rgb()).save(outside)
    bad = root / "input" / "2.png"
    bad.unlink()
    os.symlink(outside, bad)
    refused(capsys, root, bad, "outside the dataset folder")
    bad.unlink()
    os.symlink(tmp_path / "missing.png", bad)  # dangling: reported, never skipped
    refused(capsys, root, bad, "broken symbolic link")
    bad.unlink()
    os.symlink(root / "target" / "2.png", bad)  # a link inside the dataset is fine
    assert [p.id for p in layouts.find_pairs(root)] == ["1", "2"]


def test_training_set_is_checked_at_construction(tmp_path):
    root = paired(tmp_path, h=24, w=32)
    with pytest.raises(data.DataError, match=r"input.1\.png: image 32x24 is smaller than 48x48 .the training patch 48"):
        data.TrainPatches(root, 48, split="train")
    png_header(root / "input" / "2.png", 10000, 10000)
    with pytest.raises(data.DataError, match=r"2\.png: 10000x10000 = 100000000 pixels exceeds the limit"):
        data.TrainPatches(root, 16, split="train")


def test_prepare_check_decodes_every_file(tmp_path):
    root = tmp_path / "set"
    root.mkdir()
    for split in ("train", "test"):
        paired(tmp_path / split).rename(root / split)
    assert data.check_dataset(root) == {"train": 2, "test": 2}
    _truncated(root / "train" / "target" / "1.png")  # a header check would not see this
    (root / "test" / "input" / "2.png").write_bytes(b"")
    with pytest.raises(data.DataError, match=r"train.target.1\.png: truncated.*\(and 1 more bad files\)"):
        data.check_dataset(root)


def test_limit_is_a_setting():
    assert images.MAX_PIXELS == 4096 * 4096 == cli.MAX_PIXELS
    ap = cli.build_parser()
    assert ap.parse_args(["evaluate", "--model", "input", "--data", ".", "--max-pixels", "99"]).max_pixels == 99
