"""Tiny copies of every paper dataset's release, in each release's exact layout and file naming, and a
test registry that points the real download code at them (issue 24, tests/test_rehearsal.py).

Images are real rainy/clean pairs from ``../shared/data/Rain100L_old_full`` (and real rainy photos from
``RealWorld_Internet147``), shrunk to 64x48 so that the whole paper DAG trains on a 2-core CPU; only the
number of files differs from the releases (2 test images a set, 2-3 training pairs).

* ``rain_data_train_Heavy.zip`` / ``rain_data_test_Heavy.gz`` (a tar despite its name) and the Light
  pair: ``rain_data_<split>_<Heavy|Light>/rain/X2/norain-Nx2.png`` + ``.../norain/norain-N.png``;
* ``DID-MDN-datasets.zip``: ``DID-MDN-training/Rain_{Heavy,Medium,Light}/train2018new/N.jpg`` and
  ``DID-MDN-test/N.jpg``, each JPEG [rainy | clean] side by side (rainy on the left, as DID-MDN);
* Rain1400 (DDN): files ``rainy image/<id>_<k>.jpg`` and ``ground truth/<id>.jpg`` served one by one
  with a per-file ``path / sha256 / size`` list, as the pinned git-LFS mirror; train ids <= 900,
  test ids 901-1000;
* ``li_cvpr16_rain.zip`` (Rain12; the real zip's inner names are unverified, see datasets.yaml):
  PReNet's test12 layout ``test12/rainy/N.png`` + ``test12/groundtruth/N.png``;
* ``Practical.zip`` (real-world, no ground truth): ``Practical/N.jpg``.

The registry is the shipped ``datasets.yaml`` with only URLs, checksums (sha256, git blob id, the
per-file list and its sha256) and counts replaced — layouts, split locations, ``rainy_side`` and the
manual-step texts stay the real ones — handed to the code through ``$MSGNN_DATASETS_REGISTRY``.
The Rain100H/L zips are not built: no paper-profile stage uses them.
"""
from __future__ import annotations

import copy
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import yaml
from PIL import Image

from benchmark.datasets.specs import REGISTRY_PATH
from benchmark.datasets.transfer import git_blob_sha1, sha256_file

from ..conftest import SHARED

PAIRS = SHARED / "data" / "Rain100L_old_full"
REAL = SHARED / "data" / "RealWorld_Internet147" / "real_input"
SIZE = (64, 48)  # >= every rehearsal patch (32); small enough that 110 stages fit the CPU budget
MANUAL = ("rain200h", "rain200l", "rain1200")  # handed over with `msgnn-bench datasets download --from`
TEST_IDS = {"rain200h": [1, 2], "rain200l": [1, 2], "rain1200": [1, 2], "rain1400": ["901_1", "901_2"],
            "rain12": [1, 2], "real": [1, 2]}  # the normalised test ids (report.images picks from these)


