"""The paper's ablation study (Tables 2–5, Figs. 7–9) as data: variants, their runs and keys.

``params.yaml`` ``ablations:`` maps a variant name to the MSGNN switches it changes (``args``),
the paper's training patch size (``patch``) and the table cells it fills (``cells``: table ->
column id, matching ``reports/paper_reference.yaml``). One variant = one switch set, so the
default model (M6 = s3 = l3 = k5 = N4) is one variant that fills a cell of every table.
``profiles.<p>.ablation`` decides where and how long they train (dataset, variants, training
deltas, ``patch_scale`` for tiny budgets, ``eval_images``, ``stages``); ``ablation_dataset``,
``ablation_variants`` and ``ablation_groups`` are what ``msgnn-bench profile`` copies from it into
the DVC matrix of stage ``ablation@<group>-<seed>``. ``stages: one`` gives the single group ``all``
(the whole grid in one process: quick and ci, where a process start costs more than a variant's
training), ``stages: per-variant`` one group per variant (paper: each resumed and cached alone).

Run keys (run folder = MLflow run name = DVC stage item):
``<model>-<dataset>`` main stages (seed = train.seed), ``<model>-<dataset>-s<seed>`` further seeds,
``msgnn.<variant>-<dataset>-s<seed>`` ablation runs.
"""
from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

from benchmark.core import config

PAPER_PATCH = 64  # Sec. 4.2 training patch; Table 3's second half uses 48
TABLES = ("table2", "table3", "table4", "table5", "fig7", "fig8", "fig9")
_VARIANT_KEYS = {"args", "patch", "cells", "note"}
_PROFILE_KEYS = {"dataset", "variants", "train", "patch_scale", "eval_images", "stages"}
ALL = "all"  # the group of stage ablation@all-<seed>: the profile's whole grid
STAGES = ("one", "per-variant")
# ablation-<group>-s<seed>.json: the paper's protocol (the ablation tables are the paper's) and PSNR-Y
SUMMARY_METRICS = (f"psnr:{config.PAPER_PROTOCOL}", f"ssim:{config.PAPER_PROTOCOL}", "psnr_y", "ssim_y")


def groups(block: dict) -> list[str]:
    """The ``ablation_groups`` axis a profile's ablation block implies."""
    return [ALL] if block.get("stages", "one") == "one" else list(block.get("variants") or [])


def group_variants(group: str, raw: dict) -> list[str]:
    """The variants that stage ``ablation@<group>-<seed>`` trains."""
    grid = list(raw.get("ablation_variants") or [])
    if group == ALL:
        return grid
    if group not in grid:
        raise config.ConfigError(f"{config.PARAMS_FILE}: ablation group {group!r} is neither {ALL!r} nor a variant "
                                 f"of ablation_variants {grid}")
    return [group]


def check_switches(name: str, args: dict) -> None:
    """Variant switches must be MSGNN builder arguments. Checked when a variant is resolved or
    listed, not in ``check``: params loading (every stage) must not import the model code."""
    from benchmark.core.registry import get_builder

    switches = set(inspect.signature(get_builder("msgnn")).parameters)
    bad = sorted(set(args) - switches)
    if bad:
        raise config.ConfigError(f"{config.PARAMS_FILE}: ablations.{name}.args: unknown MSGNN switch(es) {bad}; "
                                 f"valid: {sorted(switches)}")


def check(raw: dict, path: str | Path = config.PARAMS_FILE) -> None:
    """Validate ``ablations``, the ablation axes and every profile's ``ablation`` block."""
    variants = raw.get("ablations") or {}
    for name, v in variants.items():
        where = f"ablations.{name}"
        if not isinstance(v, dict):
            raise config.ConfigError(f"{path}: {where} must be a mapping with args/patch/cells")
        config._check_keys(where, v, _VARIANT_KEYS)
        if not isinstance(v.get("args") or {}, dict):
            raise config.ConfigError(f"{path}: {where}.args must be a mapping of MSGNN switches")
        bad = sorted(set(v.get("cells") or {}) - set(TABLES))
        if bad or not v.get("cells"):
            raise config.ConfigError(f"{path}: {where}.cells must name table(s) among {TABLES}, got {v.get('cells')}")
    for pname, p in (raw.get("profiles") or {}).items():
        a = p.get("ablation")
        if a is None:
            continue
        config._check_keys(f"profiles.{pname}.ablation", a, _PROFILE_KEYS)
        config._build(config.TrainCfg, f"profiles.{pname}.ablation.train", a.get("train") or {})
        if a.get("stages", "one") not in STAGES:
            raise config.ConfigError(f"{path}: profiles.{pname}.ablation.stages must be one of {STAGES}, "
                                     f"got {a.get('stages')!r}")
        unknown = [x for x in a.get("variants") or [] if x not in variants]
        if unknown:
            raise config.ConfigError(f"{path}: profiles.{pname}.ablation.variants: unknown variant(s) {unknown}")
        if a.get("dataset") not in (raw.get("datasets") or {}):
            raise config.ConfigError(f"{path}: profiles.{pname}.ablation.dataset {a.get('dataset')!r} is not a dataset")
    prof = (raw.get("profiles") or {}).get(raw.get("profile", "quick"), {})
    if "ablation" in prof:
        want = (prof["ablation"]["dataset"], list(prof["ablation"]["variants"]), groups(prof["ablation"]))
        have = (raw.get("ablation_dataset"), list(raw.get("ablation_variants") or []),
                list(raw.get("ablation_groups") or []))
        if have != want:
            raise config.ConfigError(f"{path}: ablation_dataset/ablation_variants/ablation_groups {have} do not match profile "
                                     f"{raw.get('profile')!r} {want}; switch profiles with "
                                     f"`msgnn-bench profile {raw.get('profile')}`")


def profile_block(raw: dict) -> dict:
    prof = raw["profiles"][raw.get("profile", "quick")]
    if "ablation" not in prof:
        raise config.ConfigError(f"{config.PARAMS_FILE}: profile {raw.get('profile')!r} has no ablation block")
    return prof["ablation"]


def resolve(variant: str, seed: int, params: dict | None = None) -> config.RunConfig:
    """The run config of one ablation variant: MSGNN's resolved settings + the variant's switches,
    the paper's patch size for it (scaled by the profile's ``patch_scale``), the profile's training
    deltas for ablations and the seed."""
    raw = params if params is not None else config.load_params()
    variants = raw.get("ablations") or {}
    if variant not in variants:
        raise config.ConfigError(f"{config.PARAMS_FILE}: unknown ablation variant {variant!r}; "
                                 f"variants: {sorted(variants)}")
    v, block = variants[variant], profile_block(raw)
    check_switches(variant, v.get("args") or {})
    base = config.resolve("msgnn", block["dataset"], raw)
    train = {**dataclasses.asdict(base.train), **(block.get("train") or {}), "seed": int(seed)}
    if "iters" in (block.get("train") or {}):
        train["epochs"] = None
    patch = int(v.get("patch", PAPER_PATCH)) * float(block.get("patch_scale", 1.0))
    train["patch"] = max(8, round(patch))
    tcfg = config._build(config.TrainCfg, f"ablation {variant}", train)
    return dataclasses.replace(base, model_args={**base.model_args, **(v.get("args") or {})}, train=tcfg)
