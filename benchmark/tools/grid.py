"""``msgnn-bench grid``: many DVC stages at once on one machine, one per device, DVC kept in the loop.

``dvc repro`` runs one stage at a time and holds the repository lock while it runs, so two
``dvc repro`` processes in one workspace cannot run side by side. This runner asks DVC for the
stages of the given targets (their resolved commands, dependencies and outputs), runs the commands
itself in ``--jobs`` worker processes, each pinned to one device through ``CUDA_VISIBLE_DEVICES``
(a stage starts once every selected stage producing one of its dependencies has finished), and then
``dvc commit``s the finished stages, so that ``dvc.lock`` records exactly what ran and ``dvc
status`` is clean. A failed stage stops new starts, is not committed, and makes the exit status 1.

Usage (8 GPUs; prepare first, it downloads and is shared):
  dvc repro prepare
  msgnn-bench grid --devices 0,1,2,3,4,5,6,7 'train*' 'evaluate*'
  dvc repro report        # everything upstream is up to date, only the report runs
"""
from __future__ import annotations

import argparse
import fnmatch
import os
import subprocess
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Job:
    name: str
    cmd: str
    deps: list[str]
    outs: list[str]
    after: set[str] = field(default_factory=set)


def _inside(path: str, out: str) -> bool:
    return path == out or path.startswith(out.rstrip("/") + "/") or out.startswith(path.rstrip("/") + "/")


@contextmanager
def _repo(root: Path):
    from dvc.repo import Repo

    cwd = os.getcwd()
    os.chdir(root)  # DVC resolves paths against the working directory
    try:
        with Repo(str(root)) as repo:
            yield repo
    finally:
        os.chdir(cwd)


def _matching(repo, root: Path, targets: list[str]) -> list:
    """The stages matching ``targets`` (names, a matrix stage's group name, shell globs), from one load
    of dvc.yaml and dvc.lock: DVC's per-target collection reloads both for every target, seconds each
    once the lock holds a hundred stages."""
    from dvc.exceptions import DvcException

    try:
        stages = list(repo.index.stages)
    except DvcException as exc:  # one line naming the file, not a traceback
        raise ValueError(f"{root / 'dvc.yaml'}: {exc}") from exc

    def hit(st, t: str) -> bool:
        return fnmatch.fnmatchcase(st.addressing, t) or st.addressing.split("@")[0] == t

    unmatched = [t for t in targets if not any(hit(st, t) for st in stages)]
    if unmatched:
        raise ValueError(f"{root / 'dvc.yaml'}: no stage matches {', '.join(map(repr, unmatched))}")
    return [st for st in stages if any(hit(st, t) for t in targets)]


def collect(root: Path, targets: list[str]) -> list[Job]:
    """The stages matching ``targets``, with their order constraints."""
    with _repo(root) as repo:
        jobs = []
        for st in _matching(repo, root, targets):
            cmd = st.cmd if isinstance(st.cmd, str) else " && ".join(st.cmd)
            rel = lambda o: os.path.relpath(str(o.fs_path), str(root))  # noqa: E731
            jobs.append(Job(st.addressing, cmd, [rel(d) for d in st.deps], [rel(o) for o in st.outs]))
    for job in jobs:
        job.after = {o.name for o in jobs if o is not job
                     and any(_inside(d, out) for d in job.deps for out in o.outs)}
    return jobs


