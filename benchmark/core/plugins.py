"""Plugin models: networks that live outside the suite, registered without editing it.

Two ways in (docs/models.md "Adding a model"):

1. an installed package declares builders under the entry-point group ``msgnn_bench.models``
   (``[project.entry-points."msgnn_bench.models"] mynet = "my_pkg.mynet:build"``), found with
   ``importlib.metadata`` without importing the package;
2. a local file named in params.yaml: ``plugins: {mynet: models/mynet.py:build}`` (path relative to
   params.yaml's folder), or the long form ``{mynet: {source: models/mynet.py:build, display: MyNet,
   venue: arXiv, year: 2025}}``.

A builder is a callable returning a ``torch.nn.Module`` that follows the model contract
(``benchmark.core.contract``). Optional attributes on the builder give its table metadata:
``display`` (as tables print it; default the key), ``venue`` (alias ``paper``), ``year``.

``spec(name)`` answers from names alone (no plugin code runs: params validation stays cheap);
``load(name)`` imports the builder and checks the contract once on a tiny probe, raising
``PluginError`` (one line naming the plugin and the problem) for a builder that fails to import, a
name that collides with a built-in model, a builder that returns something that is not a module,
an output of the wrong shape or a bad contract member. This module imports no other suite module at
import time (the registry imports it).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

GROUP = "msgnn_bench.models"
PARAMS_FILE = "params.yaml"
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")  # the same rule as config.check_name (a path component)
PROBE = 24  # side of the probe image: small, yet above the 11x11 SSIM window


class PluginError(ValueError):
    """A plugin that cannot be used; the message names the plugin and the problem."""


@dataclass(frozen=True)
class PluginSpec:
    name: str
    kind: str  # "file" (params.yaml plugins:) | "entry-point" (installed package)
    target: str  # "<path>.py:<attr>" or "<module>:<attr>"
    path: str  # the plugin's source: the .py file, or the installed package's folder / module file
    meta: tuple = ()  # (key, value) pairs given in params.yaml's long form (display, venue, year)

    @property
    def where(self) -> str:
        return f"plugin {self.name!r} ({self.kind} {self.target})"


_declared: dict[str, PluginSpec] | None = None  # params.yaml's plugins: (None: not read yet)
_entry: dict[str, PluginSpec] | None = None
_loaded: dict[str, Callable] = {}
_meta: dict[str, dict] = {}


def _fail(where: str, problem: str) -> PluginError:
    return PluginError(f"{where}: {problem}")


def declare(section: Any, base: str | Path = ".", file: str | Path = PARAMS_FILE) -> dict[str, PluginSpec]:
    """Read params.yaml's ``plugins:`` mapping (``section``; paths relative to ``base``) and make it
    the set of local-file plugins. Returns the specs; a malformed entry is a PluginError."""
    global _declared
    specs: dict[str, PluginSpec] = {}
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise PluginError(f"{file}: plugins must be a mapping name -> 'path/to/file.py:builder'")
    for name, entry in section.items():
        meta: dict = {}
        if isinstance(entry, dict):
            bad = sorted(set(entry) - {"source", "display", "venue", "paper", "year"})
            if bad or "source" not in entry:
                raise PluginError(f"{file}: plugins.{name}: expected 'file.py:builder' or "
                                  f"{{source, display, venue, year}}, got keys {sorted(entry)}")
            meta = {k: v for k, v in entry.items() if k != "source"}
            entry = entry["source"]
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise PluginError(f"{file}: plugins.{name}: plugin name {name!r} is not allowed (it becomes part of a "
                              "file path): use lowercase letters, digits, '_', '.', '-'")
        if not isinstance(entry, str) or ":" not in entry or not entry.rpartition(":")[0].endswith(".py"):
            raise PluginError(f"{file}: plugins.{name}: expected 'path/to/file.py:builder', got {entry!r}")
        path, _, attr = entry.rpartition(":")
        if Path(path).is_absolute() or ".." in Path(path).parts:
            raise PluginError(f"{file}: plugins.{name}: {path!r} must be a path inside the repository "
                              "(relative, no '..'): it is a DVC dependency of the plugin's stages")
        rel = (Path(base) / path) if str(base) not in ("", ".") else Path(path)
        specs[name] = PluginSpec(name, "file", f"{path}:{attr}", rel.as_posix(), tuple(sorted(meta.items())))
    _declared = specs
    return specs


def result_names(params: str | Path = PARAMS_FILE) -> set[str]:
    """Names of params.yaml's ``results:`` (published outputs re-scored as rows of Table 1)."""
    p = Path(params)
    if not p.is_file():
        return set()
    import yaml

    try:
        res = (yaml.safe_load(p.read_text()) or {}).get("results") or {}
    except (yaml.YAMLError, AttributeError):
        return set()
    return set(res) if isinstance(res, dict) else set()


