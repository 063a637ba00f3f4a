"""dvc.yaml lists exactly what a stage reads: a stale result never looks fresh, and a fresh one
never looks stale.

* coverage: every repository file a stage's code can import (``benchmark.core.deps``: walked
  statically, transitively, including the registry's import of the stage's model module) is
  covered by one of the stage's deps;
* minimality: every Python file the stage's deps cover is in that closure (a reporting edit must not
  retrain a model);
* every params.yaml key the stage resolves is covered by one of its params deps;
* the resume fingerprint hashes exactly the train stage's code deps;
* in a scratch copy with a recorded lock, real `dvc status` after edits: a figures module makes only
  report/site stale, a metric module the evaluations and what reads them (never prepare), the engine
  the trainings and their dependants, a CLI-only module no stage, one baseline's file only its stages.
"""
from __future__ import annotations

import copy
import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmark.core import ablations, config, deps

from .conftest import REPO, use_profile

PACKAGES = ("benchmark", "baselines", "msgnn", "pipelines")
NOT_OUTPUTS = {"tracking"}  # decides where MLflow logs, never what a stage writes (see dvc.yaml)


def _expand(params: dict) -> list[dict]:
    """dvc.yaml's stages with matrix items, ${key} and ${profile} substituted (DVC's own rules)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    out = []
    for name, st in stages.items():
        if "foreach" in st:  # foreach over a params dict: ${key} = the dict key, ${item.x} = its fields
            body = st["do"]
            for key, item in (params[st["foreach"][2:-1]] or {}).items():
                def fsub(s: str, key=key, item=item) -> str:
                    s = s.replace("${key}", key).replace("${profile}", params["profile"])
                    return re.sub(r"\$\{item\.(\w+)\}", lambda m: str(item[m.group(1)]), s)

                out.append({"name": f"{name}@{key}", "cmd": fsub(body["cmd"]),
                            "deps": [fsub(next(iter(e)) if isinstance(e, dict) else e) for e in body.get("deps") or []],
                            "params": [fsub(next(iter(e)) if isinstance(e, dict) else e) for e in body.get("params") or []]})
            continue
        axes = {a: (params[v[2:-1]] if isinstance(v, str) else v) for a, v in st.get("matrix", {}).items()}
        for combo in itertools.product(*axes.values()) if axes else [()]:
            combo = tuple(str(c) for c in combo)  # seeds are numbers
            item = dict(zip(axes, combo))

            def sub(s: str, item=item) -> str:
                s = s.replace("${key}", "-".join(item.values())).replace("${profile}", params["profile"])
                s = s.replace("${ablation_dataset}", str(params.get("ablation_dataset", "")))
                return re.sub(r"\$\{item\.(\w+)\}", lambda m: item[m.group(1)], s)

            def paths(entries):
                return [sub(next(iter(e)) if isinstance(e, dict) else e) for e in entries or []]

            out.append({"name": name + ("@" + "-".join(combo) if combo else ""), "cmd": sub(st["cmd"]),
                        "deps": paths(st.get("deps")), "params": paths(st.get("params"))})
    return out


def _model_of(cmd: str) -> str | None:
    """The model a stage builds: ``--model M``, MSGNN for the ablation grid (``--group``), else none."""
    args = shlex.split(cmd)
    if "--group" in args:
        return "msgnn"
    return args[args.index("--model") + 1] if "--model" in args else None


def _entry(cmd: str) -> str:
    return shlex.split(cmd)[2]  # python -m pipelines.<stage>


def _reachable(start: str, model: str | None) -> set[str]:
    return set(deps.files(start, model))


def _covered(path: str, deps_: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps_)


def _code_files(deps_: list[str]) -> set[str]:
    """The repository Python files that a stage's deps cover (folders expanded)."""
    out = set()
    for d in deps_:
        path = REPO / d
        if path.is_dir():
            out.update(p.relative_to(REPO).as_posix() for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        elif path.suffix == ".py":
            out.add(d)
    return out


def _with_official(params: dict) -> dict:
    """The params with the paper profile's official runs, so that the official stages are expanded too."""
    params = copy.deepcopy(params)
    params["official_runs"] = params["profiles"]["paper"]["official"]
    return params


def test_every_imported_repository_file_is_a_dependency(repo_params):
    checked = 0
    for st in _expand(_with_official(repo_params)):
        files = _reachable(_entry(st["cmd"]), _model_of(st["cmd"]))
        missing = sorted(f for f in files if not _covered(f, st["deps"]))
        assert not missing, f"{st['name']}: imports {missing} but dvc.yaml does not list them as deps"
        checked += 1
    assert checked >= 1 + 9 + 9 + 1 + 1  # prepare, trains, evaluates, evaluate_input, report (one dataset)


def test_every_code_dependency_is_imported(repo_params):
    """Minimality: a stage depends on no Python file its code cannot import."""
    checked = 0
    for st in _expand(_with_official(repo_params)):
        extra = sorted(_code_files(st["deps"]) - _reachable(_entry(st["cmd"]), _model_of(st["cmd"])))
        assert not extra, f"{st['name']}: depends on {extra}, which its code never imports; drop them from dvc.yaml"
        checked += 1
    assert checked >= 1 + 9 + 9 + 1 + 1


@pytest.mark.parametrize("module, stages", [
    ("benchmark/reporting/figures.py", {"report", "site"}),
    ("benchmark/reporting/tables.py", {"report"}),
    ("benchmark/evaluation/metrics.py", {"train", "evaluate", "replicate", "ablation", "report", "official"}),
    ("benchmark/weights/registry.py", {"official", "official_report"}),
    ("benchmark/reporting/official.py", {"official_report"}),
    ("benchmark/training/engine.py", {"train", "replicate", "ablation"}),
    ("benchmark/datasets/acquisition.py", {"prepare"}),
    *[(f"benchmark/tools/{m}.py", set()) for m in
      ("cli", "perf", "grid", "memory", "derain", "gate", "tiling", "datasets_cli", "weights_cli")],
])
def test_a_module_edit_reaches_exactly_the_stages_that_import_it(repo_params, module, stages):
    """By import walk over every stage of the expanded pipeline: which stage kinds a module reaches."""
    params = copy.deepcopy(repo_params)
    params["extra_seeds"] = [1]  # the replicate stages exist only with extra seeds
    params["official_runs"] = params["profiles"]["paper"]["official"]  # and the official ones with a list
    kind = lambda st: st["name"].split("@")[0].removesuffix("_msgnn").removesuffix("_input")  # noqa: E731
    expanded = _expand(params)
    assert {kind(st) for st in expanded} == {"prepare", "train", "evaluate", "replicate", "ablation", "report", "site",
                                             "official", "official_report"}
    reached = {kind(st) for st in expanded if module in _reachable(_entry(st["cmd"]), _model_of(st["cmd"]))}
    assert reached == stages


def test_stages_import_only_their_own_model(repo_params):
    # the reason a baseline's stages may omit the other models' files: they cannot import them
    files = _reachable("pipelines.train", "rescan")
    assert "baselines/rescan.py" in files and "baselines/common.py" in files
    assert not any(f.startswith("msgnn/") or f == "baselines/dcsfn.py" for f in files)
    assert not any(f.startswith("baselines/") for f in _reachable("pipelines.train", "msgnn"))
    # and at run time the registry imports exactly that module
    code = ("import sys; from benchmark.core.registry import build_model; build_model('rescan'); "
            "print(sorted(m for m in sys.modules if m.startswith(('baselines', 'msgnn'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['baselines', 'baselines.common', 'baselines.rescan']"


class _Recorder(dict):
    """A params mapping that records the dotted path of every key read through it."""

    def __init__(self, data: dict, path: str, log: set[str], absent: set[str] | None = None):
        super().__init__(data)
        self._path, self._log = path, log
        self._absent = set() if absent is None else absent  # keys looked up but not there

    def _key(self, key) -> str:
        return f"{self._path}.{key}" if self._path else str(key)

    def _wrap(self, key, value):
        self._log.add(self._key(key))
        return _Recorder(value, self._key(key), self._log, self._absent) if isinstance(value, dict) else value

    def __getitem__(self, key):
        return self._wrap(key, super().__getitem__(key))

    def get(self, key, default=None):
        if key not in self:
            self._absent.add(self._key(key))  # adding that key would change what the stage does
            return default
        return self._wrap(key, super().get(key, default))


def _leaves(log: set[str]) -> set[str]:
    return {p for p in log if not any(q.startswith(p + ".") for q in log)}


def _resolved_keys(params: dict, profile: str):
    """(stage, its params entries, every dotted key its run config resolves) for the stages that
    resolve one (trainings, evaluations, replicate, ablation), with ``profile`` active."""
    params = copy.deepcopy(params)
    use_profile(params, profile)  # every matrix axis of that profile, the ablation groups included
    for st in _expand(params):
        model = _model_of(st["cmd"])
        if st["name"].startswith("prepare@"):  # writes data from the dataset's section only
            d = st["name"].split("@")[1]
            assert {f"datasets.{d}", f"profiles.{profile}.dataset_overrides", "profile"} <= set(st["params"])
        args = shlex.split(st["cmd"])
        if st["name"].startswith("official@"):  # reads no params key: the command line carries its entry
            assert not st["params"] and "--checkpoint" in args and "--on" in args
            continue
        group = args[args.index("--group") + 1] if "--group" in args else None
        if model is None and group is None:
            continue
        log: set[str] = set()
        absent: set[str] = set()
        rec = _Recorder(params, "", log, absent)
        if group is not None:  # the ablation stage resolves each variant of its group
            cfgs = [ablations.resolve(v, 0, rec) for v in ablations.group_variants(group, rec)]
        else:
            cfgs = [config.resolve(model, args[args.index("--dataset") + 1], rec)]
        if st["name"].startswith("evaluate") or (group is None and "pipelines.replicate" in st["cmd"]):
            for e in cfgs[0].dataset_cfg.get("eval_sets") or []:  # evaluate reads each eval set's section
                rec["datasets"].get(e, {})
        if any(m in st["cmd"] for m in ("pipelines.evaluate", "pipelines.replicate")):
            log.add("report.images")  # evaluate always saves the report's figure images
        keep = lambda keys: {p for p in keys if p.split(".")[0] not in NOT_OUTPUTS}  # noqa: E731
        yield st, keep(log), keep(absent)


@pytest.mark.parametrize("profile", ["quick", "ci", "paper"])
def test_params_deps_cover_every_resolved_key(repo_params, profile):
    for st, log, _ in _resolved_keys(repo_params, profile):
        missing = sorted(p for p in _leaves(log) if not _covered(p.replace(".", "/"),
                                                                  [d.replace(".", "/") for d in st["params"]]))
        assert not missing, f"{st['name']} ({profile}): resolves {missing} without a params dep"


def test_params_deps_are_no_wider_than_what_stages_read(repo_params):
    """The other way: every params entry holds a key the stage resolves, and none is wider than one
    key it could name instead. DVC rewrites the whole dvc.lock, params values included, after every
    stage (docs/running-the-paper.md "The rehearsal"), and an unread key would rerun the stage for
    nothing. "Could name": over the stage's instances in every profile, all the keys read under the
    entry sit below a single child of it, which exists in every instance (a missing key is a DVC
    error). ``profiles.<p>.models`` and ``datasets`` (evaluations: the eval sets' sections) pass as
    several children are read in some instance; ``ablations`` as group ``all`` reads every variant."""
    children: dict[tuple[str, int], list[set[str] | None]] = {}
    names: dict[tuple[str, int], str] = {}  # (stage template, entry index) -> the entry, as expanded
    for profile in ("quick", "ci", "paper"):
        for st, log, absent in _resolved_keys(repo_params, profile):
            template = st["name"].split("@")[0]
            for i, entry in enumerate(st["params"]):
                below = {k for k in log if k == entry or k.startswith(entry + ".")}
                assert below, f"{st['name']} ({profile}): params entry {entry!r} is never read"
                # the children read through it, and those looked up but absent (adding one changes the
                # stage's result, and naming an absent key is a DVC error): one present child = too wide
                kids = {k[len(entry) + 1:].split(".")[0] for k in below if k != entry}
                missing = {k[len(entry) + 1:].split(".")[0] for k in absent if k.startswith(entry + ".")}
                children.setdefault((template, i), []).append(kids if len(kids | missing) == 1 and kids else None)
                names[(template, i)] = entry
    wide = sorted(f"{t}: {names[t, i]} (only reads {'/'.join(sorted(set().union(*seen)))} below it)"
                  for (t, i), seen in children.items() if all(s is not None for s in seen))
    assert not wide, f"entries that only ever hold one read child (name that key instead): {wide}"


def test_resume_fingerprint_hashes_exactly_the_code_deps_of_training(repo_params):
    for st in _expand(repo_params):
        if st["name"].startswith("train"):
            code = _code_files(st["deps"])
            assert code == set(deps.training_code(_model_of(st["cmd"]))), st["name"]


def test_resume_fingerprint_ignores_a_reporting_edit_and_sees_an_engine_edit(monkeypatch):
    before = deps.digest(deps.training_code("prenet"))
    assert "benchmark/reporting/figures.py" not in deps.training_code("prenet")
    assert "benchmark/tools/cli.py" not in deps.training_code("prenet")
    assert {"benchmark/training/engine.py", "baselines/prenet.py"} <= set(deps.training_code("prenet"))
    assert deps.digest(deps.training_code("prenet")) == before


def _scratch_repo(tmp_path: Path) -> Path:
    """The working tree's versions of every non-ignored file, as a fresh git + DVC repository."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    dst = tmp_path / "repo"
    for f in filter(None, files):
        if (REPO / f).is_file() and not (REPO / f).is_symlink():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dst / f)
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    for key, value in (("user.name", "test"), ("user.email", "test@example.invalid"), ("commit.gpgsign", "false")):
        subprocess.run(["git", "config", key, value], cwd=dst, check=True)  # DVC's experiment commits too
    _git_commit(dst, "scratch")
    return dst


def _git_commit(repo: Path, message: str) -> None:
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", message], cwd=repo, check=True)


def _dvc(repo: Path, *args: str) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    out = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _stale_after_edit(repo: Path, path: Path) -> set[str]:
    """The stages `dvc status` calls stale once a comment is appended to ``path`` (restored after)."""
    original = path.read_text()
    path.write_text(original + "\n# edited\n")
    try:
        return _stale(repo)
    finally:
        path.write_text(original)


def _stale(repo: Path) -> set[str]:
    """Stage names `dvc status` reports (in-process: a DVC start per call would dominate the test)."""
    from dvc.repo import Repo

    with Repo(str(repo)) as r:
        return {name.rpartition(":")[2] for name in r.status()}  # keys are "<path>/dvc.yaml:<stage>"


def placeholder_outputs(repo: Path, models: list[str]) -> None:
    """Stand-in outputs of the train/evaluate stages of ``models`` (+ input), of the ablation stages
    (``params.yaml``'s groups and seeds), of report and site, for a `dvc commit` that records a lock
    without training anything."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key in ["input-rain-synth", *(f"{m}-rain-synth" for m in models)]:
        if not key.startswith("input-"):
            (repo / f"runs/train/{key}").mkdir(parents=True, exist_ok=True)
            for f in ["model.pt", "train_log.csv"]:
                (repo / f"runs/train/{key}/{f}").write_text("step,loss\n1,0.5\n")
        (repo / f"runs/eval/{key}/samples").mkdir(parents=True)
        (repo / f"runs/eval/{key}/per_image.csv").write_text("x\n")
        (repo / f"runs/eval/{key}/metrics.json").write_text("{}")
        (repo / f"runs/eval/{key}/headline.json").write_text("{}")
    for group, seed in itertools.product(params["ablation_groups"], params["seeds"]):
        for kind in ("train", "eval"):
            (repo / f"runs/{kind}/ablation-{group}-s{seed}").mkdir(parents=True)
            (repo / f"runs/{kind}/ablation-{group}-s{seed}/placeholder").write_text("x\n")
        (repo / f"runs/eval/ablation-{group}-s{seed}.json").write_text("{}")
        (repo / f"runs/eval/ablation-{group}-s{seed}.headline.json").write_text("{}")
    tables = [f"table{i}.{x}" for i in range(1, 6) for x in ("md", "csv", "tex")]
    for f in [*tables, "fig7.csv", "figures/fig7_subnetworks.png", "figures/training_curves.png", "index.html",
              "site/x.png", "official.md", "official.csv", "official.tex"]:
        (repo / "reports" / f).parent.mkdir(parents=True, exist_ok=True)
        (repo / "reports" / f).write_text("x")


def test_dvc_status_sees_code_and_params_edits(tmp_path):
    """A lock recorded over placeholder outputs (`dvc commit`, no training), then edits."""
    repo = _scratch_repo(tmp_path)
    subprocess.run([sys.executable, "-m", "benchmark.tools.cli", "profile", "ci"], cwd=repo, check=True,
                   capture_output=True)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    names = [st["name"] for st in _expand(params)]
    for d in ["data/rain-synth/train", "data/eval_sets/rain-synth"]:
        (repo / d).mkdir(parents=True)
    (repo / "data/rain-synth/train/x.png").write_bytes(b"x")
    placeholder_outputs(repo, params["trained_models"])
    _dvc(repo, "commit", "-f", "-q")
    assert _stale(repo) == set()

    def stale_after_edit(rel: str) -> set[str]:
        return _stale_after_edit(repo, repo / rel)

    kinds = lambda prefix: {n for n in names if n.split("@")[0] in prefix}  # noqa: E731
    assert stale_after_edit("benchmark/reporting/figures.py") == {"report", "site"}
    assert stale_after_edit("benchmark/reporting/tables.py") == {"report"}
    metric_stages = stale_after_edit("benchmark/evaluation/metrics.py")
    assert kinds({"evaluate", "evaluate_msgnn", "evaluate_input"}) <= metric_stages
    assert not any(n.startswith(("prepare", "site")) for n in metric_stages)
    assert stale_after_edit("benchmark/training/engine.py") == kinds({"train", "train_msgnn", "ablation"})
    for tool in ("cli", "perf", "grid", "memory", "derain", "gate", "tiling"):
        assert stale_after_edit(f"benchmark/tools/{tool}.py") == set(), tool

    text = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(text.replace("    eval: {save_images: 1}",
                                                   "    eval: {save_images: 1, quantise: truncate}"))
    stale = _stale(repo)
    assert {n for n in names if n.startswith("evaluate")} <= stale
    (repo / "params.yaml").write_text(text)

    assert stale_after_edit("baselines/dcsfn.py") == {"train@dcsfn-rain-synth", "evaluate@dcsfn-rain-synth"}


def test_eval_only_sets_live_in_the_prepare_stage_output(tmp_path, monkeypatch, tiny_params):
    """Test-only sets are read from data/eval_sets/<train set>/ (a declared output of prepare)."""
    from pipelines import evaluate, prepare

    monkeypatch.chdir(tmp_path)
    tiny_params["tracking"]["enabled"] = False
    prepare.prepare("rain-synth", tiny_params)
    assert (tmp_path / "data/eval_sets/rain-synth").is_dir()  # exists even without eval sets
    extra = tmp_path / "data/eval_sets/rain-synth/rain12"
    shutil.copytree(tmp_path / "data/rain-synth/test", extra / "test")
    tiny_params["datasets"]["rain-synth"]["eval_sets"] = ["rain-synth", "rain12"]
    res = evaluate.evaluate("input", "rain-synth", params=tiny_params, progress=False)
    assert res["results"]["rain12"]["n_images"] == res["results"]["rain-synth"]["n_images"] == 2
