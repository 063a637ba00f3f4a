"""``msgnn-bench perf``: parameters, work, speed and peak memory of every model on fixed cases.

Cases:
  train     one training step: batch 8, 64x64 crops (+ an exemplar crop each for MSGNN), forward,
            -SSIM on the last stage, backward, Adam step
  infer321  one 321x481 image (+ a 321x481 exemplar), eval mode, no autograd
  infer720  one 1280x720 image (+ a 1280x720 exemplar), eval mode, no autograd
Per model the table also gives the parameter count and the GFLOP of one 64x64 training sample
(forward + backward) and of one 321x481 image (forward). Those are counted on PyTorch's ``meta``
device (no arithmetic, so they cost nothing and do not depend on the cases run) by
``torch.utils.flop_counter``: matmuls and convolutions only, elementwise ops are not counted.
Times: the median over ``--repeats`` runs after one warm-up run, synchronised on CUDA. Efficiency:
the case's achieved GFLOP/s divided by that of a reference measured in the same process just
before it: a dense 3x3 convolution at the model's most common convolution width, on the case's
batch and image size (forward and backward for ``train``, forward for inference), timed the same
way. A busy machine slows both alike, so the ratio survives load that swings the times. Peak memory:
on GPU ``torch.cuda.max_memory_allocated`` growth over the case's inputs and model; on CPU the growth
of the process's peak resident set over its size before the case's first run (every (model, case)
runs in a fresh process whose high-water mark is reset through /proc/self/clear_refs).
GPU runs use true fp32 math (TF32 off) unless ``--tf32``; ``--amp bf16`` runs the forward passes
under bf16 autocast (no grad scaler is needed for bf16).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmark.core import contract
from benchmark.core.contract import stage_outputs
from benchmark.training.losses import neg_ssim
from benchmark.core.registry import build_model, list_models

CASES = {
    "train": "train step b8 64x64",
    "infer321": "infer 321x481",
    "infer720": "infer 1280x720",
}
SIZES = {"train": (64, 64), "infer321": (321, 481), "infer720": (720, 1280)}
REFERENCE_S = 1.0  # least total time of the reference convolution's timed calls


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


def _autocast(device: torch.device, amp: str):
    if amp == "off":
        return nullcontext()
    return torch.autocast(device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[amp])


def _pad(x: torch.Tensor, multiple: int) -> torch.Tensor:
    # the evaluator reflect-pads sizes a network cannot take (MOSS: x8, MSPFN: x4); measure that input
    from benchmark.evaluation.inference import pad_to_multiple
    return pad_to_multiple(x, multiple)[0]


def _make_case(name: str, case: str, device: torch.device, model_args: dict, seed: int = 0,
               amp: str = "off", model: torch.nn.Module | None = None) -> Callable[[], None]:
    torch.manual_seed(seed)
    model = (model or build_model(name, **model_args)).to(device)
    needs_ex = contract.needs_exemplar(model)
    h, w = SIZES[case]
    batch = 8 if case == "train" else 1

    def rand(n: int) -> torch.Tensor:  # filled on the host so that meta and real devices see one recipe
        t = torch.empty(n, 3, h, w, device=device)
        return t if device.type == "meta" else t.uniform_(0, 1, generator=None)

    x, ex = rand(batch), (rand(batch) if needs_ex else None)
    def call(inp):
        return contract.call(model, inp, ex)
    if case == "train":
        target = rand(batch)
        opt = torch.optim.Adam(model.parameters(), lr=5e-4) if device.type != "meta" else None
        model.train()

        def step() -> None:
            with _autocast(device, amp):
                out = stage_outputs(call(x))[-1]
            loss = neg_ssim(out.float(), target)
            if opt is not None:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            if opt is not None:
                opt.step()
        return step
    m = contract.pad_multiple(model)
    x = _pad(x, m)
    ex = _pad(ex, m) if ex is not None else None
    model.eval()

    def infer() -> None:
        with torch.no_grad(), _autocast(device, amp):
            call(x)
    return infer


def count_work(name: str, model_args: dict | None = None) -> dict:
    """Parameters and GFLOP (per 64x64 training sample, per 321x481 image), counted on ``meta``."""
    model_args = model_args or {}
    with torch.device("meta"):
        model = build_model(name, **model_args)
    out = {"params": sum(p.numel() for p in model.parameters())}
    for case, key, per in (("train", "gflop_train_sample", 8), ("infer321", "gflop_321x481", 1)):
        fn = _make_case(name, case, torch.device("meta"), model_args, model=model)
        with FlopCounterMode(display=False) as counter:
            fn()
        out[key] = counter.get_total_flops() / 1e9 / per
    return out


def measure(name: str, case: str, device: torch.device, repeats: int, model_args: dict | None = None,
            amp: str = "off", seed: int = 0) -> dict:
    """Median ms and peak memory (bytes) of one (model, case) in this process."""
    model_args = model_args or {}
    if device.type == "cpu":
        # the baseline is taken before building: the model, inputs and freed heap all count as growth
        if not _reset_peak_rss():
            raise RuntimeError("cannot reset the peak RSS (/proc/self/clear_refs)")
        base = _rss_kib("VmRSS") * 1024
    elif device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    fn = _make_case(name, case, device, model_args, seed, amp)
    gflop, median_ms, times = _timed(fn, device, repeats)
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device) - base, "max_memory_allocated"
    else:
        # the kernel's RSS counters are batched per thread (a few pages behind): a case that reuses
        # memory freed earlier in the process can read as -8 KiB; no growth is 0
        peak, kind = max(0, _rss_kib("VmHWM") * 1024 - base), "peak RSS growth"
    with torch.device("meta"):  # only the layer widths are read: no weights to allocate or initialise
        width = conv_width(build_model(name, **model_args))
    # the reference case is short (tens of ms on CPU), so it is timed for at least REFERENCE_S seconds:
    # a single short timing under load swung its rate 5x between processes (docs/operations.md)
    ref_gflop, ref_ms, ref_times = _timed(_reference_case(case, width, device, amp), device, repeats, REFERENCE_S)
    achieved, reference = gflop / (median_ms / 1e3), ref_gflop / (ref_ms / 1e3)
    return {"model": name, "case": case, "median_ms": median_ms, "times_ms": times,
            "peak_bytes": peak, "gflop": gflop, "memory": kind, "gflops": achieved,
            "reference": {"width": width, "ms": ref_ms, "gflops": reference, "total_ms": sum(ref_times)}, "efficiency": achieved / reference,
            "threads": torch.get_num_threads(), "device": device_name(device), "amp": amp, "model_args": model_args}


def _timed(fn: Callable[[], None], device: torch.device, repeats: int,
           min_s: float = 0.0) -> tuple[float, float, list[float]]:
    """(GFLOP of one call, median ms, all times): one counted warm-up call, then ``repeats`` timed ones,
    more while the timed calls add up to less than ``min_s`` seconds."""
    with FlopCounterMode(display=False) as counter:
        fn()  # warm-up: allocator pools, oneDNN/cuDNN kernel selection
    _sync(device)
    times = []
    while len(times) < repeats or sum(times) < min_s * 1e3:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return counter.get_total_flops() / 1e9, statistics.median(times), times


def conv_width(model: torch.nn.Module) -> int:
    """The most common output width of the model's 2-D convolutions (its typical feature width)."""
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels > 3]
    return statistics.mode(widths) if widths else 32