def _local() -> dict[str, PluginSpec]:
    """The local-file plugins: as declared, else read from ./params.yaml (plain YAML, no validation)."""
    if _declared is None:
        p = Path(PARAMS_FILE)
        section = None
        if p.is_file():
            import yaml

            try:
                section = (yaml.safe_load(p.read_text()) or {}).get("plugins")
            except (yaml.YAMLError, AttributeError):
                section = None  # params validation reports it
        return declare(section)
    return _declared


def _source_of(module: str) -> str:
    """The installed package folder (or module file) of ``module``'s top-level package, found without
    importing it."""
    top = module.split(".")[0]
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        found = None
    if found is None:
        return ""
    if found.submodule_search_locations:
        return str(Path(list(found.submodule_search_locations)[0]).resolve())
    return str(Path(found.origin).resolve()) if found.origin else ""


def entry_points(refresh: bool = False) -> dict[str, PluginSpec]:
    """Models declared by installed packages under the ``msgnn_bench.models`` entry-point group."""
    global _entry
    if _entry is None or refresh:
        out: dict[str, PluginSpec] = {}
        for ep in importlib.metadata.entry_points(group=GROUP):
            spec = PluginSpec(ep.name, "entry-point", ep.value, _source_of(ep.value.partition(":")[0]))
            if ep.name in out and out[ep.name].target != ep.value:
                raise _fail(spec.where, f"declared twice (also {out[ep.name].target})")
            out[ep.name] = spec
        _entry = out
    return _entry


def specs() -> dict[str, PluginSpec]:
    """Every plugin, by name (entry points and params.yaml's local files). A name declared both ways
    is an error naming both."""
    local, eps = _local(), entry_points()
    both = sorted(set(local) & set(eps))
    if both:
        n = both[0]
        raise _fail(local[n].where, f"the installed entry point {eps[n].target} uses the same name")
    return {**eps, **local}


def spec(name: str) -> PluginSpec | None:
    return specs().get(name)


def reset() -> None:
    """Forget declared/discovered/loaded plugins (tests; a changed params.yaml)."""
    global _declared, _entry
    _declared, _entry = None, None
    _loaded.clear()
    _meta.clear()


def _import_builder(s: PluginSpec) -> Callable:
    module, _, attr = s.target.rpartition(":")
    try:
        if s.kind == "file":
            path = Path(s.path)
            if not path.is_file():
                raise _fail(s.where, f"{path}: file not found")
            modname = f"msgnn_bench_plugin_{re.sub(r'[^a-z0-9_]', '_', s.name)}"
            mspec = importlib.util.spec_from_file_location(modname, path)
            mod = importlib.util.module_from_spec(mspec)
            sys.modules[modname] = mod  # dataclasses and pickling look modules up by name
            try:
                mspec.loader.exec_module(mod)
            except BaseException:
                sys.modules.pop(modname, None)
                raise
        else:
            mod = importlib.import_module(module)
    except PluginError:
        raise
    except Exception as exc:  # noqa: BLE001 -- any import failure is the plugin's, reported in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise _fail(s.where, f"cannot import: {type(exc).__name__}: {first}") from None
    builder = getattr(mod, attr, None)
    if builder is None:
        raise _fail(s.where, f"{module} has no attribute {attr!r}")
    if not callable(builder):
        raise _fail(s.where, f"{attr} is not callable (a builder returns a torch.nn.Module)")
    return builder


