"""Issue 26, the disk: a full file system during every write the stages make (a real, size-limited
tmpfs mounted for the test), and the temporary files a killed writer leaves in a run folder. Each
case is one line naming the file, and leaves no half-written or orphan file behind."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from benchmark.core import checkpoints, io
from benchmark.core.registry import build_model

from .conftest import tiny_ci


@pytest.fixture
def small_fs():
    """``small_fs(folder, size)``: mount a tmpfs of ``size`` (e.g. "256k") on ``folder``; unmounted after
    the test. Skipped, with the reason, where mounting is not allowed (CI runs as root)."""
    mounted: list[Path] = []

    def mount(folder: Path, size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("a size-limited file system needs `mount -t tmpfs`, which needs root (CI runs as root)")
        folder.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path, leave: int = 0) -> None:
    """Fill ``folder``'s file system until at most ``leave`` bytes are free."""
    with open(folder / "filler", "wb") as f:
        while shutil.disk_usage(folder).free > leave:
            try:
                f.write(b"\0" * max(4096, min(2**20, shutil.disk_usage(folder).free - leave)))
                f.flush()
            except OSError:
                break


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.endswith(".partial")]


def _one_line(err: str) -> str:
    # a stage's progress bar shares stderr (tqdm reads TQDM_DISABLE only when imported): its lines are not errors
    lines = [ln for ln in err.strip().replace("\r", "\n").splitlines() if ln.strip() and "it/s]" not in ln]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --- checkpoints: last.pt and model.pt ------------------------------------------------------------

def test_full_disk_during_checkpoint_keeps_the_previous_one(tmp_path, small_fs):
    run = small_fs(tmp_path / "run", "1m")
    small = {"model": {"w": torch.ones(10)}, "step": 1}
    checkpoints.save_state(run, small)
    _fill(run, leave=64 * 1024)
    with pytest.raises(checkpoints.CheckpointError) as e:  # torch.save raised a 30-line RuntimeError here
        checkpoints.save_state(run, {"model": {"w": torch.zeros(2**18)}, "step": 2})
    msg = str(e.value)
    assert "\n" not in msg and str(run / "last.pt") in msg and "No space left on device" in msg
    assert io.load_torch(run / "last.pt")["step"] == 1 and not _temps(run)


def test_full_disk_writing_model_pt_names_it(tmp_path, small_fs):
    out = small_fs(tmp_path / "run", "256k")
    _fill(out, leave=16 * 1024)
    model = build_model("prenet", stages=2)
    with pytest.raises(io.WriteError) as e:
        checkpoints.save_model(out / "model.pt", "prenet", {"stages": 2}, model)
    assert str(e.value).startswith(f"{out / 'model.pt'}: could not write (No space left on device)")
    assert not (out / "model.pt").exists() and not _temps(out)


# --- the stages: prepare, evaluate; derain ---------------------------------------------------------

def _repo(tmp_path: Path, repo_params: dict, monkeypatch) -> dict:
    params = tiny_ci(repo_params, tmp_path / "mlflow.db", "disk", n_test=2, ckpt_every=2)
    params["tracking"]["enabled"] = False
    params["models"]["prenet"]["args"] = {"stages": 2}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    return params


def test_full_disk_during_prepare_one_line_nothing_half_generated(tmp_path, repo_params, small_fs, monkeypatch,
                                                                   capsys):
    from pipelines import prepare

    _repo(tmp_path, repo_params, monkeypatch)
    data = small_fs(tmp_path / "data", "64k")
    assert prepare.main(["--dataset", "rain-synth"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("prepare rain-synth: error: data/rain-synth.partial/") and ".png: could not write (No " \
        "space left on device)" in line, line
    assert not (data / "rain-synth").exists() and not _temps(data)


def test_full_disk_during_evaluate_one_line_no_partial_output(tmp_path, repo_params, small_fs, monkeypatch, capsys):
    from pipelines import evaluate, prepare, train

    params = _repo(tmp_path, repo_params, monkeypatch)
    prepare.prepare("rain-synth", params)
    train.train("prenet", "rain-synth", params=params, progress=False)
    capsys.readouterr()
    out = small_fs(tmp_path / "runs" / "eval", "128k")
    _fill(out, leave=8 * 1024)
    assert evaluate.main(["--model", "prenet", "--dataset", "rain-synth", "--device", "cpu"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("evaluate prenet-rain-synth: error: runs/eval/prenet-rain-synth/") and \
        "could not write (No space left on device)" in line, line
    assert not _temps(out) and not (out / "prenet-rain-synth" / "metrics.json").exists()


def test_full_disk_during_derain_names_the_output(tmp_path, two_pairs, small_fs, capsys):
    from benchmark.tools import cli

    dest = small_fs(tmp_path / "out", "64k")
    _fill(dest, leave=4 * 1024)
    assert cli.main(["derain", "--model", "input", str(two_pairs), "-o", str(dest)]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line == (f"msgnn-bench derain: error: {dest}/1.png: could not write (No space left on device); "
                    "nothing was written")
    assert not list(dest.glob("*.png")) and not _temps(dest)


# --- orphan temporary files of a killed writer ------------------------------------------------------

def test_orphan_temps_removed_when_the_run_folder_is_locked(synth_root, tmp_path, capsys):
    from benchmark.core.config import TrainCfg
    from benchmark.data import loading as data
    from benchmark.training import engine

    run = tmp_path / "run"
    run.mkdir()
    orphans = [run / ".last.pt.k3x_9abq.tmp", run / ".train_log.csv.0abcdefg.tmp"]
    for p in orphans:
        p.write_bytes(b"half a file")
    keep = [run / "notes.tmp", run / ".hidden", run / ".last.pt.short.tmp"]  # not the atomic writer's names
    for p in keep:
        p.write_text("mine")
    engine.fit(build_model("prenet", stages=2), data.TrainPatches(synth_root, 24, seed=3),
               TrainCfg(iters=2, patch=24, batch=2, ckpt_every=1, log_every=1), run, progress=False)
    assert not any(p.exists() for p in orphans) and all(p.exists() for p in keep)
    err = capsys.readouterr().err
    assert all(f"removed {p}, left by an interrupted write" in err for p in orphans)


def test_free_space_check_counts_orphan_temps(tmp_path, small_fs):
    # a folder whose space is taken by a killed writer's temporary file: that space will be freed
    # (the lock's owner removes it), so it counts as available for the checkpoints
    model = build_model("prenet", stages=2)
    run = small_fs(tmp_path / "run", "16m")
    need = int(1.2 * (3 * checkpoints.state_bytes(model) + checkpoints.state_bytes(model, 0)))
    assert need < 12 * 2**20
    orphan = run / ".last.pt.abcd1234.tmp"
    with open(orphan, "wb") as f:
        while shutil.disk_usage(run).free > need // 2:
            f.write(b"\0" * 65536)
    (run / "other").write_bytes(b"")
    checkpoints.check_free_space(run, model)  # enough once the orphan is gone
    orphan.rename(run / "not-an-orphan")
    with pytest.raises(checkpoints.CheckpointError, match="not enough free disk space"):
        checkpoints.check_free_space(run, model)
