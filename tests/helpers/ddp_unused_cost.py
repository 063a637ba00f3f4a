"""Cost of DDP ``find_unused_parameters=True`` (what benchmark/training/engine.py does) against
excluding the never-run (``official_unused``) parameters from DDP's bookkeeping instead (found by one
probe backward, passed to ``DDP._set_params_and_buffers_to_ignore_for_model``). Not a test: a
measurement script (docs/operations.md "Scaling out"), gloo on CPU, batch 1 of 32x32 per rank.

    torchrun --standalone --nproc_per_node 2 tests/helpers/ddp_unused_cost.py MODEL STEPS
"""
import sys, time, os
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from benchmark.core.registry import build_model
from benchmark.core import contract
dist.init_process_group("gloo")
rank = dist.get_rank()
name, steps = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(1)

def batch(model):
    torch.manual_seed(rank)
    x = torch.rand(1, 3, 32, 32)
    ex = torch.rand(1, 3, 32, 32) if contract.needs_exemplar(model) else None
    return x, ex

def run(mode):
    torch.manual_seed(0)
    m = build_model(name)
    x, ex = batch(m)
    if mode == "ignore":  # one probe backward finds the parameters that get no gradient
        out = contract.call(m, x, ex)
        (out[-1] if isinstance(out, (list, tuple)) else out).float().mean().backward()
        unused = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
        m.zero_grad(set_to_none=True)
        DDP._set_params_and_buffers_to_ignore_for_model(m, unused)
        net = DDP(m, find_unused_parameters=False)
    else:
        unused = []
        net = DDP(m, find_unused_parameters=True)
    opt = torch.optim.Adam(m.parameters(), 1e-4)
    times = []
    for s in range(steps):
        dist.barrier(); t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = contract.call(net, x, ex)
        (out[-1] if isinstance(out, (list, tuple)) else out).float().mean().backward()
        opt.step()
        times.append(time.perf_counter() - t)
    w = torch.cat([p.detach().flatten() for p in m.parameters()])
    return sorted(times[1:])[len(times[1:]) // 2], len(unused), w

# both orders, twice: the shared machine's load drifts between runs
order = ["find", "ignore", "ignore", "find"]
res = {"find": [], "ignore": []}
for mode in order:
    t, n, w = run(mode)
    res[mode].append(t)
    if mode == "ignore":
        n_unused, w_ign = n, w
    else:
        w_find = w
t_find, t_ign = min(res["find"]), min(res["ignore"])
if rank == 0:
    n = sum(1 for _ in build_model(name).parameters())
    print(f"{name}: median step find_unused=True {t_find*1e3:.1f} ms, ignore-never-run {t_ign*1e3:.1f} ms "
          f"({(t_find/t_ign-1)*100:+.1f}%); {n_unused}/{n} parameter tensors never run; "
          f"weights equal: {torch.equal(w_find, w_ign)}")
dist.destroy_process_group()
