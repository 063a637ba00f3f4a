"""Where each stage reads and writes, and how a trained model is loaded back.

A run key is ``<model>-<dataset>``: the DVC matrix ``${key}``, the run folder name and the
MLflow run name all match, so a stage, its files and its tracked run are found by one string.
"""
from __future__ import annotations

from pathlib import Path

from benchmark import checkpoints

DATA = Path("data")
RUNS = Path("runs")


def data_dir(dataset: str) -> Path:
    return DATA / dataset


def train_dir(model: str, dataset: str) -> Path:
    return RUNS / "train" / f"{model}-{dataset}"


def eval_dir(model: str, dataset: str) -> Path:
    return RUNS / "eval" / f"{model}-{dataset}"


# model.pt lives in benchmark.checkpoints with the other checkpoint formats; these names stay for callers
save_model = checkpoints.save_model
load_model = checkpoints.load_model


def load_official(name: str, path: str | Path) -> torch.nn.Module:
    """An official checkpoint through the model's registered official loader."""
    from benchmark.registry import load_official as _load_official

    return _load_official(name, path)
