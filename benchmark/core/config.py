"""params.yaml → one validated, resolved view per (model, dataset).

Resolution order for the training settings of one run (later wins):
``train`` → ``profiles.<profile>.train`` → ``models.<m>.train`` → ``profiles.<profile>.models.<m>.train``
→ ``models.<m>.own`` (only when the resolved ``recipe`` is ``own``; the profile's iteration budget is kept
unless the own recipe sets one and the profile is ``paper``).

Every section is checked against the dataclasses below: an unknown key is an error that names
the key and the file, because a misspelt ``lr`` silently falling back to a default would cost a
day of training.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from benchmark.core.config_types import RANGES, checked, model_args_problem
from benchmark.core.runs import run_key

PARAMS_FILE = "params.yaml"


class ConfigError(ValueError):
    """A problem in params.yaml; the message names the key and what to do."""


@dataclass(frozen=True)
class TrainCfg:
    iters: int | None = None  # exactly one of iters / epochs; epochs → iters via the training-set size
    epochs: float | None = None
    # An epoch's samples per training image (random crops): 1, or an own recipe's count, e.g. MOSS's
    # dataset repeats its file list ``data_augment`` = 5 times. ``grid_stride`` > 0 instead counts, per
    # image, the patch x patch windows at that stride (PReNet cuts every image into such a grid).
    samples_per_image: float = 1.0
    grid_stride: int = 0
    patch: int = 64
    batch: int = 8
    lr: float = 5e-4
    optimizer: str = "adam"  # adam | adamw
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: str = "multistep"  # multistep | exp | constant
    milestones: tuple[float, ...] = (0.6, 0.8)  # fractions of the run: the paper's epochs 300/400 of 500
    gamma: float = 0.1
    decay: float = 0.8  # exp schedule: lr·decay^(step/decay_every) + min_lr (MSPFN)
    decay_every: int = 20000
    min_lr: float = 0.0
    loss: str = "neg_ssim"  # neg_ssim | l1 | mse | charbonnier | own (the model's own_loss)
    stage_reduction: str = "last"  # last | sum
    recipe: str = "shared"  # shared | own
    hflip: bool = False
    amp: str = "off"  # off | bf16 (autocast, no scaler) | fp16 (autocast + GradScaler)
    tf32: bool = False  # TF32 matmul/conv math on Ampere+ GPUs (off: true fp32, the reference)
    accumulate: int = 1  # micro-batches per optimiser step: batch/accumulate samples each, same samples
    workers: int = 0  # DataLoader worker processes (0: decode in the training process)
    pin_memory: bool = False  # page-locked host batches (faster copies to a GPU)
    persistent_workers: bool = False  # keep workers alive between loader passes
    grad_clip: float = 0.0
    seed: int = 0
    log_every: int = 10
    val_every: int = 0  # 0 = only at the end
    val_images: int = 4
    ckpt_every: int = 100
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    source: str = ""  # where an own recipe comes from (paper section / official file)


@dataclass(frozen=True)
class EvalCfg:
    quantise: str = "round"  # round | truncate (PReNet's official test script truncates)
    crop_border: int = 0
    y_mode: str = "uint8"  # uint8: MATLAB rgb2ycbcr on uint8 (rounded Y) | float: PReNet's statistic scripts
    save_images: int = 4  # derained samples written and logged as artifacts
    lpips: bool = True
    lpips_weights: str | None = None  # AlexNet ImageNet weights; None → TORCH_HOME lookup
    exemplar: str = "train"  # MSGNN test-time exemplar source: train (paper intent) | test (official code)


@dataclass(frozen=True)
class TrackingCfg:
    enabled: bool = True
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "msgnn-bench"


# The scoring protocol of the paper's own tables (a name in benchmark/evaluation/protocols.py, which
# re-exports it as ``protocols.PAPER``): the only scoring code MSGNN released is config/eval.py (README
# "Scoring protocols" gives the evidence). It lives here because config (below the evaluation layer)
# needs it as the default of ``report.protocol``.
PAPER_PROTOCOL = "msgnn"


@dataclass(frozen=True)
class ReportCfg:
    """Figures and the HTML page (``report:`` in params.yaml); see benchmark/reporting/figures.py."""

    images: dict = field(default_factory=dict)  # eval set → image ids shown in the grids (evaluate saves them)
    crops: dict = field(default_factory=dict)  # "<set>/<id>" → [x, y, size] fractions; default: centre
    ablation_runs: tuple[str, ...] = ()  # run keys of the Figs. 8/9 grid (ablation variants)
    ablation_image: str = ""  # "<set>/<id>" the ablation grid shows
    tile: int = 160  # tile width of the comparison grids, pixels
    # the headline scoring protocol: main cells of the tables, figure captions and axes, the page
    protocol: str = PAPER_PROTOCOL


_TOP_KEYS = {"profile", "run_datasets", "baselines", "trained_models", "train", "eval", "tracking", "models",
             "datasets", "profiles", "report", "seeds", "extra_seeds", "ablation_dataset", "ablation_variants",
             "ablation_groups", "ablations", "official_runs", "plugins", "plugin_runs", "results",
             "score_runs"}
_MODEL_KEYS = {"args", "train", "own"}
_PROFILE_KEYS = {"datasets", "models", "train", "eval", "dataset_overrides", "description", "seeds", "ablation",
                 "official"}
# dvc.yaml params entries of every run stage (`ablation` is read only by the ablation stages, which a
# profile without that block does not have)
_STAGE_PROFILE_KEYS = ("train", "eval", "models", "dataset_overrides")


# A model, dataset, variant or result name becomes part of a path (runs/train/<model>-<dataset>/,
# data/<dataset>/, the DVC stage item): `../../x` or `a/b` would write, and DVC would delete, outside
# the repository. Lowercase letters, digits, '_', '.', '-', starting with a letter or digit: no
# separator, no `.`/`..`, no hidden or option-like names.
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def check_name(kind: str, name: Any, where: str, file: str | Path = PARAMS_FILE) -> str:
    """``name`` (a ``kind`` name found at ``where``) if it is safe as a path component; else ConfigError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{file}: {where}: {kind} name {name!r} is not allowed (it becomes part of a file path): "
                          "use lowercase letters, digits, '_', '.', '-', starting with a letter or digit")
    return name