def run_grid(root: Path, jobs: list[Job], devices: list[str], log=print) -> int:
    """Run ``jobs`` respecting ``after``, at most one per device at a time; commit what finished."""
    done: set[str] = set()
    failed: list[str] = []
    pending = {j.name: j for j in jobs}
    free = list(devices)
    running: dict[Future, tuple[Job, str]] = {}

    def start(job: Job, dev: str) -> int:
        # the thread count is left alone: on a CPU, MSGNN's results depend on it (float summation
        # order), and a grid must give what `dvc repro` gives; set OMP_NUM_THREADS for both to share cores
        env = dict(os.environ)
        env["CUDA_VISIBLE_DEVICES"] = "" if dev == "cpu" else dev
        logf = root / ".dvc" / "tmp" / "grid" / f"{job.name.replace('@', '_')}.log"
        logf.parent.mkdir(parents=True, exist_ok=True)
        with open(logf, "w") as fh:
            # a DVC stage command is a shell line by DVC's definition (`dvc repro` runs it through a shell);
            # it comes from the repository's dvc.yaml, never from a command-line argument
            proc = subprocess.run(job.cmd, shell=True, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT)
            return proc.returncode

    with ThreadPoolExecutor(max_workers=len(devices)) as pool:
        while pending or running:
            ready = [j for j in pending.values() if j.after <= done] if not failed else []
            while ready and free:
                job, dev = ready.pop(0), free.pop(0)
                del pending[job.name]
                log(f"{time.strftime('%H:%M:%S')} start {job.name} on device {dev}")
                running[pool.submit(start, job, dev)] = (job, dev)
            if not running:
                break  # failed, or a dependency cycle/unsatisfiable order
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                job, dev = running.pop(fut)
                free.append(dev)
                rc = fut.result()
                log(f"{time.strftime('%H:%M:%S')} {'done' if rc == 0 else f'FAILED (exit {rc})'} {job.name}")
                (done.add if rc == 0 else failed.append)(job.name)
    if done:
        commit(root, sorted(done))  # record the results: dvc.lock gets the hashes of what ran
    if failed or pending:
        log(f"grid: failed {failed}; not started {sorted(pending)}; logs in .dvc/tmp/grid/")
        return 1
    return 0


def commit(root: Path, targets: list[str]) -> list[str]:
    """What ``dvc commit --force TARGETS`` does (hash each matching stage's deps and outputs, move the
    outputs into the cache, record them in dvc.lock), reading and writing each lock file once. The CLI
    reloads dvc.yaml and dvc.lock and rewrites the lock for every target: 104 paper stages took more
    than 15 min that way on the 2-core machine (a 0.85 MB lock). Targets are names or shell globs;
    returns the names committed."""
    from dvc.repo import lock_repo

    with _repo(root) as repo, lock_repo(repo):
        stages = _matching(repo, root, targets)
        by_file: dict[str, tuple[object, list]] = {}
        for stage in stages:
            stage.save()
            stage.commit()
            by_file.setdefault(stage.dvcfile.path, (stage.dvcfile, []))[1].append(stage)
        for dvcfile, group in by_file.values():
            dvcfile.dump_stages(group, update_pipeline=False)
    return [st.addressing for st in stages]


def grid_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="msgnn-bench grid", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("targets", nargs="+", help="DVC stage names or globs, e.g. 'train@prenet-*' 'evaluate*'")
    p.add_argument("--devices", default="", help="comma-separated CUDA device ids, one worker each; 'cpu' for a "
                   "CPU worker (repeatable: cpu,cpu). Default: all visible GPUs, else one CPU worker")
    p.add_argument("--root", default=".", help="repository root (default: .)")
    p.add_argument("--dry-run", action="store_true", help="print the stages, their order and commands, run nothing")
    p.add_argument("--commit", action="store_true", help="only record the named stages' results in dvc.lock "
                   "(`dvc commit --force`, one lock write for all of them; pipelines/slurm/record.sh), run nothing")
    p.add_argument("--list", action="store_true", help="print 'stage<TAB>command' lines (input of the SLURM "
                   "job-array script pipelines/slurm/stage.sbatch), run nothing")
    args = p.parse_args(argv)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    if not devices:
        import torch
        devices = [str(i) for i in range(torch.cuda.device_count())] or ["cpu"]
    root = Path(args.root).resolve()
    if args.commit:
        print(f"grid: committed {len(commit(root, args.targets))} stage(s)")
        return 0
    jobs = collect(root, args.targets)
    if args.list:
        print("\n".join(f"{j.name}\t{j.cmd}" for j in jobs))
        return 0
    if args.dry_run:
        for j in jobs:
            print(f"{j.name}: {j.cmd}" + (f"   (after {', '.join(sorted(j.after))})" if j.after else ""))
        return 0
    return run_grid(root, jobs, devices)


if __name__ == "__main__":
    raise SystemExit(grid_main())
