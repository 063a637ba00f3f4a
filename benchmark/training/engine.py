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
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader

from benchmark.core import checkpoints, contract, io, signals
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
    incomplete (``finished`` is False) and the caller should not save a final model. A SIGTERM/SIGINT
    recorded by ``signals.stopping`` ends it at the next step boundary: ``last.pt`` is written there
    and ``signals.Stopped`` raised (the lock is released on the way out).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    locked = checkpoints.RunLock(out_dir) if lock and distributed.is_main() else contextlib.nullcontext()
    with locked:  # under torchrun only rank 0 writes into the run folder
        run = _setup(model, train_ds, cfg, out_dir, torch.device(device), run_id)
        _resume(run, state)
        checkpoints.check_free_space(out_dir, model)
        return _loop(run, train_ds, log or (lambda m, s: None), validate, num_workers, progress, stop_after)


@dataclasses.dataclass
class _Run:
    """One training run between steps: what was built for it and where it stands."""
    model: torch.nn.Module
    net: torch.nn.Module  # the model, wrapped in DDP when several processes train it
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    loss_fn: Callable
    cfg: TrainCfg
    out_dir: Path
    device: torch.device
    total: int
    fingerprint: dict
    main: bool  # rank 0: the one process that writes files and logs
    step: int = 0
    rows: list = dataclasses.field(default_factory=list)  # the train_log.csv rows so far
    saved: int = 0  # the step of the last checkpoint written in this process
    # the log window: steps since the last log row, their summed loss and its start time. The loss stays
    # on the device between log points (no host sync per step); the first non-finite step and its loss
    # are kept there too, so the error still names them. A checkpoint inside a window keeps the window
    # (``window_seconds``: its time so far), so that a resumed run logs the very rows of an uninterrupted one
    n_window: int = 0
    t0: float = 0.0
    window_seconds: float = 0.0
    loss_sum: torch.Tensor | None = None
    bad_step: torch.Tensor | None = None
    bad_loss: torch.Tensor | None = None

    @property
    def log_path(self) -> Path:
        return self.out_dir / "train_log.csv"


def _setup(model, train_ds, cfg: TrainCfg, out_dir: Path, device: torch.device, run_id: dict | None) -> _Run:
    """Model on the device, optimiser, schedule, AMP scaler, DDP wrapper and loss of a fresh run."""
    total = total_iters(cfg, len(train_ds.pairs), train_ds.pairs)
    model.to(device).train()
    opt = build_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, cfg))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.tf32
    if cfg.batch % cfg.accumulate:
        raise ValueError(f"train.batch {cfg.batch} is not a multiple of train.accumulate {cfg.accumulate}")
    net = model
    if distributed.world()[1] > 1:  # modules built but never run (official counts) need unused-parameter detection
        net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    return _Run(model=model, net=net, opt=opt, sched=sched, scaler=scaler, loss_fn=make_loss(model, cfg), cfg=cfg,
                out_dir=out_dir, device=device, total=total,
                fingerprint=checkpoints.run_fingerprint(cfg, train_ds, run_id), main=distributed.is_main())


def _resume(run: _Run, state: dict | None | str) -> None:
    """Load the run's resumable state (``READ_STATE``: look for it in ``last.pt``), if there is one."""
    ck = checkpoints.load_state(run.out_dir, run.fingerprint) if state is READ_STATE else state
    if ck is None:
        return
    run.model.load_state_dict(ck["model"])
    run.opt.load_state_dict(ck["optimizer"])
    run.sched.load_state_dict(ck["scheduler"])
    run.scaler.load_state_dict(ck["scaler"])
    io.set_rng_state(ck["rng"])
    run.step, run.rows = ck["step"], list(ck["log"])
    window = ck.get("window")  # absent in checkpoints of older versions: the window restarts
    if window:
        run.n_window, run.window_seconds = int(window["steps"]), float(window["seconds"])
        run.loss_sum = window["loss_sum"].to(run.device, torch.float32)
    ck.clear()  # consumed: a caller's reference to the state must not keep a copy of the weights alive
    print(f"resuming {run.out_dir} at step {run.step}/{run.total}", file=sys.stderr)