def check_model_name(name: Any, where: str, file: str | Path = PARAMS_FILE) -> str:
    """``name`` if it is a path-safe, registered model name (checked without importing model code)."""
    from benchmark.core import registry  # late: only its name table is needed, not the model modules

    check_name("model", name, where, file)
    try:
        known = registry.is_model(name)  # built-ins, entry-point plugins, params.yaml plugins (names only)
    except ValueError as exc:  # a malformed plugins: section or a doubly declared plugin
        raise ConfigError(str(exc)) from None
    if not known:
        raise ConfigError(f"{file}: {where}: {name!r} is not a registered model; registered: "
                          f"{', '.join(registry.known_names())}")
    return name


def declare_plugins(raw: dict, path: str | Path = PARAMS_FILE) -> None:
    """Make params.yaml's ``plugins:`` (paths relative to its folder) the local-file plugins."""
    from benchmark.core import plugins

    base = Path(path).parent if Path(path).name else Path(".")
    try:
        plugins.declare(raw.get("plugins"), base if str(base) != "." else ".", path)
    except plugins.PluginError as exc:
        raise ConfigError(str(exc)) from None


def _check_names(path: Path, raw: dict) -> None:
    """Every key or list entry of params.yaml that becomes part of a path (see ``_NAME``)."""
    def names(value: Any, where: str) -> list:
        if value is None:
            return []
        if not isinstance(value, (list, tuple, dict)):
            raise ConfigError(f"{path}: {where} must be a list of names, got {value!r}")
        return list(value)

    declare_plugins(raw, path)
    for m in names(raw.get("models"), "models"):
        check_model_name(m, f"models.{m}", path)
    for key in ("baselines", "trained_models"):
        for m in names(raw.get(key), key):
            check_model_name(m, key, path)
    for d, dcfg in (raw.get("datasets") or {}).items():
        check_name("dataset", d, f"datasets.{d}", path)
        for s in names((dcfg or {}).get("eval_sets") if isinstance(dcfg, dict) else None, f"datasets.{d}.eval_sets"):
            check_name("evaluation set", s, f"datasets.{d}.eval_sets", path)
    for d in names(raw.get("run_datasets"), "run_datasets"):
        check_name("dataset", d, "run_datasets", path)
    if "ablation_dataset" in raw:
        check_name("dataset", raw["ablation_dataset"], "ablation_dataset", path)
    for v in names(raw.get("ablations"), "ablations"):
        check_name("ablation variant", v, f"ablations.{v}", path)
    for key in ("ablation_variants", "ablation_groups"):
        for v in names(raw.get(key), key):
            check_name("ablation variant", v, key, path)
    for pname, p in (raw.get("profiles") or {}).items():
        check_name("profile", pname, f"profiles.{pname}", path)
        p = p if isinstance(p, dict) else {}
        for d in names(p.get("datasets"), f"profiles.{pname}.datasets"):
            check_name("dataset", d, f"profiles.{pname}.datasets", path)
        for d in names(p.get("dataset_overrides"), f"profiles.{pname}.dataset_overrides"):
            check_name("dataset", d, f"profiles.{pname}.dataset_overrides.{d}", path)
        for m in names(p.get("models"), f"profiles.{pname}.models"):
            check_model_name(m, f"profiles.{pname}.models.{m}", path)
        a = p.get("ablation") if isinstance(p.get("ablation"), dict) else {}
        if "dataset" in a:
            check_name("dataset", a["dataset"], f"profiles.{pname}.ablation.dataset", path)
        for v in names(a.get("variants"), f"profiles.{pname}.ablation.variants"):
            check_name("ablation variant", v, f"profiles.{pname}.ablation.variants", path)
        for s in names(p.get("seeds"), f"profiles.{pname}.seeds"):
            _check_seed(s, f"profiles.{pname}.seeds", path)
    for key in ("seeds", "extra_seeds"):
        for s in names(raw.get(key), key):
            _check_seed(s, key, path)
    report = raw.get("report") if isinstance(raw.get("report"), dict) else {}
    for s in names(report.get("images"), "report.images"):
        check_name("evaluation set", s, f"report.images.{s}", path)
    for k in names(report.get("ablation_runs"), "report.ablation_runs"):
        check_name("run", k, "report.ablation_runs", path)


