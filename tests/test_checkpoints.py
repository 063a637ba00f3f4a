"""Checkpoints: weights-only loading, broken last.pt, disk faults, non-finite loss, clipping, the lock."""
from __future__ import annotations

import dataclasses
import errno
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from benchmark.core import checkpoints, io, registry
from benchmark.data import loading as data
from benchmark.training import engine
from benchmark.core.config import TrainCfg
from benchmark.core.registry import build_model

REPO = Path(__file__).resolve().parents[1]
CFG = TrainCfg(iters=6, patch=24, batch=2, lr=1e-3, ckpt_every=2, log_every=1, milestones=(0.5,), seed=3)


def _model():
    torch.manual_seed(0)
    return build_model("prenet", stages=2)


def _ds(root):
    return data.TrainPatches(root, 24, seed=3)


class _RunsCode:
    """Unpickling this calls os.system, which would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["torch", "pickle"])
def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, how):
    marker, evil = tmp_path / "pwned", tmp_path / "evil.pt"
    payload = {"format": io.CKPT_FORMAT, "state_dict": _RunsCode(marker)}
    if how == "torch":
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(payload))
    for load in (io.load_torch, checkpoints.load_model, lambda p: registry.load_official("prenet", p),
                 lambda p: registry.load_official("spanet", p)):
        with pytest.raises(ValueError) as exc:
            load(evil)
        msg = str(exc.value)
        assert str(evil) in msg and "\n" not in msg and "refused" in msg
    assert not marker.exists()


def test_cli_refuses_a_malicious_checkpoint(tmp_path, synth_root, capsys):
    from benchmark.tools import cli

    marker, evil = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"x": _RunsCode(marker)}, evil)
    code = cli.main(["evaluate", "--model", "prenet", "--checkpoint", str(evil), "--data", str(synth_root / "test")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and str(evil) in err and len(err.splitlines()) == 1 and "import posix.system" in err
    assert not marker.exists()


def test_another_model_or_shape_names_both(tmp_path):
    path = tmp_path / "model.pt"
    checkpoints.save_model(path, "prenet", {"stages": 2}, _model())
    with pytest.raises(checkpoints.CheckpointError, match=r"holds model 'prenet', not 'rescan'"):
        checkpoints.load_model(path, expect="rescan")
    ck = io.load_torch(path)
    key = next(iter(ck["state_dict"]))
    ck["state_dict"][key] = torch.zeros(7, 3)
    io.save_torch(path, ck)
    with pytest.raises(checkpoints.CheckpointError) as exc:
        checkpoints.load_model(path)
    msg = str(exc.value)
    assert str(path) in msg and key in msg and "(7, 3)" in msg and "prenet" in msg and "\n" not in msg
    ck["state_dict"] = build_model("rescan").state_dict()  # a whole other network's weights
    io.save_torch(path, ck)
    with pytest.raises(checkpoints.CheckpointError, match="missing"):
        checkpoints.load_model(path)


def test_state_files_hold_only_plain_types(synth_root, tmp_path):
    engine.fit(_model(), _ds(synth_root), dataclasses.replace(CFG, iters=2), tmp_path, progress=False)
    ck = torch.load(tmp_path / "last.pt", weights_only=True)  # raises if anything needs pickled classes
    assert ck["step"] == 2 and isinstance(ck["rng"]["python"]["mt"], torch.Tensor)


def _straight(root, out):
    m = _model()
    engine.fit(m, _ds(root), CFG, out, progress=False)
    return m.state_dict()


def test_truncated_last_pt_falls_back_to_the_kept_state(synth_root, tmp_path, capsys):
    want = _straight(synth_root, tmp_path / "a")
    run = tmp_path / "b"
    engine.fit(_model(), _ds(synth_root), CFG, run, progress=False, stop_after=4)
    assert io.load_torch(run / "last.prev.pt")["step"] == 2 and io.load_torch(run / "last.pt")["step"] == 4
    blob = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(blob[: len(blob) // 2])  # as after a crash of the disk, not of us
    m = _model()
    res = engine.fit(m, _ds(synth_root), CFG, run, progress=False)
    err = capsys.readouterr().err
    assert res["finished"] and "last.pt: not a readable checkpoint" in err
    assert "resuming from the previous good state" in err and "at step 2/6" in err
    for k, v in want.items():  # still the uninterrupted run's weights, bit for bit
        assert torch.equal(v, m.state_dict()[k]), k


def test_both_states_broken_starts_over_with_a_warning(synth_root, tmp_path, capsys):
    engine.fit(_model(), _ds(synth_root), CFG, tmp_path, progress=False, stop_after=4)
    for name in ("last.pt", "last.prev.pt"):
        (tmp_path / name).write_bytes(b"garbage")
    res = engine.fit(_model(), _ds(synth_root), CFG, tmp_path, progress=False)
    err = capsys.readouterr().err
    assert res["finished"] and res["step"] == 6 and err.count("warning:") == 2 and "resuming" not in err


def test_disk_full_during_a_checkpoint_keeps_the_old_one(synth_root, tmp_path, monkeypatch):
    engine.fit(_model(), _ds(synth_root), CFG, tmp_path, progress=False, stop_after=2)
    before = (tmp_path / "last.pt").read_bytes()

    def full(obj, f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(checkpoints.CheckpointError) as exc:
        engine.fit(_model(), _ds(synth_root), CFG, tmp_path, progress=False)
    assert "No space left on device" in str(exc.value) and "previous one is kept" in str(exc.value)
    assert (tmp_path / "last.pt").read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "train.lock").exists()


def test_too_little_free_space_is_refused_before_training(synth_root, tmp_path, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda p: real(p)._replace(free=100_000))
    with pytest.raises(checkpoints.CheckpointError, match="not enough free disk space"):
        engine.fit(_model(), _ds(synth_root), CFG, tmp_path, progress=False)
    assert not (tmp_path / "last.pt").exists() and not (tmp_path / "train_log.csv").exists()
    m = _model()  # the estimate: weights + two Adam moments per trainable parameter
    n = sum(p.numel() for p in m.parameters())
    assert checkpoints.state_bytes(m) == 3 * 4 * n


class _GoesNan(torch.nn.Module):
    """A tiny network whose output becomes NaN from its ``bad``-th training forward on."""

    def __init__(self, bad: int):
        super().__init__()
        self.conv, self.calls, self.bad = torch.nn.Conv2d(3, 3, 3, padding=1), 0, bad

    def forward(self, x):
        self.calls += 1
        y = x + self.conv(x)
        return y * float("nan") if self.calls >= self.bad else y


def test_non_finite_loss_names_the_step_and_keeps_the_last_good_checkpoint(synth_root, tmp_path):
    torch.manual_seed(0)
    cfg = dataclasses.replace(CFG, loss="l1", log_every=2)
    with pytest.raises(FloatingPointError) as exc:
        engine.fit(_GoesNan(bad=4), _ds(synth_root), cfg, tmp_path, progress=False)
    msg = str(exc.value)
    assert "loss became nan at step 4 (log window of steps 3-4)" in msg
    assert f"{tmp_path / 'last.pt'} (step 2) is kept" in msg
    assert io.load_torch(tmp_path / "last.pt")["step"] == 2
    assert not (tmp_path / "train.lock").exists()


def test_grad_clip_bounds_the_gradient_norm(synth_root, tmp_path, monkeypatch):
    seen, real = [], torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        params = list(params)
        before = real(params, max_norm, *a, **k)
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
        seen.append((float(before), float(after)))
        return before

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    engine.fit(_model(), _ds(synth_root), dataclasses.replace(CFG, iters=3, grad_clip=1e-3), tmp_path,
               progress=False)
    assert len(seen) == 3 and all(b > 1e-3 and a <= 1e-3 * 1.001 for b, a in seen)


_HOLDER = textwrap.dedent("""
    import sys, torch
    from benchmark.data import loading as data
    from benchmark.training import engine
    from benchmark.core.config import TrainCfg
    from benchmark.core.registry import build_model
    torch.manual_seed(0)
    engine.fit(build_model("prenet", stages=2), data.TrainPatches(sys.argv[1], 24, seed=3),
               TrainCfg(iters=10**6, patch=24, batch=2, ckpt_every=1, log_every=1), sys.argv[2], progress=False)
""")


def test_a_second_training_of_the_same_folder_refuses(synth_root, tmp_path, capsys):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-c", _HOLDER, str(synth_root), str(run)], cwd=REPO, env=env)
    try:
        deadline = time.time() + 60
        while not (run / "last.pt").exists() and time.time() < deadline:  # it holds the lock and trains
            assert first.poll() is None, "the first training died"
            time.sleep(0.1)
        with pytest.raises(checkpoints.CheckpointError) as exc:
            engine.fit(_model(), _ds(synth_root), CFG, run, progress=False)
        assert f"already being trained by process {first.pid}" in str(exc.value)
        assert (run / "train.lock").read_text().split()[0] == str(first.pid)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    io.load_torch(run / "last.pt")  # the refused run touched nothing: the holder's state is whole
    # the holder is gone (SIGKILL leaves its lock behind): the next training takes the stale lock over
    res = engine.fit(_model(), _ds(synth_root), CFG, run, progress=False)
    assert res["finished"] and f"taking over the lock of process {first.pid}" in capsys.readouterr().err
    assert not (run / "train.lock").exists()