def _loader(run: _Run, train_ds, num_workers: int) -> DataLoader:
    """The rest of the run's micro-batches, from its step on (this rank's share under DDP)."""
    cfg = run.cfg
    rank, size = distributed.world()
    train_ds.length = run.total * cfg.batch
    # micro-batches of the same index stream: accumulate=2 sees exactly the samples of one full batch
    workers = num_workers or cfg.workers
    return DataLoader(train_ds, batch_size=cfg.batch // cfg.accumulate // size,
                      sampler=distributed.rank_indices(run.step, run.total, cfg.batch, cfg.accumulate, rank, size),
                      num_workers=workers, drop_last=True, pin_memory=cfg.pin_memory and run.device.type == "cuda",
                      persistent_workers=cfg.persistent_workers and workers > 0)


def _loop(run: _Run, train_ds, log: LogFn, validate, num_workers: int, progress: bool,
          stop_after: int | None) -> dict:
    cfg = run.cfg
    loader = _loader(run, train_ds, num_workers)
    bar = io.progress(run.total, run.step, enabled=progress and run.main, desc=run.out_dir.name)
    run.t0, run.saved = time.perf_counter() - run.window_seconds, run.step
    if run.loss_sum is None:
        run.loss_sum = torch.zeros((), device=run.device)
    run.bad_step, run.bad_loss = (torch.zeros((), device=run.device) for _ in range(2))
    batches = iter(loader)
    while run.step < run.total:
        sig = _stop_signal(run)  # a step boundary: the previous step is done, the next not begun
        if sig:
            _stop(run, sig, bar)
        _optimiser_step(run, batches)
        bar.update(1)
        step = run.step
        if step % cfg.log_every == 0 or step % cfg.ckpt_every == 0 or step == run.total:
            _check_finite(run, bar)
        if step % cfg.log_every == 0 or step == run.total:
            _log_row(run, log, validate, bar)
        if step % cfg.ckpt_every == 0 or step == run.total:
            window = _window_state(run)  # every rank: a collective under DDP
            if run.main:
                _checkpoint(run, window)
        if stop_after is not None and step >= stop_after and step < run.total:
            bar.close()
            return {"step": step, "total": run.total, "finished": False}
    # asked to stop during the last step or its validation: stop here too (last.pt holds the finished
    # state, a rerun only saves the model), so that a cancelled job never leaves a model.pt behind
    sig = _stop_signal(run)
    if sig:
        _stop(run, sig, bar)
    bar.close()
    if run.main:
        io.write_csv(run.log_path, run.rows)
    rows = run.rows
    return {"step": run.step, "total": run.total, "finished": True, "final_loss": rows[-1]["loss"] if rows else None}


def _stop_signal(run: _Run) -> int:
    """The signal asking to stop (0: none). Under DDP every rank must stop at the same step, so the
    ranks agree on it (one tiny all-reduce per step; SLURM may signal the ranks at different instants)."""
    sig = signals.requested()
    if distributed.world()[1] > 1:
        sig = int(distributed.all_max(torch.tensor(sig, device=run.device)).item())
    return sig


def _stop(run: _Run, sig: int, bar) -> None:
    """End the run at this step boundary on a signal: a finite state is checkpointed (unless it was
    just written), then ``signals.Stopped`` says where it stopped and how to go on."""
    _check_finite(run, bar)  # never keep a diverged state as the one to resume from
    bar.close()
    window = _window_state(run)
    if run.main and run.saved != run.step:
        _checkpoint(run, window)
    if run.step == 0:
        where = "before the first step; nothing to resume, a rerun starts afresh"
    else:
        where = (f"at step {run.step}/{run.total}; its state is in {run.out_dir / checkpoints.LAST}; run the same "
                 "command again to resume from there")
    raise signals.Stopped(sig, f"stopped by {signals.name(sig)} {where}")