def check_model_args(model: str, args: Any, path: str | Path = PARAMS_FILE) -> dict:
    """``models.<model>.args`` if every entry is a builder argument of the model with a value in range
    (``config_types.model_args_problem``, the ranges a checkpoint's ``model_args`` get too): a
    ``channels: 8000`` must stop at load, not allocate gigabytes in the train stage. Only a model
    with arguments has its builder's module imported for this."""
    if not args:
        return {}
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise ConfigError(f"{path}: models.{model}.args must be a mapping of builder arguments, got {args!r}")
    try:
        problem = model_args_problem(model, args)
    except ValueError as exc:  # the model's module cannot be loaded (a broken plugin)
        raise ConfigError(f"{path}: models.{model}.args: {exc}") from None
    if problem:
        raise ConfigError(f"{path}: models.{model}.args.{problem[0]} {problem[1]}")
    return dict(args)


def _check_seed(seed: Any, where: str, path: Path) -> None:
    # a seed is part of a run key (`-s<seed>`): a whole number >= 0, not a string or a bool
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"{path}: {where}: seed {seed!r} must be a whole number >= 0")


def _check_keys(where: str, given: dict, allowed: set[str]) -> None:
    bad = sorted(set(given) - allowed)
    if bad:
        raise ConfigError(f"{PARAMS_FILE}: unknown key(s) {bad} in {where}; allowed: {sorted(allowed)}")


