"""`msgnn-bench derain` never destroys data (issue 16): inputs, outputs, names, sizes.

Uses the weightless `input` model (identity), so each test is I/O only and fast.
"""
from __future__ import annotations

import hashlib
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from benchmark.tools import cli


def run(capsys, *argv):
    code = cli.main(["derain", "--model", "input", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def md5s(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def img(path: Path, value: int, size=(16, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


def png_header(path: Path, w: int, h: int) -> Path:
    """A tiny valid-looking PNG whose header declares w x h pixels (a decompression bomb)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b""))
    return path


def one_line(err: str) -> bool:
    return "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_output_equal_to_input_folder_is_refused(tmp_path, capsys):
    folder = tmp_path / "photos"
    img(folder / "a.png", 10), img(folder / "b.png", 20)
    before = md5s(folder)
    code, _, err = run(capsys, folder, "-o", folder)
    assert code == 1 and one_line(err) and "output folder" in err
    code, _, err = run(capsys, folder, "-o", folder / "out")  # inside the input folder
    assert code == 1 and one_line(err)
    code, _, err = run(capsys, folder / "a.png", "-o", folder)  # a file input inside -o
    assert code == 1 and "holds the input" in err
    code, _, err = run(capsys, folder / "a.png", "-o", folder / "b.png")  # -o naming a file
    assert code == 1 and one_line(err) and "must be a folder" in err
    assert md5s(folder) == before


def test_paired_folder_derains_only_inputs(tmp_path, capsys):
    pairs = tmp_path / "pairs"
    for i in (1, 2):
        img(pairs / "input" / f"{i}.png", 50 + i), img(pairs / "target" / f"{i}.png", 200 + i)
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, pairs, "-o", out)
    assert code == 0 and sorted(p.name for p in out.iterdir()) == ["1.png", "2.png"]
    # each output is its rainy input (identity model), never the clean target of the same stem
    assert np.asarray(Image.open(out / "2.png"))[0, 0, 0] == 52
    assert stdout.split() == [str(out / "1.png"), str(out / "2.png")]


def test_colliding_stems_get_distinct_names(tmp_path, capsys):
    a, b = img(tmp_path / "a" / "1.png", 1), img(tmp_path / "b" / "1.png", 2)
    c, d = img(tmp_path / "c" / "x.png", 3), img(tmp_path / "c" / "x.jpg", 4)
    out = tmp_path / "out"
    code, _, _ = run(capsys, a, b, c, d, "-o", out)
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_1.png", "b_1.png", "x_jpg.png", "x_png.png"]
    assert np.asarray(Image.open(out / "b_1.png"))[0, 0, 0] == 2


def test_existing_outputs_need_overwrite(tmp_path, capsys):
    src = img(tmp_path / "in" / "1.png", 80)
    out = tmp_path / "out"
    keep = img(out / "1.png", 7)
    before = keep.read_bytes()
    code, _, err = run(capsys, src, "-o", out)
    assert code == 1 and one_line(err) and "--overwrite" in err and keep.read_bytes() == before
    code, _, _ = run(capsys, src, "-o", out, "--overwrite")
    assert code == 0 and np.asarray(Image.open(keep))[0, 0, 0] == 80
    assert sorted(p.name for p in out.iterdir()) == ["1.png"]  # no temporary file left behind


def test_oversized_headers_are_refused_before_any_output(tmp_path, capsys):
    good = img(tmp_path / "in" / "a.png", 5)
    for w, h, needle in ((10000, 10000, "exceeds the limit of 16777216 pixels"),
                         (100000, 100000, "decompression-bomb size")):
        bomb = png_header(tmp_path / "in" / f"bomb{w}.png", w, h)
        assert bomb.stat().st_size < 2000
        out = tmp_path / f"out{w}"
        code, _, err = run(capsys, good, bomb, "-o", out)
        assert code == 1 and one_line(err) and f"bomb{w}.png" in err and needle in err
        assert not out.exists()
        bomb.unlink()
    big = img(tmp_path / "in" / "big.png", 9, size=(64, 64))
    code, _, err = run(capsys, big, "-o", tmp_path / "o", "--max-pixels", "1000")
    assert code == 1 and "big.png: 64x64 = 4096 pixels exceeds the limit of 1000" in err
    assert run(capsys, big, "-o", tmp_path / "o", "--max-pixels", "4096")[0] == 0


def test_bad_max_pixels_is_a_usage_error(tmp_path, capsys):
    try:
        run(capsys, "x.png", "-o", tmp_path, "--max-pixels", "-3")
    except SystemExit as exc:
        assert exc.code == 2
    assert "positive integer" in capsys.readouterr().err


def test_same_file_twice_and_real_fixture(shared, tmp_path, capsys):
    src = tmp_path / "r.png"
    shutil.copy(shared / "data/Rain100L_test/input/1.png", src)
    code, _, _ = run(capsys, src, src, "-o", tmp_path / "o")
    assert code == 0 and [p.name for p in (tmp_path / "o").iterdir()] == ["r.png"]
    assert (tmp_path / "o" / "r.png").read_bytes() != b""


def _derain_on_a_terminal(tmp_path: Path, *extra: str) -> tuple[int, str, list[str]]:
    """Run `msgnn-bench derain` as a separate process whose stderr is a pseudo-terminal (as in a shell);
    returns the exit code, what reached the terminal, and stdout's lines."""
    import fcntl
    import os
    import pty
    import subprocess
    import sys
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    try:
        proc = subprocess.Popen([sys.executable, "-m", "benchmark.tools.cli", "derain", "--model", "input",
                                 str(tmp_path / "in"), "-o", str(tmp_path / f"out{len(extra)}"), *extra],
                                stdout=subprocess.PIPE, stderr=slave, text=True, cwd=Path(__file__).parents[1],
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        os.close(slave)
        tty = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            tty += chunk
        out = proc.stdout.read()
        proc.wait(120)
    finally:
        os.close(master)
    return proc.returncode, tty.decode(errors="replace"), out.splitlines()


def test_folder_shows_a_progress_bar_on_a_terminal_only(tmp_path, capsys):
    for i in range(3):
        img(tmp_path / "in" / f"{i}.png", 40 * i)
    code, tty, out = _derain_on_a_terminal(tmp_path)
    assert code == 0 and len(out) == 3  # stdout: the written files, one per line, bar or not
    assert "derain" in tty and "3/3" in tty and "100%" in tty, tty  # the finished bar, on stderr
    code, tty, out = _derain_on_a_terminal(tmp_path, "--quiet")
    assert code == 0 and len(out) == 3 and tty.strip() == "", tty
    # stderr not a terminal (pytest captures it): no bar, nothing at all
    code, out, err = run(capsys, tmp_path / "in", "-o", tmp_path / "piped")
    assert code == 0 and len(out.splitlines()) == 3 and err == "", err
