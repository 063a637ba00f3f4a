"""Inference memory: a conservative estimate per model, the memory available, and the guard.

``derain`` and ``evaluate`` compare, for every input before any work, ``need(model, h, w)`` with
``available(device)`` and refuse the first image that would not fit (one line naming it), instead of
being killed by the kernel halfway through.

The estimate is ``MARGIN x (fixed + per_pixel x pixels)``, fp32, batch 1, no autograd. ``fixed`` and
``per_pixel`` are *measured*, not derived from the layers (meta-device and profiler estimates were
off by up to 2x): ``python -m benchmark.tools.memory`` runs one fresh process per model and size that
builds the model, copies its weights once more (as loading a checkpoint does), then derains three
random uint8 images one after the other as ``derain`` does (an exemplar as large for MSGNN); the
cost is the growth of the peak resident set (VmHWM, reset through /proc/self/clear_refs) over the
process before the model was built. Three images, because the heap fragments: the peak rose by up
to ~20 % after the first, then stayed (PReNet 321x481: 0.37 -> 0.44 GiB over 8 images); the thread
count did not change it (1 and 2 threads: 0.350 GiB). The line through the two sizes gives the
coefficients.

Plugin models (and any model without a measured line) get a generic estimate instead: the model is
built on PyTorch's ``meta`` device and one forward pass at each of the two sizes counts the bytes of the
tensors alive at once (every op's non-aliasing output, freed when Python drops it), which costs no
arithmetic and no memory. That live-tensor peak under-counts what the process really takes (allocator
slack, convolution workspaces): over the nine built-ins measured RSS / probe per pixel was 0.92-2.13
(2026-12-06, the machine above), so the probe's line is scaled by ``PROBE_SCALE`` and its fixed part
raised by the largest measured fixed cost. A model the meta device cannot run (``.item()``, numpy
inside ``forward``) has no estimate: the guard says so in one line and lets the run go on.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmark.data.images import DataError

MARGIN = 1.5  # safety factor on the measured line (allocator fragmentation, other machines' kernels)
SIZES = ((128, 128), (256, 256))  # the two measured sizes (h, w)
REPEATS = 3  # images per measuring process (one after the other, as derain/evaluate run them)
GRID = 8  # largest pad multiple of any model (MOSS): sizes are rounded up to it

# (fixed bytes, bytes per pixel) of the measured line, before MARGIN. Measured 2026-12-02 04:35-04:40
# UTC on the development machine (2-vCPU AMD EPYC Zen 3, 24 GiB, CPU torch, 1 thread) with
# ``OMP_NUM_THREADS=1 python -m benchmark.tools.memory`` at 128x128 and 256x256 (3 images each). A negative
# intercept (DualGCN: noise at 128x128) is raised to 0, which keeps both points under the line. MSGNN:
# default ``knn_budget`` (64 MiB on CPU), exemplar as large as the image; its kNN search is chunked
# to the budget, so that part stops growing with size and the line over-estimates large images.
COEFFS: dict[str, tuple[int, int]] = {
    "dcsfn": (73662464, 8314),
    "dualgcn": (0, 12276),
    "input": (5672960, 112),
    "moss": (39460864, 1012),
    "msgnn": (78135296, 3542),
    "mspfn": (132255744, 9244),
    "prenet": (10309632, 3334),
    "rcdnet": (37232640, 5864),
    "rescan": (25800704, 1861),
    "spanet": (49324032, 2706),
    "scoring": (6397952, 237),  # `input` + a target + every protocol's metrics (04:53): evaluate's extra
}


PROBE_SCALE = 2.2  # above the largest measured/probe ratio of the built-ins (2.13, DualGCN)


def _round_up(n: int, m: int = GRID) -> int:
    return -(-n // m) * m


_probed: dict[str, tuple[int, int] | str] = {}
_told: set[str] = set()


def probe_peak(model: str, h: int, w: int) -> tuple[int, int]:
    """(peak bytes of the tensors alive during one no-grad forward of an ``h`` x ``w`` image, bytes of the
    parameters) of ``model`` built on the meta device (an exemplar as large for models that take one)."""
    import weakref

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from benchmark.core import contract
    from benchmark.core.registry import build_model

    class Live(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.now = self.peak = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            rets = func._schema.returns
            for i, t in enumerate(out if isinstance(out, (tuple, list)) else (out,)):
                # views and in-place results share an input's storage: counted once, where it was made
                if isinstance(t, torch.Tensor) and not (i < len(rets) and rets[i].alias_info is not None):
                    n = t.numel() * t.element_size()
                    self.now += n
                    self.peak = max(self.peak, self.now)
                    weakref.finalize(t, self._free, n)
            return out

        def _free(self, n: int) -> None:
            self.now -= n

    with torch.device("meta"):
        net = build_model(model).eval()
    x = torch.empty(1, 3, h, w, device="meta")
    ex = torch.empty(1, 3, h, w, device="meta") if contract.needs_exemplar(net) else None
    mode = Live()
    with torch.no_grad(), mode:
        out = contract.call(net, x, ex)
        del out
    return mode.peak, sum(p.numel() * p.element_size() for p in net.parameters())


def probed(model: str) -> tuple[int, int] | str:
    """The generic (fixed, per pixel) of ``model`` from the meta-device probe (see the module text), or
    the one-line reason why there is none. Computed once per process."""
    if model not in _probed:
        try:
            (h0, w0), (h1, w1) = SIZES
            (a, params), (b, _) = probe_peak(model, h0, w0), probe_peak(model, h1, w1)
        except Exception as exc:  # noqa: BLE001 -- any failure of a foreign model on meta means "no estimate"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            _probed[model] = f"{type(exc).__name__}: {first}"[:200]
        else:
            per_px = max(0.0, (b - a) / (h1 * w1 - h0 * w0))
            fixed = max(0.0, a - per_px * h0 * w0) + 2 * params  # the weights and a checkpoint's copy
            floor = max(c[0] for c in COEFFS.values())
            _probed[model] = (int(PROBE_SCALE * fixed) + floor, int(PROBE_SCALE * per_px + 0.5))
    return _probed[model]


def coefficients(model: str) -> tuple[int, int] | None:
    """The measured (fixed, per pixel) of ``model``; for one not measured (a plugin) the meta-device
    probe's; None when there is no estimate (``probed`` gives the reason)."""
    if model in COEFFS:
        return COEFFS[model]
    got = probed(model)
    return got if isinstance(got, tuple) else None


