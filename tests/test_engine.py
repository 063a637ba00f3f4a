"""The shared engine: schedules, resumption to identical weights, evaluation, padding."""
from __future__ import annotations

import dataclasses
import os
import shutil

import pytest
import torch

from benchmark.core import deps, io
from benchmark.data import loading as data
from benchmark.evaluation import inference
from benchmark.training import engine
from benchmark.core.config import EvalCfg, TrainCfg
from benchmark.core.registry import build_model

CFG = TrainCfg(iters=6, patch=24, batch=2, lr=1e-3, ckpt_every=2, log_every=1, milestones=(0.5,), seed=3)


def _model():
    torch.manual_seed(0)
    return build_model("prenet", stages=2)


def test_multistep_schedule_matches_paper_fractions():
    cfg = TrainCfg(iters=500)
    f = [engine.lr_factor(s, 500, cfg) for s in (0, 299, 300, 399, 400, 499)]
    assert f == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_exp_schedule_and_epochs():
    cfg = TrainCfg(iters=10, schedule="exp", decay=0.5, decay_every=10, lr=1.0, min_lr=0.25)
    assert engine.lr_factor(10, 10, cfg) == pytest.approx(0.75)
    assert engine.total_iters(TrainCfg(epochs=2, batch=8), n_train=20) == 6  # 2 × ceil(20/8)


def test_data_stream_is_a_function_of_the_index(synth_root):
    a = data.TrainPatches(synth_root, 24, seed=5, length=40)
    b = data.TrainPatches(synth_root, 24, seed=5, length=40)
    for i in (0, 13, 39, 7):  # any access order gives the same sample
        assert torch.equal(a[i]["input"], b[i]["input"])
    first_epoch = {a._image_index(i) for i in range(len(a.pairs))}
    assert first_epoch == set(range(len(a.pairs)))  # each image once per epoch


def test_resume_ends_in_the_same_weights(synth_root, tmp_path):
    straight = _model()
    engine.fit(straight, data.TrainPatches(synth_root, 24, seed=3), CFG, tmp_path / "a", progress=False)

    interrupted = _model()
    res = engine.fit(interrupted, data.TrainPatches(synth_root, 24, seed=3), CFG, tmp_path / "b",
                     progress=False, stop_after=4)
    assert not res["finished"]
    resumed = _model()  # a fresh process: different object, weights come only from last.pt
    torch.manual_seed(1234)  # global RNG state must come from the checkpoint too
    res = engine.fit(resumed, data.TrainPatches(synth_root, 24, seed=3), CFG, tmp_path / "b", progress=False)
    assert res["finished"] and res["step"] == 6
    for (k, v), w in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(v, w), k
    log_a = (tmp_path / "a" / "train_log.csv").read_text().splitlines()
    log_b = (tmp_path / "b" / "train_log.csv").read_text().splitlines()
    assert [r.split(",")[:2] for r in log_a] == [r.split(",")[:2] for r in log_b]


def test_changed_settings_do_not_resume(synth_root, tmp_path, capsys):
    engine.fit(_model(), data.TrainPatches(synth_root, 24, seed=3), CFG, tmp_path, progress=False, stop_after=2)
    other = dataclasses.replace(CFG, lr=5e-4)
    res = engine.fit(_model(), data.TrainPatches(synth_root, 24, seed=3), other, tmp_path, progress=False)
    assert res["step"] == 6
    assert "written with other training settings; starting from scratch" in capsys.readouterr().err


def _interrupted(root, out, run_id=None):
    res = engine.fit(_model(), data.TrainPatches(root, 24, seed=3), CFG, out, progress=False, stop_after=2,
                     run_id=run_id)
    assert not res["finished"]


def _restarted(capsys) -> str:
    err = capsys.readouterr().err
    assert "resuming" not in err
    return err


def test_a_changed_switch_does_not_resume(synth_root, tmp_path, capsys):
    # a switch that leaves the parameter shapes alone (MSGNN's k, stride, window...) must not
    # continue the weights of the other setting (fit compares the caller's run_id as given)
    _interrupted(synth_root, tmp_path, run_id={"model": "msgnn", "args": {"k": 5}})
    engine.fit(_model(), data.TrainPatches(synth_root, 24, seed=3), CFG, tmp_path, progress=False,
               run_id={"model": "msgnn", "args": {"k": 7}})
    assert "other model or builder arguments" in _restarted(capsys)