def _optimiser_step(run: _Run, batches) -> None:
    """One optimiser step over ``cfg.accumulate`` micro-batches; the loss is added to the log window."""
    cfg, device = run.cfg, run.device
    run.opt.zero_grad(set_to_none=True)
    step_loss = torch.zeros((), device=device)
    for _ in range(cfg.accumulate):
        batch = next(batches)
        rainy, clean = batch["input"].to(device, non_blocking=True), batch["target"].to(device, non_blocking=True)
        ex = batch.get("exemplar")
        with _autocast(device, cfg.amp):
            out = contract.call(run.net, rainy, ex.to(device) if ex is not None else None)
            loss = run.loss_fn(out, rainy, clean) / cfg.accumulate  # mean over the full batch
        run.scaler.scale(loss).backward()
        step_loss += loss.detach().float()
    new_bad = (~torch.isfinite(step_loss)) & (run.bad_step == 0)
    run.bad_step = torch.where(new_bad, torch.full_like(run.bad_step, run.step + 1), run.bad_step)
    run.bad_loss = torch.where(new_bad, step_loss, run.bad_loss)
    if cfg.grad_clip > 0:  # clip the global gradient norm (unscaled first when AMP scales the loss)
        run.scaler.unscale_(run.opt)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    run.scaler.step(run.opt)
    run.scaler.update()
    run.sched.step()
    run.step += 1
    run.n_window += 1
    run.loss_sum += step_loss


def _check_finite(run: _Run, bar) -> None:
    """Stop with one error naming the first non-finite step, before anything of it is written."""
    if not distributed.all_max(run.bad_step).item():  # one sync per log/checkpoint point, before any write
        return
    bar.close()
    if run.main:
        io.write_csv(run.log_path, run.rows)
    bad, first = int(run.bad_step.item()), run.step - run.n_window + 1
    ckpt_path = run.out_dir / checkpoints.LAST
    kept = f"the last good checkpoint {ckpt_path} (step {run.saved}) is kept" if run.saved else \
        "no checkpoint was written yet"
    raise FloatingPointError(
        f"{run.out_dir.name}: loss became {run.bad_loss.item()} at step {bad} (log window of steps {first}-"
        f"{run.step}); {kept}; lower the learning rate or set train.grad_clip, then rerun")


def _log_row(run: _Run, log: LogFn, validate, bar) -> None:
    """Close the log window: one train_log row (with validation when due), sent to ``log`` by rank 0."""
    cfg, step = run.cfg, run.step
    mean_loss = distributed.all_mean(run.loss_sum).item() / run.n_window
    row = {"step": step, "loss": mean_loss, "lr": run.opt.param_groups[0]["lr"],
           "sec_per_step": (time.perf_counter() - run.t0) / run.n_window}
    run.loss_sum.zero_()
    run.n_window, run.t0 = 0, time.perf_counter()
    if run.main and validate is not None and ((cfg.val_every and step % cfg.val_every == 0) or step == run.total):
        run.model.eval()
        row.update({f"val_{k}": v for k, v in validate(run.model).items()})
        run.model.train()
    run.rows.append(row)
    if run.main:
        log({f"train/{k}": v for k, v in row.items() if k != "step"}, step)
    bar.set_postfix(loss=f"{row['loss']:.4f}")


def _window_state(run: _Run) -> dict:
    """The open log window, as a checkpoint keeps it: its steps, summed loss (averaged over the ranks
    under DDP, since only rank 0's checkpoint survives) and seconds so far."""
    loss_sum = distributed.all_mean(run.loss_sum.clone()).detach().cpu()
    return {"steps": run.n_window, "loss_sum": loss_sum, "seconds": time.perf_counter() - run.t0}


def _checkpoint(run: _Run, window: dict) -> None:
    """Write ``last.pt`` (everything a resumption needs, the log rows and the open log window
    included) and ``train_log.csv``."""
    checkpoints.save_state(run.out_dir, {
        "model": run.model.state_dict(), "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
        "scaler": run.scaler.state_dict(), "rng": io.rng_state(), "step": run.step, "fingerprint": run.fingerprint,
        "log": run.rows, "window": window})
    io.write_csv(run.log_path, run.rows)
    run.saved = run.step