def need(model: str, h: int, w: int, *, tile: int | None = None, overlap: int = 32,
         exemplar_hw: tuple[int, int] | None = None, device: str = "cpu", scoring: bool = False) -> int | None:
    """Bytes that inference of one ``h`` x ``w`` image with ``model`` may take (with the margin).

    With ``tile`` the network sees one tile (core + ``overlap`` on each side) at a time; the whole
    image's input and output buffers (the ``input`` model's per-pixel cost, plus the tiled output,
    12 bytes a pixel) stay. An exemplar (MSGNN, whole for every tile) counts when larger than what
    the network sees: the coefficients were measured with an exemplar as large as the image.
    On CUDA MSGNN's default kNN chunk is 256 MiB instead of the 64 MiB measured here: the rest is added.
    ``scoring`` (``evaluate``) adds the per-pixel cost of the target and of every protocol's metrics.
    None when ``model`` has no estimate.
    """
    coeffs = coefficients(model)
    if coeffs is None:
        return None
    fixed, per_px = coeffs
    if model == "msgnn" and str(device).startswith("cuda"):
        fixed += 192 * 2**20
    hp, wp = _round_up(h), _round_up(w)
    if tile and (tile < h or tile < w):
        span = _round_up(tile) + 2 * _round_up(overlap)
        seen = min(hp, span) * min(wp, span)
        io = coefficients("input")[1] + 12
        whole = io * hp * wp
    else:
        seen, whole = hp * wp, 0
    if exemplar_hw:
        seen = max(seen, _round_up(exemplar_hw[0]) * _round_up(exemplar_hw[1]))
    if scoring:
        whole += coefficients("scoring")[1] * hp * wp
    return int(MARGIN * (fixed + per_px * seen + whole))


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_room() -> int | None:
    """Room left under a cgroup v2 memory limit (containers), or None where there is none."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return None


def available(device: str = "cpu") -> int | None:
    """Bytes free for inference on ``device``: MemAvailable (and the cgroup limit) on the CPU, the
    card's free memory on CUDA; None when unknown (the check is then skipped)."""
    if str(device).startswith("cuda"):
        import torch

        try:
            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        except (RuntimeError, AssertionError, ValueError):  # no usable card: loading says so, not us
            return None
    sizes = [s for s in (_meminfo_available(), _cgroup_room()) if s is not None]
    return min(sizes) if sizes else None


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def check(model: str, path: Path, h: int, w: int, free: int | None, device: str = "cpu", **kw) -> None:
    """Refuse ``path`` with one line when its estimate exceeds ``free`` bytes (None: no check)."""
    if free is None:
        return
    est = need(model, h, w, device=device, **kw)
    if est is None:
        if model not in _told:  # once per model, not per image
            _told.add(model)
            print(f"memory: no estimate for {model} (its meta-device probe failed: {probed(model)}); "
                  "the memory check is skipped", file=sys.stderr)
        return
    if est > free:
        tiled = f" with --tile {kw['tile']}" if kw.get("tile") else ""
        raise DataError(f"{path}: {w}x{h} image needs about {_gib(est)} for {model} inference{tiled} "
                        f"(estimate, benchmark/tools/memory.py) but {_gib(free)} is available on {device}; use "
                        f"--tile SIZE (or a smaller one), a smaller image, or --no-memory-check to try anyway")


