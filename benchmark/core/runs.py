"""Where each stage reads and writes, and how a trained model is loaded back.

A run key is ``<model>-<dataset>``: the DVC matrix ``${key}``, the run folder name and the
MLflow run name all match, so a stage, its files and its tracked run are found by one string.

Layout: ``runs/{train,eval}/<key>/`` for the Table 1 runs and their seed replicas; the ablation
variants, which one DVC stage trains together (stage ``ablation@<group>-<seed>``), sit one level
deeper in that stage's folder: ``runs/{train,eval}/ablation-<group>-s<seed>/<key>/``. Readers go
through ``run_dirs``/``find_run`` and never need to know which.
"""
from __future__ import annotations

import json
from pathlib import Path


DATA = Path("data")
RUNS = Path("runs")


def data_dir(dataset: str) -> Path:
    return DATA / dataset


def eval_set_dir(dataset: str, eval_set: str) -> Path:
    """Test images of ``eval_set`` for a model trained on ``dataset``: the dataset's own folder, or,
    for a test-only set of ``datasets.<dataset>.eval_sets``, the copy that ``prepare@<dataset>``
    obtains under ``data/eval_sets/<dataset>/`` (a declared output of that stage, so the evaluate
    stages can depend on it)."""
    return data_dir(dataset) if eval_set == dataset else eval_sets_dir(dataset) / eval_set


def eval_sets_dir(dataset: str) -> Path:
    return DATA / "eval_sets" / dataset


def run_key(model: str, dataset: str, seed: int | None = None, variant: str | None = None) -> str:
    """``<model>-<dataset>``; an ablation variant is ``msgnn.<variant>-…``, a seed replica ends ``-s<seed>``."""
    name = f"{model}.{variant}" if variant else model
    return f"{name}-{dataset}" + (f"-s{seed}" if seed is not None else "")


def train_dir(model: str, dataset: str) -> Path:
    return RUNS / "train" / run_key(model, dataset)


def eval_dir(model: str, dataset: str) -> Path:
    return RUNS / "eval" / run_key(model, dataset)


GROUP_PREFIX = "ablation-"


class RunFolderError(ValueError):
    """A run folder the tables and the CI gate must not read: a copy, a renamed run, an unreadable
    metrics.json. The message names the folder or file."""


class DuplicateRunError(RunFolderError):
    """One run key in two folders: every table would count it twice."""


def ablation_dir(kind: str, group: str, seed: int, runs_dir: Path = RUNS) -> Path:
    """The folder of stage ``ablation@<group>-<seed>`` under ``runs/<kind>`` (kind: train | eval)."""
    return Path(runs_dir) / kind / f"{GROUP_PREFIX}{group}-s{seed}"


def ablation_summary(group: str, seed: int, runs_dir: Path = RUNS) -> Path:
    """That stage's small metrics file (committed to git, so that ``dvc exp show`` sees the variants)."""
    return Path(runs_dir) / "eval" / f"{GROUP_PREFIX}{group}-s{seed}.json"


def run_dirs(runs_dir: Path, kind: str) -> list[Path]:
    """Every run folder under ``runs_dir/<kind>`` (Table 1 runs, seed replicas, ablation variants),
    sorted by key."""
    base = Path(runs_dir) / kind
    if not base.is_dir():
        return []
    out: dict[str, Path] = {}
    for d in sorted(base.iterdir()):
        if not d.is_dir():
            continue
        for run in sorted(v for v in d.iterdir() if v.is_dir()) if d.name.startswith(GROUP_PREFIX) else [d]:
            if run.name in out:  # e.g. a leftover of another layout: a table would count it twice
                raise DuplicateRunError(f"{run}: run {run.name} also exists as {out[run.name]}; "
                                        "delete the stale one")
            out[run.name] = run
    return [out[k] for k in sorted(out)]


def run_files(runs_dir: Path, kind: str, name: str) -> list[Path]:
    """``<run folder>/<name>`` of every run that has one (e.g. eval ``metrics.json``, train ``train_log.csv``)."""
    return [d / name for d in run_dirs(runs_dir, kind) if (d / name).is_file()]


def find_run(runs_dir: Path, kind: str, key: str) -> Path:
    """The folder of run ``key`` under ``runs_dir/<kind>`` wherever its stage put it (the flat path
    when there is none, so that callers name the expected place in their error)."""
    flat = Path(runs_dir) / kind / key
    if flat.is_dir():
        return flat
    base = Path(runs_dir) / kind
    nested = sorted(base.glob(f"{GROUP_PREFIX}*/{key}")) if base.is_dir() else []
    return nested[0] if nested else flat


def eval_metrics(runs_dir: Path) -> list[tuple[Path, dict]]:
    """``(metrics.json, its contents)`` of every evaluation run, each run exactly once.

    A copied run folder (``prenet-rain-synth.bak`` beside ``prenet-rain-synth``) holds the same
    ``key``: taking it would let the copy's numbers stand in for the run's in Table 1 and the CI
    gate. So a key held by two folders is refused, and so is a folder whose name is not the key it
    holds (the stage writes ``metrics.json`` into the folder named by its key, never elsewhere)."""
    found: list[tuple[Path, dict]] = []
    where: dict[str, list[Path]] = {}
    for f in run_files(runs_dir, "eval", "metrics.json"):
        try:
            m = json.loads(f.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise RunFolderError(f"{f}: not readable JSON ({exc}); rerun its evaluate stage or delete the folder") from None
        if not isinstance(m, dict) or not isinstance(m.get("results"), dict):
            raise RunFolderError(f"{f}: not a metrics.json written by the evaluate stage (no results mapping)")
        key = m.get("key", f.parent.name)  # files from before the key field: the folder name
        where.setdefault(str(key), []).append(f.parent)
        found.append((f, m))
    for key, dirs in where.items():
        if len(dirs) > 1:
            raise DuplicateRunError(f"run {key} is held by {len(dirs)} folders ({', '.join(map(str, dirs))}); "
                                    "delete the copy")
    for f, m in found:
        if str(m.get("key", f.parent.name)) != f.parent.name:
            raise RunFolderError(f"{f}: holds run {m['key']} but its folder is named {f.parent.name} (a copy or a "
                                 "renamed run); delete it or move it out of the runs folder")
    return found
