"""``msgnn-bench plan``: what ``dvc repro`` would run and which downloads it needs, running nothing.

``dvc repro --dry`` cannot say this on a fresh clone: before printing a stage it asks DVC's run
cache whether that stage ran before, which hashes every dependency, and the output of an upstream
stage that has not run yet (``data/rain200h`` before ``prepare@rain200h``) cannot be hashed, so it
stops with a raw "No such file or directory" (DVC 3.67; treeverse/dvc issue 9818, open). Here DVC
is asked only which stages changed (what ``dvc status`` computes, which copes with missing files),
every stage downstream of those is added, and the stages are listed dependencies first, as
``dvc repro`` runs them; then each dataset the listed ``prepare`` stages obtain, and how.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HOW = {"download": "downloaded by the stage (needs network)",
       "manual": "MANUAL STEP: no direct link",
       "embedded": "generated offline"}


def stages_to_run(repo_dir: str = ".") -> tuple[list[tuple[str, str]], int]:
    """``[(stage, cmd)]`` that ``dvc repro`` would run, in its order, and the number of stages."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(repo_dir) as repo, repo.lock:
        graph = repo.index.graph  # an edge goes from a stage to a stage it depends on
        order = list(nx.topological_sort(graph.reverse(copy=False)))
        run = set()
        for stage in order:
            if stage not in run and stage.changed():
                run |= {stage, *nx.ancestors(graph, stage)}
        return [(s.addressing, s.cmd) for s in order if s in run], len(order)


def dataset_lines(prepare_sets: list[str], params: dict) -> list[str]:
    """One line per dataset that the listed ``prepare@<set>`` stages obtain (eval_sets included)."""
    from benchmark.core import runs
    from benchmark.datasets import acquisition, specs, verification

    reg = specs.load_registry()
    out = []
    for ds in prepare_sets:
        extra = ((params.get("datasets") or {}).get(ds) or {}).get("eval_sets") or []
        for name in dict.fromkeys([ds, *extra]):
            spec = reg.get(name)
            dest = runs.eval_set_dir(ds, name)
            if spec is None:
                out.append(f"  {name} (prepare@{ds}): not in the dataset registry")
                continue
            needed = [s for s in spec.splits.values() if not s.optional]
            if spec.source != "embedded" and all(verification.split_ready(dest / s.name, s) for s in needed):
                out.append(f"  {name} (prepare@{ds}): present in {dest}")
                continue
            line = f"  {name} (prepare@{ds}): {HOW.get(spec.source, spec.source)}"
            if spec.source == "manual":
                downloads = dest.parent / "downloads" / name
                names = {n.name for n in needed}
                missing = [a.file for a in spec.archives if (not a.splits or names & set(a.splits))
                           and acquisition._placed_archive(downloads, a) is None]
                line += (f"; archives placed in {downloads}" if not missing else
                         f"; put {', '.join(missing)} in {downloads}/ (`msgnn-bench datasets download {name}` "
                         "prints where to get them)")
            out.append(line)
    return out


def plan_main(argv: list[str] | None = None) -> int:
    import yaml

    ap = argparse.ArgumentParser(prog="msgnn-bench plan",
                                 description="list what `dvc repro` would run and the downloads it needs")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    if not Path("dvc.yaml").is_file():
        print("msgnn-bench plan: error: no dvc.yaml here (run it in the repository root)", file=sys.stderr)
        return 1
    from dvc.exceptions import DvcException

    try:
        todo, total = stages_to_run(".")
    except DvcException as exc:
        print(f"msgnn-bench plan: error: dvc: {exc}", file=sys.stderr)
        return 1
    params = yaml.safe_load(Path(args.params).read_text()) or {}
    print(f"profile {params.get('profile', '?')}: `dvc repro` would run {len(todo)} of {total} stages, in this order:")
    for name, cmd in todo:
        print(f"  {name}: {cmd}")
    sets = [n.split("@", 1)[1] for n, _ in todo if n.startswith("prepare@")]
    if sets:
        print("datasets the prepare stages obtain:")
        for line in dataset_lines(sets, params):
            print(line)
    return 0
