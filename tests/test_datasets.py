"""Dataset download / extraction / normalisation (benchmark/datasets/), all offline.

Archives are built in tmp_path from the real fixtures in ../shared/data (each real naming
layout) and served by a small HTTP server on 127.0.0.1 (tests/helpers/dataset_fixtures.py); archive
safety is in test_dataset_archives.py.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import socket
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from benchmark.tools import datasets_cli as cli
from benchmark import datasets as ds
from benchmark.datasets import acquisition, specs
from benchmark.datasets import transfer

from .helpers.dataset_fixtures import (BIG_DIDMDN, BIG_INTERNET, SHARED, make_tar, make_zip, rain100l_registry, registry,
                               serve, server, sha, sums)  # noqa: F401 (server: a fixture)

pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason=f"fixtures not found at {SHARED}")


def test_http_download_normalises_rain100l(tmp_path, server, capsys):
    url = serve(server, make_zip("Rain100L_test", tmp_path / "Rain100L.zip", "Rain100L"))
    reg, root = rain100l_registry(tmp_path, url), tmp_path / "data"
    assert cli.datasets_main(["download", "rain100l", "--root", str(root), "--registry", str(reg)]) == 0
    assert "no sha256 is published" in capsys.readouterr().err
    assert (root / "downloads/rain100l/Rain100L.zip.sha256").read_text().split()[0] == sha(tmp_path / "Rain100L.zip")
    test = root / "rain100l" / "test"
    ids = [str(i) for i in range(1, 21)]
    assert sorted(p.stem for p in (test / "input").iterdir()) == sorted(ids)
    assert sorted(p.stem for p in (test / "target").iterdir()) == sorted(ids)
    ref = sums("Rain100L_test")
    for i in ids:  # PNG sources are copied byte for byte
        assert sha(test / "input" / f"{i}.png") == ref[f"input/{i}.png"]
        assert sha(test / "target" / f"{i}.png") == ref[f"target/{i}.png"]
    manifest = json.loads((test / "manifest.json").read_text())
    assert manifest["count"] == 20 and manifest["layout"] == "input/target"
    assert [e["id"] for e in manifest["items"]] == ids
    assert {e["input"]["transform"] for e in manifest["items"]} == {"copy"}
    assert not (root / "rain100l" / "train").exists()  # optional split without a source
    assert cli.datasets_main(["verify", "rain100l", "--root", str(root), "--registry", str(reg)]) == 0
    assert cli.datasets_main(["path", "rain100l", "--root", str(root), "--registry", str(reg)]) == 0
    assert capsys.readouterr().out.strip().endswith("rain100l")
    n = len(server.requests)
    assert ds.ensure_dataset("rain100l", root, registry=reg) == root / "rain100l"
    assert len(server.requests) == n and "already present" in capsys.readouterr().err


def test_download_from_archive_cli(tmp_path):
    archive = make_zip("Rain100L_test", tmp_path / "my_copy.zip", "Rain100L_test")
    reg, root = rain100l_registry(tmp_path), tmp_path / "data"
    argv = ["download", "rain100l", "--from", str(archive), "--root", str(root), "--registry", str(reg)]
    assert cli.datasets_main(argv) == 0
    assert len(list((root / "rain100l/test/input").glob("*.png"))) == 20
    assert ds.verify("rain100l", root, reg) == {"test": 20}
    # The real registry asks for the full 100-image test set: a partial copy fails loudly.
    with pytest.raises(ds.DatasetError, match="20 pairs, expected 100"):
        ds.verify("rain100l", root)
    assert cli.datasets_main(["verify", "rain100l", "--root", str(root)]) == 1


@pytest.mark.parametrize("folder, archive, top, layout, count, src_of", [
    ("Rain100H_test", "Rain100H.zip", "Rain100H", "inputcrop/cleancrop", 20,
     lambda i: (f"inputcrop/{i}.png", f"cleancrop/{i}.png")),
    ("Rain200H_test_samples", "rain_data_test_Heavy.gz", "rain_heavy_test", "rain/X2", 5,
     lambda i: (f"rain/X2/norain-{i}x2.png", f"norain/norain-{i}.png")),
    ("DDN-SIRR_test", "sirr.tar", "test", "input_val/label_val", 10,
     lambda i: (f"input_val/input{i}.png", f"label_val/norain{i}.png")),
])
def test_each_real_layout_over_http(tmp_path, server, folder, archive, top, layout, count, src_of):
    out = tmp_path / archive
    if archive.endswith(".zip"):
        make_zip(folder, out, top)
    else:
        make_tar(folder, out, top, "w:gz" if archive.endswith(".gz") else "w")
    reg = registry(tmp_path, "fixture", archives=[{"file": archive, "urls": [serve(server, out)],
                                                   "sha256": sha(out), "splits": ["test"]}],
                   splits={"test": {"count": count}})
    dest = ds.download("fixture", tmp_path / "data", registry=reg, progress=False)
    manifest = json.loads((dest / "test/manifest.json").read_text())
    assert manifest["layout"] == layout
    ref = sums(folder)
    ids = [str(i) for i in range(1, count + 1)]
    assert [e["id"] for e in manifest["items"]] == ids
    for i in ids:
        src_in, src_tgt = src_of(i)
        assert sha(dest / "test/input" / f"{i}.png") == ref[src_in]
        assert sha(dest / "test/target" / f"{i}.png") == ref[src_tgt]


def test_side_by_side_split_into_derived_pngs(tmp_path, server):
    out = make_zip("RealWorld_DIDMDN_samples", tmp_path / "didmdn.zip", "DID-MDN-datasets/DID-MDN-test",
                   skip=BIG_DIDMDN)
    reg = registry(tmp_path, "rain1200", archives=[{"file": "didmdn.zip", "urls": [serve(server, out)],
                                                    "splits": ["test"]}],
                   rainy_side="left", splits={"test": {"count": 5, "locate": ["DID-MDN-test"]}})
    dest = ds.download("rain1200", tmp_path / "data", registry=reg, progress=False)
    with Image.open(SHARED / "RealWorld_DIDMDN_samples/github/1.jpg") as whole:
        whole = whole.convert("RGB")
    w, h = whole.size
    with Image.open(dest / "test/input/1.png") as rainy, Image.open(dest / "test/target/1.png") as clean:
        assert rainy.format == "PNG" and rainy.size == (w // 2, h)
        assert rainy.tobytes() == whole.crop((0, 0, w // 2, h)).tobytes()
        assert clean.tobytes() == whole.crop((w // 2, 0, w, h)).tobytes()
    entry = json.loads((dest / "test/manifest.json").read_text())["items"][1]
    assert entry["id"] == "1"
    assert entry["input"]["transform"] == "left-half-of-side-by-side"
    assert entry["target"]["transform"] == "right-half-of-side-by-side"


def test_real_world_images_without_targets(tmp_path, server):
    out = make_zip("RealWorld_Internet147", tmp_path / "Practical.zip", "Practical", skip=BIG_INTERNET)
    reg = registry(tmp_path, "real", paired=False, archives=[
        {"file": "Practical.zip", "urls": [serve(server, out)], "splits": ["test"]}],
        splits={"test": {"count": None, "locate": ["."]}})
    root = tmp_path / "data"
    dest = ds.download("real", root, registry=reg, progress=False)
    assert not (dest / "test/target").exists()
    expected = [i for i in range(1, 21) if f"{i}.jpg" not in BIG_INTERNET]
    assert sorted(int(p.stem) for p in (dest / "test/input").iterdir()) == expected
    entry = json.loads((dest / "test/manifest.json").read_text())["items"][0]
    assert entry["input"]["transform"] == "decoded-to-png"
    with Image.open(dest / "test/input/1.png") as png, \
            Image.open(SHARED / "RealWorld_Internet147/real_input/1.jpg") as jpg:
        assert png.tobytes() == jpg.convert("RGB").tobytes()  # lossless copy of the decoded pixels
    assert ds.verify("real", root, reg) == {"test": 8}
    (dest / "test/input/7.png").unlink()
    with pytest.raises(ds.DatasetError, match=r"7 images, expected 8 \(recorded\)"):
        ds.verify("real", root, reg)


def test_resume_after_interrupted_transfer(tmp_path, server):
    archive = make_zip("Rain100L_test", tmp_path / "Rain100L.zip", "Rain100L")
    url = serve(server, archive)
    server.cut_first["/Rain100L.zip"] = 300_000
    reg = rain100l_registry(tmp_path, url, sha256=sha(archive))
    ds.download("rain100l", tmp_path / "data", registry=reg, progress=False)
    assert server.requests == [("/Rain100L.zip", None), ("/Rain100L.zip", "bytes=300000-")]
    assert sha(tmp_path / "data/downloads/rain100l/Rain100L.zip") == sha(archive)


def test_resume_of_a_part_left_by_an_earlier_run(tmp_path, server):
    archive = make_zip("Rain100L_test", tmp_path / "Rain100L.zip", "Rain100L")
    reg = rain100l_registry(tmp_path, serve(server, archive), sha256=sha(archive))
    part = tmp_path / "data/downloads/rain100l/Rain100L.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(archive.read_bytes()[:50_000])
    ds.download("rain100l", tmp_path / "data", registry=reg, progress=False)
    assert server.requests == [("/Rain100L.zip", "bytes=50000-")]
    assert not part.exists()


def test_server_ignoring_range_restarts_cleanly(tmp_path, server):
    archive = make_zip("Rain100L_test", tmp_path / "Rain100L.zip", "Rain100L")
    reg = rain100l_registry(tmp_path, serve(server, archive), sha256=sha(archive))
    server.honour_range, server.cut_first["/Rain100L.zip"] = False, 123_456
    ds.download("rain100l", tmp_path / "data", registry=reg, progress=False)
    assert sha(tmp_path / "data/downloads/rain100l/Rain100L.zip") == sha(archive)


def test_checksum_mismatch_is_refused(tmp_path, server, capsys):
    archive = make_zip("Rain100L_test", tmp_path / "Rain100L.zip", "Rain100L")
    reg = rain100l_registry(tmp_path, serve(server, archive), sha256="0" * 64)
    root = tmp_path / "data"
    assert cli.datasets_main(["download", "rain100l", "--root", str(root), "--registry", str(reg)]) == 1
    err = capsys.readouterr().err
    assert f"sha256 {sha(archive)}, expected {'0' * 64}" in err
    assert len(server.requests) == 2  # a bad download is fetched once more before giving up
    assert not (root / "rain100l").exists()
    assert not (root / "downloads/rain100l/Rain100L.zip").exists()


def test_manual_placement(tmp_path, capsys):
    reg = registry(tmp_path, "rain200h", source="manual", homepage="https://example.invalid/page",
                   archives=[{"file": "rain_data_test_Heavy.gz", "urls": [], "splits": ["test"]},
                             {"file": "rain_data_train_Heavy.zip", "urls": [], "splits": ["train"]}],
                   splits={"test": {"count": 5, "locate": ["*test*"]}, "train": {"count": 5, "locate": ["*train*"]}})
    root = tmp_path / "data"
    with pytest.raises(ds.ManualDownloadRequired) as info:
        ds.ensure_dataset("rain200h", root, registry=reg)
    msg = str(info.value)
    assert "https://example.invalid/page" in msg
    assert str(root / "downloads/rain200h/rain_data_test_Heavy.gz") in msg and "--from" in msg
    assert cli.datasets_main(["download", "rain200h", "--root", str(root), "--registry", str(reg)]) == 3
    assert not (root / "rain200h").exists()
    # Archives put where the message says (the same fixture stands in for both splits).
    make_tar("Rain200H_test_samples", root / "downloads/rain200h/rain_data_test_Heavy.gz", "rain_heavy_test")
    make_zip("Rain200H_test_samples", root / "downloads/rain200h/rain_data_train_Heavy.zip", "rain_heavy_train")
    dest = ds.ensure_dataset("rain200h", root, registry=reg)
    assert ds.verify("rain200h", root, reg) == {"test": 5, "train": 5}
    # An extracted folder through --from, one split at a time.
    other = tmp_path / "other"
    argv = ["download", "rain200h", "--from", str(SHARED / "Rain200H_test_samples"), "--split", "test",
            "--root", str(other), "--registry", str(reg)]
    assert cli.datasets_main(argv) == 0
    assert sha(other / "rain200h/test/input/2.png") == sha(dest / "test/input/2.png")
    assert not (other / "rain200h/train").exists()
    # A known archive through --from builds the splits it holds and says which are still missing.
    third = tmp_path / "third"
    argv = ["download", "rain200h", "--from", str(root / "downloads/rain200h/rain_data_test_Heavy.gz"),
            "--root", str(third), "--registry", str(reg)]
    assert cli.datasets_main(argv) == 0
    assert "no 'train' split" in capsys.readouterr().err
    assert (third / "rain200h/test/manifest.json").is_file() and not (third / "rain200h/train").exists()


def test_offline_names_dataset_and_url(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/Rain100L.zip"
    root = tmp_path / "data"
    (root / "rain100h").mkdir(parents=True)
    (root / "rain100h" / "keep.txt").write_text("untouched")
    reg = rain100l_registry(tmp_path, url)
    assert cli.datasets_main(["download", "rain100l", "--root", str(root), "--registry", str(reg)]) == 1
    err = capsys.readouterr().err
    assert "'rain100l'" in err and url in err and err.count("error:") == 1
    assert (root / "rain100h" / "keep.txt").read_text() == "untouched"
    assert not (root / "rain100l").exists()
    assert not list((root / "downloads/rain100l").iterdir())


def _ddn_files(tmp_path: Path) -> dict[str, bytes]:
    """A DDN-style tree (JPEG, as in Rain14000) re-encoded from the Rain200H fixture pixels."""
    files = {}
    for gt, src in ((1, 1), (901, 2), (902, 3)):
        for rel, fixture in ((f"ground truth/{gt}.jpg", f"norain/norain-{src}.png"),
                             (f"rainy image/{gt}_1.jpg", f"rain/X2/norain-{src}x2.png"),
                             (f"rainy image/{gt}_2.jpg", f"rain/X2/norain-{src}x2.png")):
            buf = io.BytesIO()
            Image.open(SHARED / "Rain200H_test_samples" / fixture).save(buf, format="JPEG", quality=90)
            files[rel] = buf.getvalue()
    return files


def test_per_file_source_with_published_list(tmp_path, server):
    files = _ddn_files(tmp_path)
    for rel, data in files.items():
        server.files["/lfs/" + rel.replace(" ", "%20")] = data
    rows = "".join(f"{rel}\t{hashlib.sha256(d).hexdigest()}\t{len(d)}\n" for rel, d in sorted(files.items()))
    (tmp_path / "list.tsv").write_text("path\tsha256\tsize\n" + rows)
    reg = registry(tmp_path, "rain1400", files={"base_url": server.url("/lfs/"), "list": "list.tsv",
                                                "list_sha256": sha(tmp_path / "list.tsv")},
                   splits={"train": {"count": 2, "id_range": [1, 900], "locate": ["*train*", "."]},
                           "test": {"count": 4, "id_range": [901, 1000], "locate": ["*test*", "."]}})
    root = tmp_path / "data"
    ds.download("rain1400", root, splits=["test"], registry=reg, progress=False)
    assert not any("/1.jpg" in p or "/1_" in p for p, _ in server.requests)  # only the test ids fetched
    test = root / "rain1400/test"
    assert sorted(p.stem for p in (test / "input").iterdir()) == ["901_1", "901_2", "902_1", "902_2"]
    assert sha(test / "target/901_1.png") == sha(test / "target/901_2.png")
    entry = json.loads((test / "manifest.json").read_text())["items"][0]
    assert entry["input"]["transform"] == "decoded-to-png" and entry["target"]["from"] == "ground truth/901.jpg"
    ds.download("rain1400", root, registry=reg, progress=False)
    assert ds.verify("rain1400", root, reg) == {"train": 2, "test": 4}
    # A file whose bytes differ from the published list is refused.
    server.files["/lfs/rainy%20image/1_2.jpg"] = b"not the published file"
    (root / "downloads/rain1400/files/rainy image/1_2.jpg").unlink()
    with pytest.raises(ds.ChecksumError, match="1_2.jpg"):
        ds.download("rain1400", root, registry=reg, force=True, progress=False)


def test_unpaired_and_count_errors_install_nothing(tmp_path):
    archive = tmp_path / "broken.zip"
    with zipfile.ZipFile(make_zip("Rain100L_test", tmp_path / "full.zip", "R")) as src, \
            zipfile.ZipFile(archive, "w") as dst:
        for info in src.infolist():
            if info.filename != "R/target/7.png":
                dst.writestr(info, src.read(info))
    with pytest.raises(ds.LayoutError, match=r"broken.zip:/R/input/7.png: input has no target"):
        ds.download("rain100l", tmp_path / "data", source=archive, registry=rain100l_registry(tmp_path))
    with pytest.raises(ds.DatasetError, match="found 20 pairs .* expected 21"):
        ds.download("rain100l", tmp_path / "data", source=tmp_path / "full.zip",
                    registry=rain100l_registry(tmp_path, count=21))
    assert not (tmp_path / "data/rain100l").exists()


def test_verify_detects_tampering_and_force_replaces(tmp_path):
    reg, root = rain100l_registry(tmp_path), tmp_path / "data"
    ds.download("rain100l", root, source=SHARED / "Rain100L_test", registry=reg)
    target = root / "rain100l/test/target/4.png"
    target.write_bytes((root / "rain100l/test/target/5.png").read_bytes())
    with pytest.raises(ds.DatasetError, match=r"target/4.png: sha256 differs"):
        ds.verify("rain100l", root, reg)
    ds.download("rain100l", root, registry=reg, source=SHARED / "Rain100L_test")
    assert sha(target) == sums("Rain100L_test")["target/4.png"]
    assert sorted(p.name for p in (root / "rain100l").iterdir()) == ["test"]  # no leftovers


def test_paper_registry_facts():
    reg = ds.load_registry()
    assert set(reg) == {"rain200h", "rain200l", "rain1200", "rain1400", "rain12", "rain100h", "rain100l",
                        "real", "rain-synth"}
    counts = {k: {n: s.count for n, s in v.splits.items()} for k, v in reg.items()}
    assert counts["rain200h"] == counts["rain200l"] == {"train": 1800, "test": 200}
    assert counts["rain1200"]["test"] == 1200 and reg["rain1200"].rainy_side == "left"
    assert counts["rain1400"]["test"] == 1400 and reg["rain1400"].splits["test"].id_range == (901, 1000)
    assert counts["rain12"] == {"test": 12} and reg["rain12"].model_from == "rain200h"
    assert counts["rain100h"]["test"] == counts["rain100l"]["test"] == 100
    assert reg["real"].paired is False and reg["rain-synth"].source == "embedded"
    for key, spec in reg.items():
        assert spec.citation and spec.licence, key
        if spec.source == "manual":
            assert spec.manual and not any(a.urls for a in spec.archives), key
    rows = acquisition._checksum_list(reg["rain1400"])  # the list shipped in the package matches its registered sha256
    assert len(rows) == 15000 and sum(1 for r in rows if acquisition._in_range(Path(r).stem, (901, 1000))) == 1500


def test_embedded_and_unknown_datasets(tmp_path, capsys):
    with pytest.raises(ds.DatasetError, match="benchmark.datasets.synth"):
        ds.ensure_dataset("rain-synth", tmp_path)
    for split in ("train", "test"):  # as a generator would write it
        shutil.copytree(SHARED / "Rain100L_test", tmp_path / "rain-synth" / split,
                        ignore=shutil.ignore_patterns("SHA256SUMS", "1?.png", "2?.png"))
    assert ds.ensure_dataset("rain-synth", tmp_path) == tmp_path / "rain-synth"
    assert ds.verify("rain-synth", tmp_path) == {"train": 9, "test": 9}
    assert ds.write_manifest(tmp_path / "rain-synth" / "test", "rain-synth", "test")["count"] == 9
    (tmp_path / "rain-synth/test/input/3.png").write_bytes((tmp_path / "rain-synth/test/input/4.png").read_bytes())
    with pytest.raises(ds.DatasetError, match="sha256 differs"):
        ds.verify("rain-synth", tmp_path)
    assert cli.datasets_main(["download", "nope", "--root", str(tmp_path)]) == 1
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    assert cli.datasets_main(["list", "--root", str(tmp_path)]) == 0
    assert "rain1400" in capsys.readouterr().out


def test_git_blob_id_and_http_errors(tmp_path, server, capsys):
    archive = make_zip("Rain100L_test", tmp_path / "li_cvpr16_rain.zip", "rain12",
                       skip=tuple(f"{i}.png" for i in range(4, 21)))
    data = archive.read_bytes()
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # what `git hash-object` prints

    def reg(blob_id, url):
        return registry(tmp_path, "rain12", splits={"test": {"count": 3}}, archives=[
            {"file": archive.name, "urls": [url], "git_blob_sha1": blob_id, "splits": ["test"]}])
    url = serve(server, archive)
    with pytest.raises(ds.ChecksumError, match="git blob id"):
        ds.download("rain12", tmp_path / "a", registry=reg("0" * 40, url), progress=False)
    assert ds.download("rain12", tmp_path / "b", registry=reg(blob, url), progress=False).is_dir()
    missing = reg(blob, server.url("/nothing-here.zip"))
    assert cli.datasets_main(["download", "rain12", "--root", str(tmp_path / "c"), "--registry", str(missing)]) == 1
    assert "HTTP 404" in capsys.readouterr().err


# ---------------------------------------------------------------- issue 15/16: archives, rain-synth
def test_generated_rain_synth_is_listed_present(tmp_path, capsys):
    from benchmark.datasets import synth

    synth.generate(tmp_path / "rain-synth", synth.SynthParams(seed=3, n_train=2, n_test=1, train_size=24,
                                                              test_size=(16, 20)))
    assert cli.datasets_main(["list", "--root", str(tmp_path)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("rain-synth"))
    assert row[49:58].strip() == "yes"  # the "present" column
    assert ds.verify("rain-synth", tmp_path) == {"train": 2, "test": 1}
    (tmp_path / "rain-synth/test/input/1.png").unlink()
    assert cli.datasets_main(["list", "--root", str(tmp_path)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("rain-synth"))
    assert row[49:58].strip() == "no"


def test_no_shell_true_in_sources():
    """Commands are argument lists, never a shell line that a user string could extend. The one
    exception runs dvc.yaml stage commands, which DVC defines as shell lines (as `dvc repro` does)."""
    from tests.conftest import REPO

    hits = [f"{p}:{n}" for folder in ("benchmark", "pipelines", "msgnn", "baselines")
            for p in sorted((REPO / folder).rglob("*.py"))
            for n, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(r"shell\s*=\s*True|os\.system\(|os\.popen\(", line)]
    assert [h for h in hits if "benchmark/tools/grid.py" not in h] == []
    assert len(hits) <= 1  # grid.py's stage runner only


def test_library_reads_nothing_outside_the_repository():
    """The published Rain14000 per-file list ships in the package (source: checksums/README.md), and no
    library module builds a path out of the repository (the old lookup of ../shared/data/checksums)."""
    repo = Path(__file__).resolve().parents[1]
    spec = ds.load_registry()["rain1400"]
    shipped = specs.CHECKSUM_DIR / spec.files.list
    assert repo in shipped.resolve().parents and transfer.sha256_file(shipped) == spec.files.list_sha256
    assert spec.files.list in (specs.CHECKSUM_DIR / "README.md").read_text()
    outside = re.compile(r"""["']\.\./|/\s*["']shared["']|["']shared/""")
    # `Path(__file__).parents[k]` may name the repository root (k = the file's depth below it), no higher
    up = re.compile(r"parents\[(\d+)\]")
    offenders = [f"{p.relative_to(repo)}:{i}" for d in ("benchmark", "pipelines", "baselines", "msgnn")
                 for p in sorted((repo / d).rglob("*.py"))
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if outside.search(line) or any(int(k) > len(p.relative_to(repo).parts) - 1
                                                for k in up.findall(line))]
    assert offenders == []
