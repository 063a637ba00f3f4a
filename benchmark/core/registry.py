"""Model registry: one name → one builder function, and every model's metadata.

Builders are plain functions whose keyword defaults are the paper's settings, so that
``build_model("prenet")`` is the published network and params.yaml only lists deliberate
changes. The model modules are imported explicitly on first use (no folder scanning),
so a typo in a name fails loudly instead of silently building nothing.

``MODELS`` is the one list of models: display name, venue, year and the module that registers
each. Its order is the paper's column order, which every table, figure and page follows. Reading
it imports no model module.

Plugin models (``benchmark.core.plugins``: an installed package's ``msgnn_bench.models`` entry
point, or a local file named in params.yaml ``plugins:``) join the same tables when first loaded:
after the built-ins in ``paper_rank`` order, with the display name, venue and year their builder
declares.
"""
from __future__ import annotations

import fnmatch
import importlib
from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

from benchmark.core import plugins


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


BUILTIN: frozenset[str] = frozenset(ORDER)


def _collisions() -> None:
    """A plugin may not reuse a built-in model's name (PluginError naming it)."""
    for name, s in plugins.specs().items():
        if name in BUILTIN:
            raise plugins.PluginError(f"{s.where}: name collides with a built-in model; choose another name")


def is_model(name: str) -> bool:
    """A built-in model or a declared plugin (answered from names: no model code is imported)."""
    _collisions()
    return name in _INFO or (isinstance(name, str) and plugins.spec(name) is not None)


def known_names() -> list[str]:
    return sorted({*ORDER, *plugins.specs()})


def _plugin(name: str) -> bool:
    """Load plugin ``name`` into the tables if it is one (PluginError if it breaks the contract)."""
    if name in _INFO or not isinstance(name, str) or plugins.spec(name) is None:
        return name in _INFO
    builder = plugins.load(name, BUILTIN)
    meta = plugins.metadata(name)
    _INFO[name] = ModelInfo(name, meta["display"], meta["venue"], meta["year"], "")
    DISPLAY[name] = meta["display"]
    _MODELS[name] = builder
    return True


def model_info(name: str) -> ModelInfo:
    if not _plugin(name):
        raise UnknownModelError(f"unknown model {name!r}; valid names: {', '.join(known_names())}")
    return _INFO[name]


PUBLISHED = "{name} (published outputs, re-scored)"  # Table 1's label of a results: entry
_RECORDED: dict[str, str] = {}  # display names read from run data (metrics.json "display")


def record_display(name: str, display: str | None) -> None:
    """Remember the display name a run's ``metrics.json`` carries (plugins and published outputs: the
    evaluate/score stage wrote it), so that report stages name those rows without importing plugin code."""
    if isinstance(display, str) and display and name not in BUILTIN:
        _RECORDED[name] = display


def display_name(name: str) -> str:
    """The paper's spelling of model ``name`` (a plugin's declared display name, as loaded here or as its
    runs recorded it); an unknown name (an ablation variant) as is. A plugin that cannot be loaded here
    shows its key."""
    if name not in DISPLAY and name in _RECORDED:
        return _RECORDED[name]
    if name not in DISPLAY:
        try:
            _plugin(name)
        except plugins.PluginError:
            return name
    if name not in DISPLAY and name in plugins.result_names():
        return PUBLISHED.format(name=name)
    return DISPLAY.get(name, name)


def paper_rank(name: str) -> int:
    """Position of ``name`` in the paper's column order; plugins follow the built-ins (by name),
    unknown names sort after every model."""
    if name in ORDER:
        return ORDER.index(name)
    try:
        names = sorted(plugins.specs())
    except plugins.PluginError:
        names = []
    return len(ORDER) + (names.index(name) if name in names else len(names))


class UnknownModelError(KeyError):
    """Raised for a model name that no builder is registered under."""

    def __str__(self) -> str:  # KeyError would otherwise print the message with quotes
        return str(self.args[0])


def plugin_models() -> list[str]:
    """Names of the declared plugins (entry points and params.yaml ``plugins:``), none imported."""
    return sorted(plugins.specs())


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
    return info.module if info and info.module else None


def _load(name: str | None = None) -> None:
    """Import the module of model ``name`` only, or (``name`` None) every model module and plugin."""
    global _loaded
    if name is not None:
        module = model_module(name)
        if module is not None:
            importlib.import_module(module)
            return
        if name not in _INFO and _plugin(name):
            return
    if not _loaded:
        _loaded = True
        for info in MODELS:
            importlib.import_module(info.module)
    for plugin in sorted(plugins.specs()):
        _plugin(plugin)


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern``: the built-ins sorted, then the plugins."""
    _load()
    return sorted((n for n in _MODELS if fnmatch.fnmatch(n, pattern)), key=lambda n: (n not in BUILTIN, n))


def get_builder(name: str) -> Callable[..., nn.Module]:
    _collisions()
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