def test_changed_training_files_do_not_resume(synth_root, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    _interrupted(root, tmp_path / "run")
    first = sorted((root / "train" / "input").iterdir())[0]
    first.write_bytes(first.read_bytes())  # rewritten in place: same content, new file
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))
    engine.fit(_model(), data.TrainPatches(root, 24, seed=3), CFG, tmp_path / "run", progress=False)
    assert "other training files" in _restarted(capsys)


def test_changed_training_code_does_not_resume(synth_root, tmp_path, capsys, monkeypatch):
    _interrupted(synth_root, tmp_path)
    digest = deps.digest
    monkeypatch.setattr(deps, "digest", lambda paths: "0" * len(digest(paths)))  # as after editing the engine
    engine.fit(_model(), data.TrainPatches(synth_root, 24, seed=3), CFG, tmp_path, progress=False)
    assert "other training code" in _restarted(capsys)


def test_training_code_digest_covers_the_model_and_not_the_report():
    # the digest reads files by path, so it is the same in every process
    files = deps.training_code("prenet")
    assert {"baselines/prenet.py", "benchmark/training/engine.py", "pipelines/train.py"} <= set(files)
    assert not any(f.startswith(("benchmark/reporting/", "benchmark/tools/", "msgnn/")) for f in files)
    assert {"msgnn/model.py", "msgnn/knn.py"} <= set(deps.training_code("msgnn"))
    assert deps.digest(files) == deps.digest(list(reversed(files)))


def test_resumed_log_is_whole_without_the_csv(synth_root, tmp_path):
    # DVC deletes a stage's outputs (train_log.csv) before rerunning it; last.pt carries the rows
    _interrupted(synth_root, tmp_path)
    (tmp_path / "train_log.csv").unlink()
    res = engine.fit(_model(), data.TrainPatches(synth_root, 24, seed=3), CFG, tmp_path, progress=False)
    assert res["finished"] and res["final_loss"] is not None
    steps = [line.split(",")[0] for line in (tmp_path / "train_log.csv").read_text().splitlines()[1:]]
    assert steps == [str(i) for i in range(1, 7)]


def test_training_reduces_the_loss(synth_root, tmp_path):
    cfg = dataclasses.replace(CFG, iters=30, lr=2e-3, milestones=(), log_every=5)
    engine.fit(_model(), data.TrainPatches(synth_root, 24, seed=3), cfg, tmp_path, progress=False)
    rows = (tmp_path / "train_log.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[1]) for r in rows]
    assert losses[-1] < losses[0]


def test_non_finite_loss_is_a_clear_error(synth_root, tmp_path):
    model = _model()
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="loss became nan at step 1"):
        engine.fit(model, data.TrainPatches(synth_root, 24, seed=3), CFG, tmp_path, progress=False)


class _Needs8(torch.nn.Module):
    pad_multiple = 8

    def forward(self, x):
        assert x.shape[-1] % 8 == 0 and x.shape[-2] % 8 == 0
        return x


def test_evaluate_pads_crops_and_quantises(synth_root, tmp_path):
    ds = data.EvalImages(synth_root, "test")
    res = inference.evaluate(_Needs8(), ds, EvalCfg(save_images=1), save_dir=tmp_path, progress=False)
    assert res["n_images"] == 3
    # identity model: rainy input vs target, same as the `input` row
    ident = inference.evaluate(build_model("input"), ds, EvalCfg(save_images=0), progress=False)
    assert res["mean"]["psnr_y"] == pytest.approx(ident["mean"]["psnr_y"])
    saved = sorted(tmp_path.glob("*.png"))
    assert len(saved) == 1
    assert data.load_image(saved[0]).shape == (40, 56, 3)


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    target = tmp_path / "x.pt"
    io.save_torch(target, {"a": 1})

    def boom(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        io.save_torch(target, {"a": 2})
    assert io.load_torch(target) == {"a": 1}  # the old file survives intact
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]  # no temp file left behind
