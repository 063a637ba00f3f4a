"""One run on two processes: real torchrun, gloo on CPU, equal to one process with the same global batch."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from benchmark.data import loading as data
from benchmark.training import distributed, engine
from benchmark.core.config import TrainCfg
from benchmark.core.registry import build_model


def test_rank_indices_split_every_micro_batch_disjointly():
    r0 = distributed.rank_indices(1, 3, 8, 2, 0, 2)
    r1 = distributed.rank_indices(1, 3, 8, 2, 1, 2)
    assert r0 == [8, 9, 12, 13, 16, 17, 20, 21] and r1 == [10, 11, 14, 15, 18, 19, 22, 23]
    assert sorted(r0 + r1) == list(range(8, 24))


def test_two_processes_end_equal_to_each_other_and_to_one_process(synth_root, tmp_path):
    worker = Path(__file__).parent / "helpers" / "ddp_worker.py"
    ranks = tmp_path / "ranks"
    ranks.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(worker), str(tmp_path / "ddp"), str(synth_root), str(ranks)]
    # own session: on a timeout the launcher *and* its worker processes are killed (no orphaned ranks)
    proc = subprocess.Popen(cmd, cwd=Path(__file__).parents[1], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            env={"PYTHONPATH": str(Path(__file__).parents[1]), "PATH": "/usr/bin:/bin",
                                 "OMP_NUM_THREADS": "1"})
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError("torchrun with 2 gloo processes did not finish within 300 s") from None
    assert proc.returncode == 0, err[-3000:]
    w0, w1 = (torch.load(ranks / f"rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # DDP keeps the replicas identical
    assert (tmp_path / "ddp" / "last.pt").exists()  # written by rank 0
    torch.manual_seed(0)
    single = build_model("prenet", stages=2)
    cfg = TrainCfg(iters=3, patch=24, batch=4, lr=1e-3, ckpt_every=3, log_every=3, milestones=(0.5,), seed=3, loss="l1")
    engine.fit(single, data.TrainPatches(synth_root, 24, seed=3), cfg, tmp_path / "one", progress=False)
    ref = single.state_dict()
    worst = max((ref[k] - w0[k]).abs().max().item() for k in ref)
    assert worst < 1e-5, worst
