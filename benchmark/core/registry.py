"""Model registry: one name → one builder function, and every model's metadata.

Builders are plain functions whose keyword defaults are the paper's settings, so that
``build_model("prenet")`` is the published network and params.yaml only lists deliberate
changes. The model modules are imported explicitly on first use (no folder scanning),
so a typo in a name fails loudly instead of silently building nothing.

``MODELS`` is the one list of models: display name, venue, year and the module that registers
each. Its order is the paper's column order, which every table, figure and page follows. Reading
it imports no model module.
"""
from __future__ import annotations

import fnmatch
import importlib
from dataclasses import dataclass
from typing import Callable

import torch.nn as nn


@dataclass(frozen=True)
class ModelInfo:
    name: str  # registry key (for a baseline also its file name, baselines/<name>.py)
    display: str  # as the paper's tables print it
    venue: str  # where the method was published ("" for the rainy-input row)
    year: int | None
    module: str  # the module whose import registers the builder


MODELS: tuple[ModelInfo, ...] = (
    ModelInfo("input", "Rainy input", "", None, "benchmark.core.identity"),
    ModelInfo("rescan", "RESCAN", "ECCV", 2018, "baselines.rescan"),
    ModelInfo("prenet", "PReNet", "CVPR", 2019, "baselines.prenet"),
    ModelInfo("spanet", "SPANet", "CVPR", 2019, "baselines.spanet"),
    ModelInfo("dcsfn", "DCSFN", "ACM MM", 2020, "baselines.dcsfn"),
    ModelInfo("mspfn", "MSPFN", "CVPR", 2020, "baselines.mspfn"),
    ModelInfo("rcdnet", "RCDNet", "CVPR", 2020, "baselines.rcdnet"),
    ModelInfo("dualgcn", "DualGCN", "AAAI", 2021, "baselines.dualgcn"),
    ModelInfo("moss", "MOSS", "CVPR", 2021, "baselines.moss"),
    ModelInfo("msgnn", "MSGNN", "IJCAI", 2024, "msgnn"),
)
_INFO = {m.name: m for m in MODELS}
ORDER: tuple[str, ...] = tuple(m.name for m in MODELS)  # the paper's column order
DISPLAY: dict[str, str] = {m.name: m.display for m in MODELS}

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_OFFICIAL: dict[str, Callable[..., nn.Module]] = {}
_loaded = False


def model_info(name: str) -> ModelInfo:
    if name not in _INFO:
        raise UnknownModelError(f"unknown model {name!r}; valid names: {', '.join(sorted(_INFO))}")
    return _INFO[name]


def display_name(name: str) -> str:
    """The paper's spelling of model ``name``; an unknown name (an ablation variant) as is."""
    return DISPLAY.get(name, name)


def paper_rank(name: str) -> int:
    """Position of ``name`` in the paper's column order; unknown names sort after every model."""
    return ORDER.index(name) if name in _INFO else len(ORDER)


class UnknownModelError(KeyError):
    """Raised for a model name that no builder is registered under."""

    def __str__(self) -> str:  # KeyError would otherwise print the message with quotes
        return str(self.args[0])


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``builder`` under ``name`` (lowercase, unique)."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS and _MODELS[name] is not builder:
            raise ValueError(f"model name {name!r} is registered twice")
        _MODELS[name] = builder
        return builder

    return wrap


def register_official(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering the official-weights loader of model ``name``.

    A loader is ``loader(source, **builder_kwargs) -> nn.Module``: ``source`` is a checkpoint path
    or an already-read mapping {official parameter name: tensor/array}; it returns our network with
    those weights (strictly: every official tensor used, every one of ours filled).
    """

    def wrap(loader: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _OFFICIAL and _OFFICIAL[name] is not loader:
            raise ValueError(f"official loader for {name!r} is registered twice")
        _OFFICIAL[name] = loader
        return loader

    return wrap


def model_module(name: str) -> str | None:
    """The module that registers model ``name``: ``baselines.<name>`` (file name = key), ``msgnn``,
    or ``benchmark.core.identity`` for ``input``; None for a name no module provides."""
    info = _INFO.get(name)
    return info.module if info else None


def _load(name: str | None = None) -> None:
    """Import the module of model ``name`` only, or (``name`` None) every model module."""
    global _loaded
    if name is not None:
        module = model_module(name)
        if module is not None:
            importlib.import_module(module)
            return
    if not _loaded:
        _loaded = True
        for info in MODELS:
            importlib.import_module(info.module)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registered names matching a shell-style ``pattern``."""
    _load()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def get_builder(name: str) -> Callable[..., nn.Module]:
    if name not in _MODELS:
        _load(name)
    if name not in _MODELS:
        _load()  # an unknown name: the message lists every model
    if name not in _MODELS:
        raise UnknownModelError(f"unknown model {name!r}; valid names: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def build_model(name: str, **overrides) -> nn.Module:
    """Build the registered model ``name``; ``overrides`` replace the builder's paper defaults."""
    builder = get_builder(name)
    try:
        return builder(**overrides)
    except TypeError as exc:  # an unknown keyword in params.yaml should name the model and the key
        raise ValueError(f"cannot build model {name!r} with {overrides}: {exc}") from exc


def official_models() -> list[str]:
    """Names of the models that can load official weights."""
    _load()
    return sorted(_OFFICIAL)


def load_official(name: str, source, **kwargs) -> nn.Module:
    """Our ``name`` network holding official weights (``source``: path or official-keyed mapping)."""
    get_builder(name)  # unknown names get the usual message
    if name not in _OFFICIAL:
        raise ValueError(f"model {name!r} has no official-weights loader (available for: {', '.join(official_models())})")
    return _OFFICIAL[name](source, **kwargs).eval()
