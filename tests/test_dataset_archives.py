"""Archive safety (benchmark/datasets/transfer.py): corrupt, malicious, duplicate-entry and
decompression-bomb archives are refused, naming the entry, before anything is written."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from benchmark import datasets as ds
from benchmark.datasets import transfer

from .helpers.dataset_fixtures import SHARED, make_tar, make_zip, rain100l_registry, registry, serve, server, sha  # noqa: F401

pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason=f"fixtures not found at {SHARED}")


@pytest.mark.parametrize("fmt, message", [("zip", "neither a zip nor a tar"), ("tar.gz", "damaged archive")])
def test_corrupt_archive_is_downloaded_again(tmp_path, server, capsys, fmt, message):
    archive = tmp_path / "Rain100L.zip"  # the name the registry expects; content may be a tar
    if fmt == "zip":
        make_zip("Rain100L_test", archive, "Rain100L")
    else:
        make_tar("Rain100L_test", archive, "Rain100L")
    reg = rain100l_registry(tmp_path, serve(server, archive))  # no published sha256
    placed = tmp_path / "data/downloads/rain100l/Rain100L.zip"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])  # half-downloaded
    ds.download("rain100l", tmp_path / "data", registry=reg, progress=False)
    assert message in capsys.readouterr().err
    assert sha(placed) == sha(archive) and len(server.requests) == 1
    assert len(list((tmp_path / "data/rain100l/test/input").iterdir())) == 20


def _evil_zip(path: Path, kind: str) -> None:
    png = (SHARED / "Rain100L_test/input/1.png").read_bytes()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("Rain100L/input/1.png", png)
        if kind == "dotdot":
            zf.writestr("Rain100L/../../evil.png", png)
        elif kind == "absolute":
            zf.writestr(zipfile.ZipInfo(str(path.parent / "abs_evil.png")), png)
        else:
            info = zipfile.ZipInfo("Rain100L/target/1.png")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, str(path.parent / "outside.png"))


def _evil_tar(path: Path, kind: str) -> None:
    png = (SHARED / "Rain100L_test/input/1.png").read_bytes()
    with tarfile.open(path, "w:gz") as tf:
        def add(name, data=png, **kw):
            info = tarfile.TarInfo(name)
            for k, v in kw.items():
                setattr(info, k, v)
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            tf.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
        add("Rain100L/input/1.png")
        if kind == "dotdot":
            add("../evil.png")
        elif kind == "absolute":
            add(str(path.parent / "abs_evil.png"))
        elif kind == "symlink":
            add("Rain100L/target/1.png", type=tarfile.SYMTYPE, linkname=str(path.parent / "outside.png"))
        else:
            add("Rain100L/dev", type=tarfile.CHRTYPE)


@pytest.mark.parametrize("fmt, kind", [("zip", "dotdot"), ("zip", "absolute"), ("zip", "symlink"),
                                       ("tar", "dotdot"), ("tar", "absolute"), ("tar", "symlink"),
                                       ("tar", "device")])
def test_malicious_archives_are_refused(tmp_path, fmt, kind):
    evil_dir = tmp_path / "evil"
    evil_dir.mkdir()
    archive = evil_dir / f"Rain100L.{'zip' if fmt == 'zip' else 'tar.gz'}"
    (_evil_zip if fmt == "zip" else _evil_tar)(archive, kind)
    root = tmp_path / "deep" / "data"
    with pytest.raises(transfer.UnsafeArchiveError, match="refusing"):
        ds.download("rain100l", root, source=archive, registry=rain100l_registry(tmp_path, count=1))
    assert not (root / "rain100l").exists()
    assert not any(p.name in ("evil.png", "abs_evil.png") for p in tmp_path.rglob("*"))
    assert not list((root / "downloads/rain100l").iterdir())  # temporary extraction removed


def _archive(path: Path, fmt: str, entries: list[tuple[str, bytes]]) -> None:
    """A zip or tar.gz of (name, bytes) entries, written as given (duplicates and all)."""
    if fmt == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    else:
        with tarfile.open(path, "w:gz", compresslevel=1) as tf:
            for name, data in entries:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))


def _dup_archive(path: Path, fmt: str) -> None:
    rainy = (SHARED / "Rain100L_test/input/1.png").read_bytes()
    clean = (SHARED / "Rain100L_test/target/1.png").read_bytes()
    _archive(path, fmt, [("Rain100L/input/1.png", rainy), ("Rain100L/target/1.png", clean),
                         ("Rain100L/./input/1.png", clean)])  # the same name again: a clean image as the rainy one


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_duplicate_entries_are_refused(tmp_path, fmt):
    archive = tmp_path / f"Rain100L.{'zip' if fmt == 'zip' else 'tar.gz'}"
    _dup_archive(archive, fmt)
    with pytest.raises(transfer.UnsafeArchiveError, match=r"duplicate entry 'Rain100L/./input/1.png'"):
        transfer.safe_extract(archive, tmp_path / "out")
    assert not any((tmp_path / "out").rglob("*.png"))  # checked before anything is written


def _bomb(path: Path, fmt: str, mib: int = 24) -> None:
    png = [("Rain100L/input/1.png", (SHARED / "Rain100L_test/input/1.png").read_bytes())] if fmt == "zip" else []
    _archive(path, fmt, png + [("Rain100L/input/2.png", b"\0" * (mib << 20))])


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_decompression_bombs_are_refused(tmp_path, fmt):
    archive = tmp_path / f"bomb.{'zip' if fmt == 'zip' else 'tar.gz'}"
    _bomb(archive, fmt)
    assert archive.stat().st_size < 600_000  # small on disk, 24 MiB unpacked
    with pytest.raises(transfer.UnsafeArchiveError, match="ratio above 100") as refusal:
        transfer.safe_extract(archive, tmp_path / "out")
    assert "'Rain100L/input/2.png'" in str(refusal.value)  # the entry is named
    assert not any((tmp_path / "out").rglob("*.png"))
    # limits are per archive: a spec may raise them, and a size cap applies whatever the ratio
    transfer.safe_extract(archive, tmp_path / "ok", transfer.ArchiveLimits(max_ratio=1e6))
    assert (tmp_path / "ok/Rain100L/input/2.png").stat().st_size == 24 << 20
    with pytest.raises(transfer.UnsafeArchiveError, match="max_unpacked_bytes"):
        transfer.safe_extract(archive, tmp_path / "small", transfer.ArchiveLimits(max_ratio=1e6,
                                                                                  max_unpacked_bytes=1 << 20))


def test_archive_limits_from_the_registry(tmp_path):
    archive = tmp_path / "Rain100L.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for sub in ("input", "target"):
            zf.writestr(f"Rain100L/{sub}/1.png", (SHARED / f"Rain100L_test/{sub}/1.png").read_bytes())
        zf.writestr("Rain100L/input/2.png", b"\0" * (2 << 20))  # 2 MiB of zeros: ratio ~1000
        zf.writestr("Rain100L/target/2.png", (SHARED / "Rain100L_test/target/2.png").read_bytes())
    default = registry(tmp_path, "rain100l", source="manual", archives=[{"file": "Rain100L.zip", "splits": ["test"]}],
                       splits={"test": {"count": 2, "locate": ["Rain100L"]}})
    with pytest.raises(transfer.UnsafeArchiveError, match="'Rain100L/input/2.png'.*ratio above 100"):
        ds.download("rain100l", tmp_path / "data", source=archive, registry=default)
    reg = registry(tmp_path, "rain100l", source="manual", archives=[
        {"file": "Rain100L.zip", "splits": ["test"], "max_ratio": 1e6}],
        splits={"test": {"count": 2, "locate": ["Rain100L"]}})
    # the bomb is let through by the spec's limit; its zero "image" is then named by the reader
    with pytest.raises(ds.DataError, match=r"2.png.*not a readable image"):
        ds.download("rain100l", tmp_path / "data", source=archive, registry=reg)
    bad = registry(tmp_path, "x", source="manual", archives=[{"file": "a.zip", "max_ratio": "big"}],
                   splits={"test": {"count": 1}})
    with pytest.raises(ds.DatasetError, match="max_ratio must be positive"):
        ds.load_registry(bad)
