"""Where each stage reads and writes, and how a trained model is loaded back.

A run key is ``<model>-<dataset>``: the DVC matrix ``${key}``, the run folder name and the
MLflow run name all match, so a stage, its files and its tracked run are found by one string.
"""
from __future__ import annotations

from pathlib import Path

import torch

from benchmark import io
from benchmark.registry import build_model

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


def train_dir(model: str, dataset: str) -> Path:
    return RUNS / "train" / f"{model}-{dataset}"


def eval_dir(model: str, dataset: str) -> Path:
    return RUNS / "eval" / f"{model}-{dataset}"


def save_model(path: str | Path, name: str, args: dict, model: torch.nn.Module, **meta) -> None:
    io.save_torch(path, {"format": io.CKPT_FORMAT, "model_name": name, "model_args": args,
                         "state_dict": model.state_dict(), **meta})


def load_model(path: str | Path, expect: str | None = None) -> torch.nn.Module:
    """Rebuild the network recorded in a suite checkpoint and load its weights (strictly)."""
    ck = io.load_torch(path)
    if not isinstance(ck, dict) or ck.get("format") != io.CKPT_FORMAT:
        raise ValueError(f"{path}: not an msgnn-bench checkpoint (for official weights use --official)")
    if expect is not None and ck["model_name"] != expect:
        raise ValueError(f"{path}: holds model {ck['model_name']!r}, not {expect!r}")
    model = build_model(ck["model_name"], **ck["model_args"])
    try:
        model.load_state_dict(ck["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit {ck['model_name']} {ck['model_args']}: {exc}") from exc
    return model.eval()


def load_official(name: str, path: str | Path) -> torch.nn.Module:
    """An official checkpoint through the model's registered official loader."""
    from benchmark.registry import load_official as _load_official

    return _load_official(name, path)