def _build(cls, where: str, values: dict | None, file: str | Path = PARAMS_FILE):
    """``cls`` from one section; every key known, every value of its field's type and range."""
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ConfigError(f"{file}: {where} must be a mapping of settings, got {type(values).__name__}")
    names = {f.name for f in fields(cls)}
    bad = sorted(set(values) - names)
    if bad:
        raise ConfigError(f"{file}: unknown key(s) {bad} in {where}; allowed: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    out = {k: checked(hints[k], v, f"{where}.{k}", file, RANGES.get((cls.__name__, k))) for k, v in values.items()}
    return cls(**out)


def _merge(*dicts: dict | None) -> dict:
    out: dict = {}
    for d in dicts:
        out.update(d or {})
    return out


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader without anchors/aliases and duplicate keys.

    An alias nest of a few hundred bytes (``&a [*b, *b, …]``) expands to gigabytes in whatever
    flattens the settings (DVC, MLflow params), and settings need no sharing. A duplicate key
    would silently take the last value (DVC already refuses it): both are refused at their line.
    """

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise yaml.composer.ComposerError(None, None, "anchors and aliases (&name, *name) are not allowed; "
                                              "write the values out", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line)
                except TypeError:
                    continue  # an unhashable key: the base constructor reports it
                if first != key_node.start_mark.line:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first at line {first + 1})", key_node.start_mark)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, file: str | Path = PARAMS_FILE):
    """``text`` (the contents of settings file ``file``) read strictly (``_StrictLoader``); any YAML
    problem is one ConfigError line ``<file>:<line>: <problem>``."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{file}:{mark.line + 1}" if mark is not None else str(file)
        problem = " ".join(x for x in (exc.context, exc.problem) if x)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {' '.join(str(exc).split())}") from None


def load_params(path: str | Path = PARAMS_FILE) -> dict:
    """Read and structurally validate params.yaml (raises ConfigError naming the problem)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: not found; run from the repository root")
    raw = parse_yaml(path.read_text(), path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of settings, got {type(raw).__name__}")
    _check_keys("the top level", raw, _TOP_KEYS)
    _check_names(path, raw)
    profiles = raw.get("profiles", {})
    prof = raw.get("profile", "quick")
    if prof not in profiles:
        raise ConfigError(f"{path}: profile {prof!r} is not defined; defined: {sorted(profiles)}")
    for name, p in profiles.items():
        _check_keys(f"profiles.{name}", p, _PROFILE_KEYS)
        _build(TrainCfg, f"profiles.{name}.train", p.get("train", {}), path)
        _build(EvalCfg, f"profiles.{name}.eval", p.get("eval", {}), path)
    for name, m in raw.get("models", {}).items():
        _check_keys(f"models.{name}", m or {}, _MODEL_KEYS)
        check_model_args(name, (m or {}).get("args"), path)
        _build(TrainCfg, f"models.{name}.train", (m or {}).get("train", {}), path)
        _build(TrainCfg, f"models.{name}.own", (m or {}).get("own", {}), path)
    _build(TrainCfg, "train", raw.get("train", {}), path)
    _build(EvalCfg, "eval", raw.get("eval", {}), path)
    _build(TrackingCfg, "tracking", raw.get("tracking", {}), path)
    report_cfg(raw, path)
    p = profiles[prof]
    # dvc.yaml's stages name these sub-keys of the active profile as params; DVC cannot read a missing one
    lacking = [k for k in _STAGE_PROFILE_KEYS if k not in p]
    if lacking:
        raise ConfigError(f"{path}: profiles.{prof} lacks {', '.join(lacking)} (dvc.yaml's stages depend on "
                          "them; write {} for none)")
    if list(raw.get("run_datasets", [])) != list(p.get("datasets", [])):
        raise ConfigError(f"{path}: run_datasets {raw.get('run_datasets')} does not match profile {prof!r} "
                          f"({p.get('datasets')}); switch profiles with `msgnn-bench profile {prof}`")
    models = raw.get("models", {})
    if list(raw.get("trained_models", [])) != ["msgnn", *raw.get("baselines", [])]:
        raise ConfigError(f"{path}: trained_models must be [msgnn] followed by the baselines list")
    for m in [*raw.get("trained_models", []), "input"]:
        if m not in models:
            raise ConfigError(f"{path}: model {m!r} has no models.{m} section")
    for name in [*(p.get("models") or {})]:
        if name not in models:
            raise ConfigError(f"{path}: profiles.{prof}.models.{name}: unknown model; models: {sorted(models)}")
    for d in raw.get("run_datasets", []):
        if d not in raw.get("datasets", {}):
            raise ConfigError(f"{path}: dataset {d!r} in run_datasets has no datasets.{d} section")
    _check_seeds_and_ablations(path, raw, prof, p)
    _check_official(path, raw, prof, p)
    _check_plugin_runs(path, raw)
    _check_results(path, raw)
    return raw


def plugin_runs_for(raw: dict) -> dict:
    """The ``plugin_runs`` axis for ``raw``: every plugin (params.yaml ``plugins:`` and installed entry
    points) x ``run_datasets``, ``<model>-<dataset>: {model, dataset, source}`` (``source``: the
    plugin's file or package folder, the DVC dep of its stages)."""
    from benchmark.core import plugins

    out = {}
    for name, s in sorted(plugins.specs().items()):
        for d in raw.get("run_datasets") or []:
            out[run_key(name, d)] = {"model": name, "dataset": d, "source": s.path}
    return out


def _check_plugin_runs(path: Path, raw: dict) -> None:
    """``plugin_runs`` (DVC foreach axis of stages train_plugin/evaluate_plugin, written by
    `msgnn-bench plugins sync`): each entry names a declared plugin, its source and a run dataset;
    a plugin may not be listed in ``baselines`` (their stage depends on baselines/<name>.py)."""
    from benchmark.core import plugins

    for m in raw.get("baselines") or []:
        if plugins.spec(m) is not None and m not in {"msgnn", *(__import__("benchmark.core.registry",
                                                                            fromlist=["ORDER"]).ORDER)}:
            raise ConfigError(f"{path}: baselines: {m!r} is a plugin model; plugins train and evaluate in their own "
                              "stages (train_plugin/evaluate_plugin): run `msgnn-bench plugins sync` instead")
    runs = raw.get("plugin_runs") or {}
    if not isinstance(runs, dict):
        raise ConfigError(f"{path}: plugin_runs must be a mapping; run `msgnn-bench plugins sync`")
    for key, e in runs.items():
        if not isinstance(e, dict) or set(e) != {"model", "dataset", "source"}:
            raise ConfigError(f"{path}: plugin_runs.{key} must be {{model, dataset, source}}; "
                              "run `msgnn-bench plugins sync`")
        s = plugins.spec(e["model"])
        if s is None:
            raise ConfigError(f"{path}: plugin_runs.{key}: {e['model']!r} is not a declared plugin (params.yaml "
                              f"plugins: or an installed entry point of {plugins.GROUP}); run `msgnn-bench plugins sync`")
        if key != run_key(e["model"], e["dataset"]) or e["dataset"] not in (raw.get("run_datasets") or []):
            raise ConfigError(f"{path}: plugin_runs.{key}: must be <model>-<dataset> for a dataset of run_datasets; "
                              "run `msgnn-bench plugins sync` (after every `msgnn-bench profile`)")
        if e["source"] != s.path:
            raise ConfigError(f"{path}: plugin_runs.{key}: source {e['source']!r} is not the plugin's ({s.path!r}); "
                              "run `msgnn-bench plugins sync`")
        if e["model"] not in (raw.get("models") or {}):
            raise ConfigError(f"{path}: plugin model {e['model']!r} has no models.{e['model']} section "
                              "(`models: {" + e["model"] + ": {}}`; `msgnn-bench plugins sync` adds it)")


def _check_results(path: Path, raw: dict) -> None:
    """``results: {<name>: {<dataset>: <folder of output images>}}``: published outputs re-scored by stage
    ``score@<name>-<dataset>``; the name must not be a model's (the run keys would collide)."""
    from benchmark.core import registry

    res = raw.get("results") or {}
    if not isinstance(res, dict):
        raise ConfigError(f"{path}: results must be a mapping name -> {{dataset: folder}}")
    for name, per in res.items():
        check_name("result", name, f"results.{name}", path)
        if registry.is_model(name):
            raise ConfigError(f"{path}: results.{name}: the name is a model's; choose another (e.g. {name}-published)")
        if not isinstance(per, dict) or not per:
            raise ConfigError(f"{path}: results.{name} must map a dataset to a folder of output images")
        for d, folder in per.items():
            check_name("dataset", d, f"results.{name}.{d}", path)
            if d not in (raw.get("datasets") or {}):
                raise ConfigError(f"{path}: results.{name}.{d}: dataset {d!r} has no datasets.{d} section")
            if not isinstance(folder, str) or not folder:
                raise ConfigError(f"{path}: results.{name}.{d} must be a folder path, got {folder!r}")
    if (raw.get("score_runs") or {}) != score_runs_for(raw):
        raise ConfigError(f"{path}: score_runs (the DVC axis of stage score) does not match results; "
                          "run `msgnn-bench plugins sync`")


def score_runs_for(raw: dict) -> dict:
    """The ``score`` stage axis: ``<name>-<dataset>: {name, dataset, folder}`` from ``results``."""
    return {run_key(n, d): {"name": n, "dataset": d, "folder": f}
            for n, per in sorted((raw.get("results") or {}).items()) for d, f in per.items()}


def _check_official(path: Path, raw: dict, prof: str, p: dict) -> None:
    """``official_runs`` (the DVC foreach axis of stage ``official``) equals the profile's ``official``;
    each entry is ``<checkpoint>--<dataset>: {model, checkpoint, dataset}`` on a dataset with a section.
    Whether the checkpoint exists and was published on that set is checked by the stage itself
    (``benchmark.weights``), so that no other stage depends on the checkpoint registry."""
    runs = raw.get("official_runs") or {}
    if runs != (p.get("official") or {}):
        raise ConfigError(f"{path}: official_runs does not match profile {prof!r}'s official entries; "
                          f"switch profiles with `msgnn-bench profile {prof}`")
    for name, q in raw.get("profiles", {}).items():
        for key, e in (q.get("official") or {}).items():
            if not isinstance(e, dict) or set(e) != {"model", "checkpoint", "dataset"}:
                raise ConfigError(f"{path}: profiles.{name}.official.{key} must be {{model, checkpoint, dataset}}")
            if key != f"{e['checkpoint']}--{e['dataset']}":
                raise ConfigError(f"{path}: profiles.{name}.official.{key}: the key must be "
                                  f"{e['checkpoint']}--{e['dataset']}")
            if e["dataset"] not in raw.get("datasets", {}):
                raise ConfigError(f"{path}: profiles.{name}.official.{key}: dataset {e['dataset']!r} has no "
                                  f"datasets.{e['dataset']} section")


def _check_seeds_and_ablations(path: Path, raw: dict, prof: str, p: dict) -> None:
    """``seeds``/``extra_seeds``/``ablation_dataset``/``ablation_variants``/``ablation_groups``: DVC axes
    copied from the profile."""
    from benchmark.core import ablations  # late: ablations builds on this module

    seeds = list(raw.get("seeds", [0]))
    if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(x, int) for x in seeds):
        raise ConfigError(f"{path}: seeds must be a non-empty list of distinct integers, got {seeds}")
    if "seeds" in p and list(p["seeds"]) != seeds:
        raise ConfigError(f"{path}: seeds {seeds} do not match profile {prof!r} ({p['seeds']}); "
                          f"switch profiles with `msgnn-bench profile {prof}`")
    if list(raw.get("extra_seeds", [])) != seeds[1:]:
        raise ConfigError(f"{path}: extra_seeds must be seeds[1:] = {seeds[1:]} (the first seed is train.seed: "
                          "the main stages), got " + str(raw.get("extra_seeds")))
    if seeds[0] != (raw.get("train") or {}).get("seed", 0):
        raise ConfigError(f"{path}: seeds[0] ({seeds[0]}) must equal train.seed, the seed of the main stages")
    ablations.check(raw, path)


@dataclass(frozen=True)
class RunConfig:
    """Everything one train/evaluate run needs, flattened from params.yaml."""

    model: str
    dataset: str
    profile: str
    model_args: dict
    train: TrainCfg
    eval: EvalCfg
    tracking: TrackingCfg
    dataset_cfg: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return run_key(self.model, self.dataset)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve(model: str, dataset: str, params: dict | None = None, path: str | Path = PARAMS_FILE) -> RunConfig:
    """The resolved settings for training/evaluating ``model`` on ``dataset``."""
    raw = params if params is not None else load_params(path)
    path = Path(path) if params is None else PARAMS_FILE
    models, datasets = raw.get("models", {}), raw.get("datasets", {})
    # the names come from the command line too (--model/--dataset, `msgnn-bench train --name`) and
    # become the run folder's name: checked here, before anything is created
    from benchmark.core import registry

    if params is not None and model not in registry.BUILTIN and "plugins" in raw:
        declare_plugins(raw)  # a plugin's stages depend on params.yaml plugins: (dvc.yaml)
    check_model_name(model, "model", PARAMS_FILE)
    check_name("dataset", dataset, "dataset", PARAMS_FILE)
    if model not in models:
        raise ConfigError(f"{PARAMS_FILE}: no models.{model} section; models: {sorted(models)}")
    if dataset not in datasets:
        raise ConfigError(f"{PARAMS_FILE}: no datasets.{dataset} section; datasets: {sorted(datasets)}")
    prof_name = raw.get("profile", "quick")
    prof = raw["profiles"][prof_name]
    m = models[model] or {}
    pm = (prof.get("models") or {}).get(model) or {}
    train = _merge(raw.get("train"), prof.get("train"), m.get("train"), pm.get("train"))
    if train.get("recipe", "shared") == "own":
        own = dict(m.get("own") or {})
        if not own:
            raise ConfigError(f"{PARAMS_FILE}: recipe 'own' chosen for {model!r} but models.{model}.own is empty")
        if prof_name != "paper":  # quick/ci budgets stay small whatever the own recipe's length
            own.pop("iters", None)
            own.pop("epochs", None)
        elif {"iters", "epochs"} & own.keys():  # the recipe's length replaces the shared one, in either unit
            train.pop("iters", None)
            train.pop("epochs", None)
        train.update(own)
    tcfg = _build(TrainCfg, f"the resolved train settings of {model}-{dataset}", train, path)
    if (tcfg.iters is None) == (tcfg.epochs is None):
        raise ConfigError(f"{PARAMS_FILE}: set exactly one of train.iters / train.epochs for {model}-{dataset}")
    ecfg = _build(EvalCfg, "eval", _merge(raw.get("eval"), prof.get("eval")), path)
    dcfg = _merge(datasets[dataset], (prof.get("dataset_overrides") or {}).get(dataset))
    return RunConfig(model=model, dataset=dataset, profile=prof_name, model_args=check_model_args(model, m.get("args")),
                     train=tcfg, eval=ecfg, tracking=_build(TrackingCfg, "tracking", raw.get("tracking", {}), path),
                     dataset_cfg=dcfg)


def tracking_settings(path: str | Path = PARAMS_FILE) -> TrackingCfg:
    """The ``tracking`` section of a (validated) params.yaml."""
    return _build(TrackingCfg, "tracking", load_params(path).get("tracking"), path)


def report_cfg(raw: dict, path: str | Path = PARAMS_FILE) -> ReportCfg:
    """The validated ``report:`` section (ids are strings: YAML would read ``1`` as a number)."""
    cfg = _build(ReportCfg, "report", raw.get("report") or {}, path)
    images = {}
    for s, ids in (cfg.images or {}).items():
        if not isinstance(ids, (list, tuple)):
            raise ConfigError(f"{path}: report.images.{s} must be a list of image ids")
        images[str(s)] = tuple(str(i) for i in ids)
    crops = {}
    for k, v in (cfg.crops or {}).items():
        ok = isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)
        if not ok or "/" not in str(k) or not (0 <= v[0] < 1 and 0 <= v[1] < 1 and 0 < v[2] <= 1):
            raise ConfigError(f"{path}: report.crops.{k}: expected '<set>/<id>': [x, y, size] "
                              f"with x, y in [0, 1) and size in (0, 1], got {v!r}")
        crops[str(k)] = tuple(float(x) for x in v)
    if cfg.ablation_image and "/" not in cfg.ablation_image:
        raise ConfigError(f"{path}: report.ablation_image must be '<set>/<id>', got {cfg.ablation_image!r}")
    if cfg.tile < 32:
        raise ConfigError(f"{path}: report.tile must be at least 32 pixels, got {cfg.tile}")
    return dataclasses.replace(cfg, images=images, crops=crops)


def has_ground_truth(raw: dict, dataset: str) -> bool:
    """``datasets.<dataset>.ground_truth`` of params.yaml: False for a set of rainy images only."""
    return bool(((raw.get("datasets") or {}).get(dataset) or {}).get("ground_truth", True))


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} → {'a.b': 1} (for MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