def metadata(name: str) -> dict:
    """display / venue / year of a loaded plugin."""
    return dict(_meta.get(name) or {})


def load(name: str, builtin: set[str] | frozenset[str] = frozenset()) -> Callable:
    """Import and check plugin ``name`` (once); returns its builder. ``builtin``: the built-in model
    names, which a plugin may not reuse."""
    if name in _loaded:
        return _loaded[name]
    s = spec(name)
    if s is None:
        raise PluginError(f"plugin {name!r}: no such plugin (params.yaml plugins: or entry point group {GROUP})")
    if name in builtin:
        raise _fail(s.where, "name collides with a built-in model; choose another name")
    builder = _import_builder(s)
    meta = {"display": getattr(builder, "display", None) or name,
            "venue": getattr(builder, "venue", None) or getattr(builder, "paper", None) or "",
            "year": getattr(builder, "year", None)}
    for k, v in s.meta:
        meta["venue" if k == "paper" else k] = v
    if not isinstance(meta["display"], str) or not isinstance(meta["venue"], str):
        raise _fail(s.where, "display and venue must be strings")
    if meta["year"] is not None and (isinstance(meta["year"], bool) or not isinstance(meta["year"], int)):
        raise _fail(s.where, f"year must be a whole number, got {meta['year']!r}")
    probe(s, builder)
    _meta[name] = meta
    _loaded[name] = builder
    return builder


def probe(s: PluginSpec, builder: Callable) -> None:
    """Build with the defaults and run one tiny forward pass: a module, valid contract members, and an
    output of the input's shape (the last stage of a list/tuple); a PluginError otherwise."""
    import torch  # the contract's rules, read here without importing contract (every stage imports this)

    try:
        model = builder()
    except Exception as exc:  # noqa: BLE001
        raise _fail(s.where, f"the builder raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, torch.nn.Module):
        raise _fail(s.where, f"the builder returned {type(model).__name__}, not a torch.nn.Module")
    for member, kind in (("needs_exemplar", bool), ("weightless", bool), ("pad_multiple", int)):
        v = getattr(model, member, None)
        if v is not None and (not isinstance(v, kind) or (kind is int and (isinstance(v, bool) or v < 1))):
            raise _fail(s.where, f"contract member {member} must be a {'positive int' if kind is int else 'bool'}, "
                                 f"got {v!r}")
    if getattr(model, "own_loss", None) is not None and not callable(model.own_loss):
        raise _fail(s.where, "contract member own_loss must be a method own_loss(outputs, rainy, clean)")
    m = int(getattr(model, "pad_multiple", 1))
    side = -(-PROBE // m) * m
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, side, side, generator=g)
    model.eval()
    try:
        with torch.no_grad():
            if getattr(model, "needs_exemplar", False):
                out = model(x, exemplar=torch.rand(1, 3, side, side, generator=g))
            else:
                out = model(x)
        if isinstance(out, dict):
            out = out.get("out")
        if isinstance(out, (list, tuple)) and out:
            out = out[-1]
    except Exception as exc:  # noqa: BLE001
        raise _fail(s.where, f"forward on a 1x3x{side}x{side} probe raised {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(x.shape):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise _fail(s.where, f"output of the wrong shape: {got} for a {tuple(x.shape)} input "
                             "(a model returns the derained RGB image, [B, 3, H, W])")


def source_files(name: str) -> list[str]:
    """The files of plugin ``name``'s source: its .py file, or every .py file of its package folder."""
    s = spec(name)
    if s is None or not s.path:
        return []
    p = Path(s.path)
    if p.is_dir():
        return sorted(f.as_posix() for f in p.rglob("*.py") if "__pycache__" not in f.parts)
    return [p.as_posix()]
