"""benchmark.core.io: the one atomic writer and the one CSV reader."""
from __future__ import annotations

import errno
import os
import stat

import pytest

from benchmark.core import io


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_atomic_write_gives_the_users_umask_not_0600(tmp_path, mask):
    old = os.umask(mask)
    try:
        io.write_text(tmp_path / "a.txt", "x")
        io.atomic_write(tmp_path / "sub" / "b.bin", lambda f: f.write(b"y"))
        plain = tmp_path / "plain"
        plain.write_text("z")  # what an ordinary open() gives under the same umask
    finally:
        os.umask(old)
    want = stat.S_IMODE(plain.stat().st_mode)
    assert want == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == want
    assert stat.S_IMODE((tmp_path / "sub" / "b.bin").stat().st_mode) == want


def test_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "t.txt"
    io.write_text(target, "old")

    def full(f):
        f.write(b"part")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(io.WriteError) as exc:
        io.atomic_write(target, full)
    assert exc.value.reason == os.strerror(errno.ENOSPC) and "previous file is kept" in str(exc.value)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.txt"]


def test_atomic_write_without_replace_never_replaces(tmp_path):
    target = tmp_path / "out.png"
    io.atomic_write(target, lambda f: f.write(b"first"), replace=False)
    with pytest.raises(FileExistsError):
        io.atomic_write(target, lambda f: f.write(b"second"), replace=False)
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
    io.atomic_write(target, lambda f: f.write(b"third"))
    assert target.read_bytes() == b"third"


def test_before_replace_runs_after_the_data_are_written(tmp_path):
    target, seen = tmp_path / "last.pt", []
    io.write_text(target, "a")
    io.atomic_write(target, lambda f: f.write(b"b"), before_replace=lambda: seen.append(target.read_text()))
    assert seen == ["a"] and target.read_text() == "b"


def test_read_csv_rows_reads_back_write_csv(tmp_path):
    rows = [{"name": "a", "psnr": 30.5}, {"name": "b, c", "psnr": 31, "extra": "x\ny"}]
    io.write_csv(tmp_path / "m.csv", rows)
    assert io.read_csv_rows(tmp_path / "m.csv") == [{"name": "a", "psnr": "30.5", "extra": ""},
                                                    {"name": "b, c", "psnr": "31", "extra": "x\ny"}]
    io.write_csv(tmp_path / "empty.csv", [], fieldnames=["name", "psnr"])
    assert io.read_csv(tmp_path / "empty.csv") == (["name", "psnr"], [])
