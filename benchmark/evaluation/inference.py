"""Full-image inference and the evaluator every model goes through.

``predict`` pads an image to the model's ``pad_multiple``, runs the one model call and crops back;
``evaluate`` quantises each output once and scores it under every metric and scoring protocol,
so a table never mixes outputs of two runs.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmark.core import contract, io
from benchmark.core.config import EvalCfg
from benchmark.evaluation import metrics, protocols


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad H, W up to a multiple (replicate where the image is too small to reflect)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, exemplar: torch.Tensor | None = None,
            device: str | torch.device = "cpu") -> torch.Tensor:
    """Derain one full image ``x`` [3,H,W] or [1,3,H,W] → float [1,3,H,W] (not clamped)."""
    device = torch.device(device)
    x = x[None] if x.dim() == 3 else x
    xp, (h, w) = pad_to_multiple(x.to(device), contract.pad_multiple(model))
    ex = exemplar[None] if exemplar is not None and exemplar.dim() == 3 else exemplar
    out = contract.call(model, xp, ex.to(device) if ex is not None else None)
    out = contract.stage_outputs(out)[-1]
    return out[..., :h, :w].float().cpu()


def evaluate(model: torch.nn.Module, dataset, cfg: EvalCfg, device: str | torch.device = "cpu",
             exemplar: torch.Tensor | None = None, save_dir: str | Path | None = None,
             lpips_metric=None, progress: bool = True, save_names: frozenset[str] = frozenset()) -> dict:
    """Full-image evaluation: predict, clamp, quantise to uint8, then Y/RGB PSNR/SSIM (and LPIPS).

    Saves the first ``cfg.save_images`` outputs (all of an unpaired set) and those in ``save_names``.
    """
    model.to(device).eval()
    per_image = []
    bar = io.progress(len(dataset), 0, enabled=progress, desc="evaluate")
    for i in range(len(dataset)):
        item = dataset[i]
        t = time.perf_counter()
        out = predict(model, item.input, exemplar, device)[0]
        sec = time.perf_counter() - t
        out8 = metrics.to_uint8(out, mode=cfg.quantise)
        row: dict = {"name": item.name, "seconds": sec}
        if item.target is not None:
            tgt8 = metrics.to_uint8(item.target, mode="round")
            if cfg.crop_border:
                b = cfg.crop_border
                out8c, tgt8c = out8[b:-b, b:-b], tgt8[b:-b, b:-b]
            else:
                out8c, tgt8c = out8, tgt8
            row.update(metrics.image_metrics(out8c, tgt8c, y_mode=cfg.y_mode))
            # every named scoring protocol from the same raw output (the network runs once)
            row.update(protocols.score_all(out.permute(1, 2, 0).numpy(), tgt8))
            if lpips_metric is not None:
                row["lpips"] = lpips_metric(out8c, tgt8c)
        if save_dir is not None and (i < (cfg.save_images if item.target is not None else len(dataset))
                                     or item.name in save_names):
            _save_png(Path(save_dir) / f"{item.name}.png", out8)
        per_image.append(row)
        bar.update(1)
    bar.close()
    keys = [k for k in per_image[0] if k not in ("name",)]
    mean = {k: _mean([r[k] for r in per_image]) for k in keys}
    return {"n_images": len(per_image), "mean": mean, "per_image": per_image}


def _mean(vals: list[float]) -> float:
    # identical images give PSNR = inf; a mean over finite values would hide them, so inf stays inf
    return float(sum(vals) / len(vals)) if vals else float("nan")


def _save_png(path: Path, arr) -> None:
    from PIL import Image

    io.atomic_write(path, lambda f: Image.fromarray(arr).save(f, format="PNG"))
