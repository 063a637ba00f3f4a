"""The repository files a stage's code can read: the import closure of its entry module.

DVC re-runs a stage when one of its ``deps`` changes, so dvc.yaml lists, for every stage, exactly
the files this closure reaches (``tests/test_dvc_deps.py`` checks both directions). The resume
fingerprint of a training (``checkpoints.run_fingerprint``) hashes the same files for the train
stage, so an edit that DVC does not consider a change of the training (a figure caption, a CLI tool)
never restarts a resumed one, and every edit it does consider one does.

The walk is static (``ast``): every ``import`` anywhere in a module counts, lazy ones included, and
a package's ``__init__`` counts whenever one of its modules is imported. The registry imports model
modules by name at run time; the walk adds the module of the stage's own model. For a plugin model
(``benchmark.core.plugins``) that is its source: the local file, or every Python file of the installed
package's folder (an absolute path outside the repository), plus the repository modules it imports.
"""
from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("benchmark", "baselines", "msgnn", "pipelines")


def module_file(module: str) -> Path | None:
    base = REPO.joinpath(*module.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


@lru_cache(maxsize=None)
def _direct(module: str) -> frozenset[str]:
    """Repository modules ``module`` imports anywhere in its body, with their parent packages."""
    path = module_file(module)
    pkg = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return _imports(path, pkg)


@lru_cache(maxsize=None)
def _imports(path: Path, pkg: str) -> frozenset[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(p for p in [*parts, base] if p)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
    closed = set()
    for name in found:
        parts = name.split(".")
        closed.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))  # parents run first
    return frozenset(m for m in closed if m.split(".")[0] in PACKAGES and module_file(m) is not None)


def modules(entry: str, model: str | None = None) -> set[str]:
    """Every repository module that ``entry`` (e.g. ``pipelines.train``) can import, for ``model``."""
    from benchmark.core import registry

    extra = registry.model_module(model) if model else None
    seen, todo = set(), _with_parents(entry)
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        todo += _direct(mod) - seen
        if mod == "benchmark.core.registry" and extra:
            todo += _with_parents(extra)
    return seen


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if module_file(m) is not None]


def plugin_files(model: str | None) -> list[str]:
    """The source files of plugin ``model`` (repository-relative where inside it, else absolute); []
    for a built-in model."""
    from benchmark.core import plugins, registry

    if not model or model in registry.BUILTIN or plugins.spec(model) is None:
        return []
    out = []
    for f in plugins.source_files(model):
        p = Path(f).resolve()
        out.append(p.relative_to(REPO).as_posix() if p.is_relative_to(REPO) else p.as_posix())
    return out


def files(entry: str, model: str | None = None) -> list[str]:
    """The closure as sorted repository-relative paths (what dvc.yaml lists for the stage); a plugin
    model adds its source files and the repository modules they import."""
    mods = modules(entry, model)
    extra = plugin_files(model)
    for f in extra:  # a plugin may use suite modules (e.g. benchmark.core.contract)
        for m in _imports(Path(f) if Path(f).is_absolute() else REPO / f, ""):
            mods |= modules(m)
    return sorted({*(module_file(m).relative_to(REPO).as_posix() for m in mods), *extra})


def digest(paths: list[str]) -> str:
    """sha256 over the named files' paths and contents."""
    h = hashlib.sha256()
    for rel in sorted(paths):
        h.update(f"{rel}\0".encode())
        h.update((REPO / rel).read_bytes())  # an absolute path (an installed plugin) stays itself
    return h.hexdigest()


TRAIN_ENTRY = "pipelines.train"


def training_code(model: str | None) -> list[str]:
    """The code dependencies of the train stage of ``model``: what a resume fingerprint hashes."""
    return files(TRAIN_ENTRY, model)