# --- measuring the coefficients ------------------------------------------------------------------

def measure(model: str, h: int, w: int, repeats: int = REPEATS) -> int:
    """Peak-RSS growth (bytes) of ``repeats`` inferences in this (fresh, single-threaded) process."""
    import torch

    from benchmark.core import contract
    from benchmark.evaluation import inference
    from benchmark.evaluation import metrics, protocols
    from benchmark.tools.perf import _reset_peak_rss, _rss_kib
    from benchmark.core.registry import build_model

    torch.set_num_threads(1)
    if not _reset_peak_rss():
        raise RuntimeError("cannot reset the peak RSS (/proc/self/clear_refs)")
    base = _rss_kib("VmRSS") * 1024
    torch.manual_seed(0)
    net = build_model("input" if model == "scoring" else model).eval()
    net.load_state_dict({k: v.clone() for k, v in net.state_dict().items()})  # a checkpoint's copy
    g = torch.Generator().manual_seed(0)
    ex = None
    for _ in range(repeats):  # the heap fragments over a folder of images: the peak rises, then stays
        img = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
        x = torch.from_numpy(img).permute(2, 0, 1).float().div(255)
        if ex is None and contract.needs_exemplar(net):
            ex = x.clone()
        with torch.no_grad():
            out = inference.predict(net, x, ex, "cpu")[0]
            out8 = metrics.to_uint8(out)
        if model == "scoring":  # what evaluate adds: a target, the metrics of every protocol
            tgt = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
            metrics.image_metrics(out8, tgt)
            protocols.score_all(out.permute(1, 2, 0).numpy(), tgt)
        del img, x, out, out8
    return _rss_kib("VmHWM") * 1024 - base


def remeasure(models: list[str], sizes=SIZES) -> dict[str, tuple[int, int]]:
    """(fixed, per pixel) per model from fresh subprocesses at two sizes (the line through them)."""
    out = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for m in models:
        peaks = []
        for h, w in sizes:
            code = f"from benchmark.tools.memory import measure; print(measure({m!r}, {h}, {w}))"
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
            peaks.append(int(proc.stdout.split()[-1]))
        (h0, w0), (h1, w1) = sizes
        p0, p1 = _round_up(h0) * _round_up(w0), _round_up(h1) * _round_up(w1)
        per_px = max(0, round((peaks[1] - peaks[0]) / (p1 - p0)))
        out[m] = (max(0, peaks[0] - per_px * p0, peaks[1] - per_px * p1), per_px)  # both points under
        print(json.dumps({"model": m, "sizes": sizes, "peak_bytes": peaks, "fixed": out[m][0],
                          "per_pixel": per_px}), flush=True)
    return out


if __name__ == "__main__":  # python -m benchmark.tools.memory [MODEL...|scoring]: re-measure, print COEFFS
    from benchmark.core.registry import list_models

    for name, (f, p) in remeasure(sys.argv[1:] or list_models() + ["scoring"]).items():
        print(f'    "{name}": ({f}, {p}),')
