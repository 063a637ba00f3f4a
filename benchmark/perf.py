"""``msgnn-bench perf``: speed and peak memory of MSGNN (Wang et al., IJCAI 2024) on three fixed cases.

Cases (the issue's anchors, measured for the official code on an H100 and a 2-core CPU):
  train     one training step: batch 8, 64x64 crops, an exemplar crop each, forward, -SSIM, backward, Adam
  infer321  one 321x481 image (plus a 321x481 exemplar), eval mode, no autograd
  infer720  one 1280x720 image (plus a 1280x720 exemplar), eval mode, no autograd
Reported: the median wall time over ``--repeats`` runs after one warm-up run, and the peak memory of
the case: on GPU ``torch.cuda.max_memory_allocated`` (reset before the case), on CPU the growth of
the process's peak resident set over its size before the case's first run (each case runs in a
fresh process whose high-water mark is reset through /proc/self/clear_refs).
The work of a case is counted once, during its warm-up run, by ``torch.utils.flop_counter`` (matmuls
and convolutions, forward and backward; elementwise ops are not counted), so that the table also
gives the attained GFLOP/s, which compares across machines where wall times do not.
GPU runs use true fp32 math (TF32 off) unless ``--tf32`` is given. Every case runs the model exactly
as training and evaluation run it (same allocator settings, same layouts).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmark import contract
from benchmark.losses import neg_ssim
from benchmark.registry import build_model

CASES = {
    "train": "train step b8 64x64 N=4 exemplar on",
    "infer321": "infer 321x481",
    "infer720": "infer 1280x720",
}


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM (peak RSS) to the current RSS
        return True
    except OSError:
        return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _make_case(case: str, device: torch.device, model_args: dict, seed: int) -> Callable[[], None]:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = build_model("msgnn", **model_args).to(device)
    if case == "train":
        x, target, ex = (torch.rand(8, 3, 64, 64, generator=g).to(device) for _ in range(3))
        opt = torch.optim.Adam(model.parameters(), lr=5e-4)
        model.train()

        def step() -> None:
            loss = neg_ssim(contract.call(model, x, ex), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step
    h, w = (321, 481) if case == "infer321" else (720, 1280)
    x, ex = torch.rand(1, 3, h, w, generator=g).to(device), torch.rand(1, 3, h, w, generator=g).to(device)
    model.eval()

    def infer() -> None:
        with torch.no_grad():
            contract.call(model, x, ex)
    return infer


def measure(case: str, device: torch.device, repeats: int, model_args: dict, seed: int = 0) -> dict:
    """Median ms and peak memory (bytes) of one case in this process."""
    fn = _make_case(case, device, model_args, seed)
    if device.type == "cpu":
        # the baseline is taken before the warm-up run: freed memory may stay in the heap afterwards
        if not _reset_peak_rss():
            raise RuntimeError("cannot reset the peak RSS (/proc/self/clear_refs)")
        base = _rss_kib("VmRSS") * 1024
    with FlopCounterMode(display=False) as counter:
        fn()  # warm-up: allocator pools, oneDNN/cuDNN kernel selection
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device) - base, "max_memory_allocated"
    else:
        peak, kind = _rss_kib("VmHWM") * 1024 - base, "peak RSS growth"
    return {"case": case, "median_ms": statistics.median(times), "times_ms": times, "peak_bytes": peak,
            "gflop": counter.get_total_flops() / 1e9, "memory": kind, "device": _device_name(device),
            "model_args": model_args}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def _in_subprocess(case: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-c", "import sys; from benchmark.perf import perf_main; sys.exit(perf_main(sys.argv[1:]))",
           "--device", args.device, "--repeats", str(args.repeats), "--cases", case, "--json", "--no-subprocess",
           "--model-args", json.dumps(args.model_args), "--threads", str(args.threads)]
    cmd += ["--tf32"] if args.tf32 else []
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"perf case {case!r} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])[0]


def table(rows: list[dict]) -> str:
    lines = ["| device | case | median ms | peak memory | GFLOP | GFLOP/s |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        mem = f"{r['peak_bytes'] / 2**30:.2f} GiB ({r['memory']})"
        label = CASES[r["case"]] + (f" {json.dumps(r['model_args'])}" if r.get("model_args") else "")
        rate = r["gflop"] / (r["median_ms"] / 1e3)
        lines.append(f"| {r['device']} | {label} | {r['median_ms']:.0f} | {mem} | {r['gflop']:.1f} | {rate:.0f} |")
    return "\n".join(lines)


def perf_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="msgnn-bench perf", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per case, after one warm-up run")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    p.add_argument("--model-args", type=json.loads, default={},
                   help='builder overrides as JSON, e.g. \'{"stride": 1}\'')
    p.add_argument("--tf32", action="store_true", help="allow TF32 on GPU (default: true fp32 math)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a markdown table")
    p.add_argument("--no-subprocess", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {unknown}; valid: {', '.join(CASES)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    device = torch.device(args.device)
    rows = []
    for case in cases:
        # on CPU every case gets a fresh process, so that no case reuses heap memory freed by another
        if device.type == "cpu" and not args.no_subprocess:
            rows.append(_in_subprocess(case, args))
        else:
            rows.append(measure(case, device, args.repeats, args.model_args))
    print(json.dumps(rows) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(perf_main())
