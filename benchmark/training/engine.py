"""One training loop for all nine models.

``fit`` is iteration based (the deraining norm): ``iters`` steps of random paired patches. All
state that decides the rest of a run — weights, optimiser, scheduler, AMP scaler, step and every
RNG — is in ``last.pt``, and the data stream is a pure function of the step (see
``benchmark.data.loading``), so a run resumed after SIGKILL continues on exactly the same batches.
Per-model quirks never live here: a model's own loss is its ``own_loss`` method, its padding
need is its ``pad_multiple`` attribute, MSGNN's exemplar is an extra input the data provides.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader

from benchmark.core import checkpoints, contract, io
from benchmark.data import loading as data
from benchmark.training import distributed
from benchmark.core.config import TrainCfg
from benchmark.training.losses import build_loss

LogFn = Callable[[dict, int], None]


def total_iters(cfg: TrainCfg, n_train: int, pairs=None) -> int:
    """``iters``, or ``epochs`` × batches per epoch. An epoch is ``samples_per_image`` random crops per
    training image, or with ``grid_stride`` as many as the patch grid of each of ``pairs`` holds
    (the same number of steps as training on the grid's patches; the crops stay random)."""
    if cfg.iters is not None:
        return int(cfg.iters)
    if not cfg.samples_per_image > 0 or cfg.grid_stride < 0:
        raise ValueError(f"train.samples_per_image must be > 0 and train.grid_stride >= 0, got "
                         f"{cfg.samples_per_image} and {cfg.grid_stride}")
    samples = n_train * cfg.samples_per_image
    if cfg.grid_stride:
        if pairs is None:
            raise ValueError("grid_stride needs the training pairs to count their patches")
        samples = sum(patch_grid_count(data.image_size(p), cfg.patch, cfg.grid_stride) for p in pairs)
    return max(1, int(round(cfg.epochs * math.ceil(samples / cfg.batch))))


def patch_grid_count(size: tuple[int, int], patch: int, stride: int) -> int:
    """Patches of ``patch`` x ``patch`` at ``stride`` that fit in an image of ``size`` (h, w), none
    hanging over the border (PReNet's ``Im2Patch``)."""
    return math.prod(max(0, (n - patch) // stride + 1) for n in size)


def lr_factor(step: int, total: int, cfg: TrainCfg) -> float:
    """Learning-rate multiplier at ``step`` (0-based) of a ``total``-step run."""
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "multistep":
        return cfg.gamma ** sum(step >= int(round(m * total)) for m in cfg.milestones)
    if cfg.schedule == "exp":  # MSPFN: lr·decay^(step/decay_every), plus a floor added on top
        return cfg.decay ** (step / cfg.decay_every) + cfg.min_lr / cfg.lr
    raise ValueError(f"unknown schedule {cfg.schedule!r}; valid: multistep, exp, constant")


def build_optimizer(model: torch.nn.Module, cfg: TrainCfg) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    match cfg.optimizer:
        case "adam":
            return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
        case "adamw":
            return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; valid: adam, adamw")


def make_loss(model: torch.nn.Module, cfg: TrainCfg) -> Callable:
    """``loss(outputs, rainy, clean)``: the shared criterion, or the model's own paper loss."""
    if cfg.loss == "own":
        if not contract.has_own_loss(model):
            raise ValueError(f"{type(model).__name__} has no own_loss; use a pixel loss instead")
        return model.own_loss
    crit = build_loss(cfg.loss, cfg.stage_reduction)
    return lambda out, rainy, clean: crit(out, clean)


def _autocast(device: torch.device, amp: str):
    """``train.amp``: off | bf16 (no loss scaling needed: bf16 has fp32's exponent range) | fp16."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp, torch.float32)
    return torch.autocast(device.type, dtype=dtype, enabled=amp != "off")


READ_STATE = "read"  # ``fit(state=...)``: look for a resumable ``last.pt`` itself


def fit(model: torch.nn.Module, train_ds, cfg: TrainCfg, out_dir: str | Path, log: LogFn | None = None,
        validate: Callable[[torch.nn.Module], dict] | None = None, device: str | torch.device = "cpu",
        num_workers: int = 0, progress: bool = True, stop_after: int | None = None,
        run_id: dict | None = None, state: dict | None | str = READ_STATE, lock: bool = True) -> dict:
    """Train ``model`` on ``train_ds`` (a ``TrainPatches``); writes ``last.pt`` and ``train_log.csv``.

    Resumes from ``out_dir/last.pt`` (or the kept-back ``last.prev.pt``) when it belongs to the same
    run (``checkpoints.run_fingerprint``; ``run_id`` names the model and its builder arguments). The
    log rows live in the checkpoint too, so a resumed run's log is whole even if ``train_log.csv`` was
    removed meanwhile. A caller that already read the resumable state (the train stage, which needs its
    log rows before it opens the MLflow run) passes it as ``state`` (None: start afresh). The run
    folder is locked for the duration (``checkpoints.RunLock``) unless the caller holds the lock
    (``lock=False``). A passed ``state`` is consumed (emptied once loaded).
    ``stop_after`` ends the process-local loop early (for tests of resumption); the run is then
    incomplete (``finished`` is False) and the caller should not save a final model.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    locked = checkpoints.RunLock(out_dir) if lock and distributed.is_main() else contextlib.nullcontext()
    with locked:  # under torchrun only rank 0 writes into the run folder
        return _fit(model, train_ds, cfg, out_dir, log or (lambda m, s: None), validate, torch.device(device),
                    num_workers, progress, stop_after, run_id, state)


def _fit(model, train_ds, cfg, out_dir, log, validate, device, num_workers, progress, stop_after, run_id, state):
    total = total_iters(cfg, len(train_ds.pairs), train_ds.pairs)
    model.to(device).train()
    opt = build_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, cfg))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.tf32
    if cfg.batch % cfg.accumulate:
        raise ValueError(f"train.batch {cfg.batch} is not a multiple of train.accumulate {cfg.accumulate}")
    micro = cfg.batch // cfg.accumulate
    rank, size = distributed.world()
    main = rank == 0
    net = model
    if size > 1:  # modules built but never run (official counts) need unused-parameter detection
        net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    loss_fn = make_loss(model, cfg)
    start, fingerprint, rows = 0, checkpoints.run_fingerprint(cfg, train_ds, run_id), []
    ckpt_path, log_path = out_dir / checkpoints.LAST, out_dir / "train_log.csv"
    ck = checkpoints.load_state(out_dir, fingerprint) if state is READ_STATE else state
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        io.set_rng_state(ck["rng"])
        start, rows = ck["step"], list(ck["log"])
        ck.clear()  # consumed: a caller's reference to the state must not keep a copy of the weights alive
        print(f"resuming {out_dir} at step {start}/{total}", file=sys.stderr)
    checkpoints.check_free_space(out_dir, model)
    train_ds.length = total * cfg.batch
    # micro-batches of the same index stream: accumulate=2 sees exactly the samples of one full batch
    workers = num_workers or cfg.workers
    loader = DataLoader(train_ds, batch_size=micro // size,
                        sampler=distributed.rank_indices(start, total, cfg.batch, cfg.accumulate, rank, size),
                        num_workers=workers, drop_last=True, pin_memory=cfg.pin_memory and device.type == "cuda",
                        persistent_workers=cfg.persistent_workers and workers > 0)
    bar = io.progress(total, start, enabled=progress and main, desc=out_dir.name)
    step, t0, n_window, saved = start, time.perf_counter(), 0, start
    # the loss stays on the device between log points (no host sync per step); the first non-finite
    # step and its loss are kept there too, so the error still names them
    loss_sum, bad_step, bad_loss = (torch.zeros((), device=device) for _ in range(3))
    batches = iter(loader)
    while step < total:
        opt.zero_grad(set_to_none=True)
        step_loss = torch.zeros((), device=device)
        for _ in range(cfg.accumulate):
            batch = next(batches)
            rainy, clean = batch["input"].to(device, non_blocking=True), batch["target"].to(device, non_blocking=True)
            ex = batch.get("exemplar")
            with _autocast(device, cfg.amp):
                out = contract.call(net, rainy, ex.to(device) if ex is not None else None)
                loss = loss_fn(out, rainy, clean) / cfg.accumulate  # mean over the full batch
            scaler.scale(loss).backward()
            step_loss += loss.detach().float()
        new_bad = (~torch.isfinite(step_loss)) & (bad_step == 0)
        bad_step = torch.where(new_bad, torch.full_like(bad_step, step + 1), bad_step)
        bad_loss = torch.where(new_bad, step_loss, bad_loss)
        if cfg.grad_clip > 0:  # clip the global gradient norm (unscaled first when AMP scales the loss)
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        sched.step()
        step += 1
        n_window += 1
        loss_sum += step_loss
        bar.update(1)
        if step % cfg.log_every == 0 or step % cfg.ckpt_every == 0 or step == total:
            if distributed.all_max(bad_step).item():  # one sync per log/checkpoint point, before any write
                bar.close()
                if main:
                    io.write_csv(log_path, rows)
                bad, first = int(bad_step.item()), step - n_window + 1
                kept = f"the last good checkpoint {ckpt_path} (step {saved}) is kept" if saved else \
                    "no checkpoint was written yet"
                raise FloatingPointError(
                    f"{out_dir.name}: loss became {bad_loss.item()} at step {bad} (log window of steps {first}-"
                    f"{step}); {kept}; lower the learning rate or set train.grad_clip, then rerun")
        if step % cfg.log_every == 0 or step == total:
            mean_loss = distributed.all_mean(loss_sum).item() / n_window
            row = {"step": step, "loss": mean_loss, "lr": opt.param_groups[0]["lr"],
                   "sec_per_step": (time.perf_counter() - t0) / n_window}
            loss_sum.zero_()
            n_window, t0 = 0, time.perf_counter()
            if main and validate is not None and ((cfg.val_every and step % cfg.val_every == 0) or step == total):
                model.eval()
                row.update({f"val_{k}": v for k, v in validate(model).items()})
                model.train()
            rows.append(row)
            if main:
                log({f"train/{k}": v for k, v in row.items() if k != "step"}, step)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        if main and (step % cfg.ckpt_every == 0 or step == total):
            checkpoints.save_state(out_dir, {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict(), "rng": io.rng_state(), "step": step, "fingerprint": fingerprint,
                "log": rows})
            io.write_csv(log_path, rows)
            saved = step
        if stop_after is not None and step >= stop_after and step < total:
            bar.close()
            return {"step": step, "total": total, "finished": False}
    bar.close()
    if main:
        io.write_csv(log_path, rows)
    return {"step": step, "total": total, "finished": True, "final_loss": rows[-1]["loss"] if rows else None}
