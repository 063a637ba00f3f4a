"""Run by tests/test_ddp.py under real torchrun: one short training, then this rank's weights saved."""
import sys

import torch

from benchmark.data import loading as data
from benchmark.training import distributed, engine
from benchmark.core.config import TrainCfg
from benchmark.core.registry import build_model

out, root, ranks_dir = sys.argv[1], sys.argv[2], sys.argv[3]
torch.set_num_threads(1)
device = distributed.setup("cpu")
torch.manual_seed(0)
model = build_model("prenet", stages=2)
cfg = TrainCfg(iters=3, patch=24, batch=4, lr=1e-3, ckpt_every=3, log_every=3, milestones=(0.5,), seed=3, loss="l1")
engine.fit(model, data.TrainPatches(root, 24, seed=3), cfg, out, device=device, progress=False)
torch.save(model.state_dict(), f"{ranks_dir}/rank{distributed.world()[0]}.pt")