def _reference_case(case: str, width: int, device: torch.device, amp: str) -> Callable[[], None]:
    """A dense 3x3 convolution, ``width`` channels in and out, on the case's batch and image size."""
    h, w = SIZES[case]
    batch = 8 if case == "train" else 1
    conv = torch.nn.Conv2d(width, width, 3, padding=1).to(device)
    x = torch.rand(batch, width, h, w, device=device)
    if case == "train":
        def step() -> None:
            with _autocast(device, amp):
                out = conv(x)
            out.float().mean().backward()
        return step

    def infer() -> None:
        with torch.no_grad(), _autocast(device, amp):
            conv(x)
    return infer


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu} ({torch.get_num_threads()} threads)"


def _in_subprocess(name: str, case: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-c", "import sys; from benchmark.tools.perf import perf_main; sys.exit(perf_main(sys.argv[1:]))",
           "--models", name, "--device", args.device, "--repeats", str(args.repeats), "--cases", case, "--json",
           "--no-subprocess", "--no-count", "--model-args", json.dumps(args.model_args), "--threads",
           str(args.threads), "--amp", args.amp]
    cmd += ["--tf32"] if args.tf32 else []
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"perf {name} {case!r} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["cases"][0]


def table(result: dict) -> str:
    """Markdown: one row per model; a case that was not run shows '–'."""
    cases = [c for c in CASES if any(r["case"] == c for r in result["cases"])]
    head = ["model", "params", "GFLOP/sample 64² (f+b)", "GFLOP 321×481"]
    for c in cases:
        head += [f"{CASES[c]} ms", f"{CASES[c]} GFLOP/s", f"{CASES[c]} eff.", f"{CASES[c]} peak GiB"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name in result["models"]:
        w = result["work"].get(name, {})
        cells = [name, f"{w['params']:,}" if w else "–", f"{w['gflop_train_sample']:.2f}" if w else "–",
                 f"{w['gflop_321x481']:.1f}" if w else "–"]
        for c in cases:
            r = next((r for r in result["cases"] if r["model"] == name and r["case"] == c), None)
            cells += ([f"{r['median_ms']:.0f}", f"{r['gflops']:.1f}", f"{r['efficiency']:.0%}",
                       f"{r['peak_bytes'] / 2**30:.2f}"] if r else ["–"] * 4)
        lines.append("| " + " | ".join(cells) + " |")
    mem = result["cases"][0]["memory"] if result["cases"] else ""
    lines.append(f"\n{result['device']}, amp {result['amp']}, TF32 {'on' if result['tf32'] else 'off'}, "
                 f"median of {result['repeats']} after a warm-up; eff. = achieved GFLOP/s / a dense 3x3 "
                 f"convolution's at the model's width, measured just before in the same process; "
                 f"peak memory = {mem}")
    return "\n".join(lines)


def parse_models(spec: list[str]) -> list[str]:
    known = [m for m in list_models() if m != "input"]
    names = known if spec == ["all"] else [s.strip() for part in spec for s in part.split(",") if s.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; valid: all, {', '.join(known)}")
    return names


def perf_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="msgnn-bench perf", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["msgnn"], help="'all' or model names (default: msgnn)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per case, after one warm-up run")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}; "
                   "'none' for parameters and GFLOP only")
    p.add_argument("--model-args", type=json.loads, default={},
                   help='builder overrides as JSON, e.g. \'{"stride": 1}\' (applied to every model listed)')
    p.add_argument("--amp", choices=("off", "bf16", "fp16"), default="off", help="autocast dtype of the forward")
    p.add_argument("--tf32", action="store_true", help="allow TF32 on GPU (default: true fp32 math)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a markdown table")
    p.add_argument("--no-subprocess", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-count", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cases = [] if args.cases == "none" else [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {unknown}; valid: {', '.join(CASES)}")
    try:
        models = parse_models(args.models)
    except ValueError as exc:
        p.error(str(exc))
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    device = torch.device(args.device)
    result = {"device": device_name(device), "amp": args.amp, "tf32": args.tf32, "repeats": args.repeats,
              "torch": torch.__version__, "models": models, "work": {}, "cases": []}
    for name in models:
        if not args.no_count:
            result["work"][name] = count_work(name, args.model_args)
        for case in cases:
            # on CPU every case gets a fresh process, so that no case reuses heap memory freed by another
            if device.type == "cpu" and not args.no_subprocess:
                result["cases"].append(_in_subprocess(name, case, args))
            else:
                result["cases"].append(measure(name, case, device, args.repeats, args.model_args, args.amp))
            print(f"perf: {name} {case} done", file=sys.stderr, flush=True)
    print(json.dumps(result) if args.json else table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(perf_main())