def _img(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB").resize(SIZE, Image.BICUBIC)


def _pair(n: int) -> tuple[Image.Image, Image.Image]:
    """(rainy, clean) = Rain100L pair ``n`` shrunk to SIZE."""
    return _img(PAIRS / "input" / f"{n}.png"), _img(PAIRS / "target" / f"{n}.png")


def _bytes(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _side_by_side(rainy: Image.Image, clean: Image.Image) -> Image.Image:
    out = Image.new("RGB", (rainy.width * 2, rainy.height))
    out.paste(rainy, (0, 0))
    out.paste(clean, (rainy.width, 0))
    return out


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tf:  # plain tar: JORDER's *.gz test archives are tars despite the name
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tf.addfile(info, io.BytesIO(data))
    return path


def _jorder(top: str, ids: list[int], first: int) -> dict[str, bytes]:
    files = {}
    for j, n in enumerate(ids):
        rainy, clean = _pair(first + j)
        files[f"{top}/rain/X2/norain-{n}x2.png"] = _bytes(rainy, "PNG")
        files[f"{top}/norain/norain-{n}.png"] = _bytes(clean, "PNG")
    return files


def build(out: Path, base_url: str) -> dict:
    """Write the archives and the test registry under ``out``.

    Returns ``{"registry": path, "manual": {key: [archive paths]}, "served": {url path: file},
    "counts": {key: {split: n}}}``; ``served`` is what the local HTTP server must answer at ``base_url``.
    """
    out.mkdir(parents=True, exist_ok=True)
    manual_dir, served_dir = out / "Downloads", out / "served"
    manual_dir.mkdir(exist_ok=True)
    served_dir.mkdir(exist_ok=True)
    manual: dict[str, list[Path]] = {}
    counts: dict[str, dict[str, int]] = {}

    # Rain200H / Rain200L: JORDER's new release, one train zip and one test tar per rain level
    for key, level, first in (("rain200h", "Heavy", 1), ("rain200l", "Light", 11)):
        train = _zip(manual_dir / f"rain_data_train_{level}.zip", _jorder(f"rain_data_train_{level}", [1, 2, 3], first))
        test = _tar(manual_dir / f"rain_data_test_{level}.gz", _jorder(f"rain_data_test_{level}", [1, 2], first + 3))
        manual[key] = [train, test]
        counts[key] = {"train": 3, "test": 2}

    # Rain1200: DID-MDN's one zip, side-by-side JPEGs [rainy | clean]
    files = {}
    for j, density in enumerate(("Heavy", "Medium", "Light")):
        files[f"DID-MDN-training/Rain_{density}/train2018new/{j + 1}.jpg"] = _bytes(_side_by_side(*_pair(21 + j)), "JPEG")
    for j in (1, 2):
        files[f"DID-MDN-test/{j}.jpg"] = _bytes(_side_by_side(*_pair(23 + j)), "JPEG")
    manual["rain1200"] = [_zip(manual_dir / "DID-MDN-datasets.zip", files)]
    counts["rain1200"] = {"train": 3, "test": 2}

    # Rain1400: DDN's JPEGs file by file, with a per-file list like the git-LFS pointers' one
    ddn: dict[str, bytes] = {}
    for j, (cid, ks) in enumerate(((1, [1]), (2, [1]), (901, [1, 2]))):
        rainy0, clean = _pair(31 + j)
        ddn[f"ground truth/{cid}.jpg"] = _bytes(clean, "JPEG")
        for k in ks:
            rainy = rainy0 if k == 1 else _pair(41 + k)[0]
            ddn[f"rainy image/{cid}_{k}.jpg"] = _bytes(rainy, "JPEG")
    rows = ["path\tsha256\tsize"]
    for rel, data in sorted(ddn.items()):
        dest = served_dir / "ddn" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        rows.append(f"{rel}\t{hashlib.sha256(data).hexdigest()}\t{len(data)}")
    tsv = out / "DDN_rehearsal_sha256.tsv"
    tsv.write_text("\n".join(rows) + "\n")
    counts["rain1400"] = {"train": 2, "test": 2}

    rain12 = _zip(served_dir / "li_cvpr16_rain.zip", {
        **{f"test12/rainy/{n}.png": _bytes(_pair(50 + n)[0], "PNG") for n in (1, 2)},
        **{f"test12/groundtruth/{n}.png": _bytes(_pair(50 + n)[1], "PNG") for n in (1, 2)}})
    counts["rain12"] = {"test": 2}
    real = _zip(served_dir / "Practical.zip", {f"Practical/{n}.jpg": _bytes(_img(REAL / f"{n}.jpg"), "JPEG")
                                               for n in (1, 2)})
    counts["real"] = {"test": 2}

    # the registry: the shipped one, with only URLs, checksums and counts replaced
    reg = copy.deepcopy(yaml.safe_load(REGISTRY_PATH.read_text()))
    for key, splits in counts.items():
        for split, n in splits.items():
            reg["datasets"][key]["splits"][split]["count"] = n
    for key in MANUAL:
        for a, path in zip(reg["datasets"][key]["archives"], manual[key]):
            assert a["file"] == path.name, (a["file"], path.name)
            a.update(size=path.stat().st_size, sha256=sha256_file(path))
    for key, path in (("rain12", rain12), ("real", real)):
        (a,) = reg["datasets"][key]["archives"]
        assert a["file"] == path.name
        a.update(urls=[f"{base_url}/{path.name}"], size=path.stat().st_size, sha256=sha256_file(path))
        if a.get("git_blob_sha1"):
            a["git_blob_sha1"] = git_blob_sha1(path)
    reg["datasets"]["rain1400"]["files"].update(base_url=f"{base_url}/ddn/", list=tsv.name,
                                                list_sha256=sha256_file(tsv),
                                                total_size=sum(map(len, ddn.values())))
    registry = out / "datasets-rehearsal.yaml"
    registry.write_text(yaml.safe_dump(reg, sort_keys=False))
    served = {"/" + p.relative_to(served_dir).as_posix(): p for p in served_dir.rglob("*") if p.is_file()}
    return {"registry": registry, "manual": manual, "served": served, "counts": counts}
