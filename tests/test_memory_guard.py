"""Issue 16's last item: an image whose inference memory would not fit is refused before any work.

The free memory is made small by replacing ``memory.available`` (what the CLI asks); the estimate
itself is checked against a real inference in a fresh process.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.tools import cli, memory
from benchmark.core.checkpoints import save_model
from benchmark.core.registry import build_model, list_models

ROOT = Path(__file__).resolve().parents[1]


def img(path: Path, size=(96, 80)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def free(monkeypatch, nbytes):
    monkeypatch.setattr(memory, "available", lambda device="cpu": nbytes)


def no_load(monkeypatch):
    def refuse(args):
        raise AssertionError("the model was loaded although an input was refused")
    monkeypatch.setattr(cli, "_load", refuse)


def run(capsys, *argv):
    code = cli.main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> bool:
    return "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_every_model_has_measured_coefficients():
    assert set(list_models()) | {"scoring"} == set(memory.COEFFS)  # one measurement per registered model
    for name, (fixed, per_px) in memory.COEFFS.items():
        assert fixed >= 0 and per_px > 0, name
    # MSGNN at 1280x720: the perf table measured 2.93 GiB (peak RSS growth, 2 threads)
    assert memory.need("msgnn", 720, 1280) > 2.93 * 2**30


def test_derain_refuses_before_any_work(tmp_path, capsys, monkeypatch):
    a, b = img(tmp_path / "in" / "a.png", (16, 12)), img(tmp_path / "in" / "b.png", (400, 300))
    out = tmp_path / "out"
    free(monkeypatch, memory.need("input", 12, 16) + 1)  # a fits, b does not
    no_load(monkeypatch)
    code, _, err = run(capsys, "derain", "--model", "input", a, b, "-o", out)
    assert code == 1 and one_line(err), err
    assert f"{b}: 400x300 image needs about" in err and "available on cpu" in err
    assert "--tile" in err and "--no-memory-check" in err
    assert not out.exists()  # nothing written, not even the image that fits


def test_evaluate_refuses_before_any_work(two_pairs, capsys, monkeypatch):
    free(monkeypatch, 2**20)
    no_load(monkeypatch)
    code, _, err = run(capsys, "evaluate", "--model", "input", "--data", two_pairs)
    assert code == 1 and one_line(err), err
    assert f"{two_pairs / 'input' / '1.png'}: " in err and "needs about" in err


def test_tile_lowers_the_estimate(tmp_path, capsys, monkeypatch):
    src = img(tmp_path / "in" / "a.png", (96, 80))
    ckpt = tmp_path / "prenet.pt"
    torch.manual_seed(0)
    save_model(ckpt, "prenet", {}, build_model("prenet"))
    whole = memory.need("prenet", 80, 96)
    tiled = memory.need("prenet", 80, 96, tile=16, overlap=8)
    assert tiled < whole
    free(monkeypatch, (whole + tiled) // 2)
    common = ["derain", "--model", "prenet", "--checkpoint", ckpt, src]
    code, _, err = run(capsys, *common, "-o", tmp_path / "o1")
    assert code == 1 and "needs about" in err and not (tmp_path / "o1").exists()
    code, out, err = run(capsys, *common, "-o", tmp_path / "o2", "--tile", 16, "--tile-overlap", 8)
    assert code == 0, err
    assert (tmp_path / "o2" / "a.png").is_file()


def test_no_memory_check_and_unknown_memory_run(tmp_path, capsys, monkeypatch):
    src = img(tmp_path / "in" / "a.png", (32, 24))
    free(monkeypatch, 1)
    code, _, err = run(capsys, "derain", "--model", "input", src, "-o", tmp_path / "o1")
    assert code == 1 and "needs about" in err
    code, _, err = run(capsys, "derain", "--model", "input", src, "-o", tmp_path / "o1", "--no-memory-check")
    assert code == 0 and (tmp_path / "o1" / "a.png").is_file(), err
    free(monkeypatch, None)  # free memory unknown: no refusal, no error
    code, _, err = run(capsys, "derain", "--model", "input", src, "-o", tmp_path / "o2")
    assert code == 0 and (tmp_path / "o2" / "a.png").is_file(), err


def test_available_reads_the_system(monkeypatch):
    if Path("/proc/meminfo").exists():
        assert memory.available("cpu") > 0
    monkeypatch.setattr(memory, "_meminfo_available", lambda: None)
    monkeypatch.setattr(memory, "_cgroup_room", lambda: None)
    assert memory.available("cpu") is None
    monkeypatch.setattr(memory, "_cgroup_room", lambda: 5 * 2**20)
    assert memory.available("cpu") == 5 * 2**20


def test_exemplar_and_tiles_in_the_estimate():
    base = memory.need("msgnn", 64, 64)
    assert memory.need("msgnn", 64, 64, exemplar_hw=(512, 512)) > base  # a larger exemplar counts
    assert memory.need("msgnn", 64, 64, exemplar_hw=(32, 32)) == base
    assert memory.need("prenet", 64, 64, tile=512) == memory.need("prenet", 64, 64)  # one tile = whole
    assert memory.need("moss", 64, 64, scoring=True) > memory.need("moss", 64, 64)  # evaluate's metrics


LINUX = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
SLOW = [m for m in sorted(memory.COEFFS) if m != "prenet"]


@LINUX
@pytest.mark.parametrize("model", ["prenet"] + [pytest.param(m, marks=pytest.mark.slow) for m in SLOW])
def test_estimate_covers_a_real_inference(model):
    """Three images at a size between and off the measured ones, in a fresh process (~5 s each)."""
    h, w = 150, 200
    code = f"from benchmark.tools.memory import measure; print(measure({model!r}, {h}, {w}))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    measured = int(proc.stdout.split()[-1])
    est = memory.need(model, h, w)
    assert measured <= est, (model, measured, est)
    if model not in ("input", "scoring"):  # and not uselessly loose: within the margin of the line
        assert est <= 2 * memory.MARGIN * measured, (model, measured, est)


def test_memory_is_checked_from_the_header_before_decoding(tmp_path, capsys, monkeypatch):
    """A 100 MP header (issue 16's 1.5 KB PNG) with --max-pixels raised: refused for its memory,
    never decoded (decoding would fail on this fake file with another message)."""
    from tests.test_derain_cli import png_header

    for sub in ("input", "target"):
        (tmp_path / "pairs" / sub).mkdir(parents=True)
        png_header(tmp_path / "pairs" / sub / "1.png", 10000, 10000)
    free(monkeypatch, 2**30)
    no_load(monkeypatch)
    bomb = tmp_path / "pairs" / "input" / "1.png"
    code, _, err = run(capsys, "derain", "--model", "input", bomb, "-o", tmp_path / "o", "--max-pixels", 10**8)
    assert code == 1 and one_line(err) and f"{bomb}: 10000x10000 image needs about" in err, err
    code, _, err = run(capsys, "evaluate", "--model", "input", "--data", tmp_path / "pairs", "--max-pixels", 10**8)
    assert code == 1 and one_line(err) and f"{bomb}: 10000x10000 image needs about" in err, err
