"""The repository files a stage's code can read: the import closure of its entry module.

DVC re-runs a stage when one of its ``deps`` changes, so dvc.yaml lists, for every stage, exactly
the files this closure reaches (``tests/test_dvc_deps.py`` checks both directions). The resume
fingerprint of a training (``checkpoints.run_fingerprint``) hashes the same files for the train
stage, so an edit that DVC does not consider a change of the training (a figure caption, a CLI tool)
never restarts a resumed one, and every edit it does consider one does.

The walk is static (``ast``): every ``import`` anywhere in a module counts, lazy ones included, and
a package's ``__init__`` counts whenever one of its modules is imported. The registry imports model
modules by name at run time; the walk adds the module of the stage's own model.
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


def files(entry: str, model: str | None = None) -> list[str]:
    """The closure as sorted repository-relative paths (what dvc.yaml lists for the stage)."""
    return sorted(module_file(m).relative_to(REPO).as_posix() for m in modules(entry, model))


def digest(paths: list[str]) -> str:
    """sha256 over the named files' paths and contents."""
    h = hashlib.sha256()
    for rel in sorted(paths):
        h.update(f"{rel}\0".encode())
        h.update((REPO / rel).read_bytes())
    return h.hexdigest()


TRAIN_ENTRY = "pipelines.train"


def training_code(model: str | None) -> list[str]:
    """The code dependencies of the train stage of ``model``: what a resume fingerprint hashes."""
    return files(TRAIN_ENTRY, model)
