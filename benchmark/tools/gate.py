"""Metric-tolerance gate: compare ``runs/eval/*/metrics.json`` with a committed reference.

CI runs the tiny ``ci`` profile and then this check. A metric that moved further than its
tolerance fails the build with a table of old vs new values. Refresh the reference on purpose
(after a change that is *meant* to move numbers) with ``msgnn-bench check-metrics --update``
and commit the file together with the change that explains it.

Plugin models and published outputs (``results:``) are reported, not gated: the committed reference
holds the suite's own models only (built-ins and their ablation variants), so installing or removing a
plugin never breaks the gate, and ``--update`` never writes a plugin's numbers into it. Their values are
printed after the verdict. ``--include-plugins`` gates them too, against a reference of your own:
``check-metrics --include-plugins --reference my_reference.json --update`` once, then without ``--update``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import yaml

from benchmark.core import io
from benchmark.core.runs import RunFolderError, eval_metrics, run_key

DEFAULT_REF = ".ci/reference_metrics.json"
# Tolerances absorb float differences between CPUs/BLAS builds, not real regressions:
# a 6-step training on 2 images moves by far more than this when the code changes behaviour.
TOLERANCE = {"psnr_y": 0.05, "psnr_rgb": 0.05, "ssim_y": 0.002, "ssim_rgb": 0.002}
# every scoring protocol's keys ("psnr:msgnn", "ssim:prenet", ...) get the PSNR / SSIM tolerance
PROTOCOL_TOLERANCE = {"psnr": 0.05, "ssim": 0.002}


def tolerance(metric: str) -> float | None:
    """The tolerance of a metric key, None for keys the gate does not compare."""
    if metric in TOLERANCE:
        return TOLERANCE[metric]
    return PROTOCOL_TOLERANCE.get(metric.split(":", 1)[0]) if ":" in metric else None


class GateError(ValueError):
    """A metrics or reference file the gate cannot compare; one line naming the file and the key."""


def _number(value, where: str, key: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    raise GateError(f"{where}: {key} is {value!r} ({type(value).__name__}), not a number; rerun the stage that "
                    "wrote it or fix the file")


def current(runs_dir: Path, profile: str | None = None, owners: dict | None = None) -> dict[str, float]:
    """Every compared value of ``runs_dir/eval/*/metrics.json``; with ``profile``, only the runs of that
    profile (the committed metrics files of the default profile sit beside the ci run's in a clone).
    ``owners``, when given, receives run key -> model of every run read."""
    out = {}
    for f, m in eval_metrics(runs_dir):  # each run once: a copied run folder is refused, never read
        if profile is not None and m.get("profile", profile) != profile:
            continue
        key = m.get("key", run_key(m["model"], m["dataset"]))  # seed replicas and ablation variants have their own
        if owners is not None:
            owners[key] = m["model"]
        for eval_set, r in m["results"].items():
            if not isinstance(r, dict):
                raise GateError(f"{f}: results.{eval_set} is {r!r}, not a mapping of metrics")
            for k, v in r.items():
                if tolerance(k) is not None:
                    out[f"{key}/{eval_set}/{k}"] = _number(v, str(f), f"results.{eval_set}.{k}")
        out[f"{key}/params_total"] = _number(m.get("params_total"), str(f), "params_total")
    return out


def split_suite(now: dict[str, float], owners: dict[str, str]) -> tuple[dict, dict]:
    """(the suite's own values, those of plugin models and published outputs): by the model of each run."""
    from benchmark.core.registry import BUILTIN

    mine = {k: v for k, v in now.items() if owners.get(k.split("/", 1)[0]) in BUILTIN}
    return mine, {k: v for k, v in now.items() if k not in mine}


def _report_others(others: dict[str, float]) -> None:
    if others:
        w = max(len(k) for k in others)
        print(f"check-metrics: {len(others)} value(s) of plugin models / published outputs, reported, not gated "
              "(--include-plugins gates them against a reference of your own):")
        for k, v in sorted(others.items()):
            print(f"  {k:<{w}}  {v:>12.4f}")


def compare(ref: dict[str, float], now: dict[str, float]) -> list[tuple[str, str, str, str]]:
    """Rows (key, reference, current, problem) for every violation."""
    bad = []
    for key in sorted(set(ref) | set(now)):
        r, c = ref.get(key), now.get(key)
        if r is None or c is None:
            bad.append((key, str(r), str(c), "missing in " + ("reference" if r is None else "this run")))
            continue
        metric = key.rsplit("/", 1)[-1]
        tol = tolerance(metric) or 0  # parameter counts must match exactly
        if not (math.isclose(r, c, abs_tol=tol) or (math.isinf(r) and r == c)):
            bad.append((key, f"{r:.4f}", f"{c:.4f}", f"|Δ| {abs(r - c):.4f} > {tol}"))
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="msgnn-bench check-metrics", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--reference", default=DEFAULT_REF)
    ap.add_argument("--update", action="store_true", help="overwrite the reference with this run's metrics")
    ap.add_argument("--params", default="params.yaml", help="its `profile` selects the runs compared")
    ap.add_argument("--include-plugins", action="store_true",
                    help="gate (and --update) plugin models' and published outputs' runs too")
    args = ap.parse_args(argv)
    profile = yaml.safe_load(Path(args.params).read_text()).get("profile") if Path(args.params).is_file() else None
    owners: dict[str, str] = {}
    try:
        now = current(Path(args.runs), profile, owners)
    except (RunFolderError, GateError) as exc:
        print(f"check-metrics: error: {exc}", file=sys.stderr)
        return 1
    if not now:
        print(f"check-metrics: no {args.runs}/eval/*/metrics.json of profile {profile!r}; run the pipeline first",
              file=sys.stderr)
        return 1
    others: dict[str, float] = {}
    if not args.include_plugins:
        now, others = split_suite(now, owners)
    ref_path = Path(args.reference)
    if args.update:
        io.write_json(ref_path, now)
        print(f"check-metrics: wrote {len(now)} values to {ref_path}")
        _report_others(others)
        return 0
    if not ref_path.is_file():
        print(f"check-metrics: reference {ref_path} not found; create it with --update", file=sys.stderr)
        return 1
    try:
        ref = json.loads(ref_path.read_text())
        if not isinstance(ref, dict):
            raise GateError(f"{ref_path}: not a mapping of metric keys to values")
        ref = {k: _number(v, str(ref_path), k) for k, v in ref.items()}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        print(f"check-metrics: error: {ref_path}: not readable JSON ({exc})", file=sys.stderr)
        return 1
    except GateError as exc:
        print(f"check-metrics: error: {exc}", file=sys.stderr)
        return 1
    bad = compare(ref, now)
    if bad:
        w = max(len(b[0]) for b in bad)
        print(f"check-metrics: {len(bad)} value(s) out of tolerance vs {ref_path}:", file=sys.stderr)
        print(f"  {'metric':<{w}}  {'reference':>10}  {'current':>10}  problem", file=sys.stderr)
        for k, r, c, why in bad:
            print(f"  {k:<{w}}  {r:>10}  {c:>10}  {why}", file=sys.stderr)
        print("If the change is intended: msgnn-bench check-metrics --update, and commit the reference.",
              file=sys.stderr)
        _report_others(others)
        return 1
    print(f"check-metrics: {len(now)} values within tolerance of {ref_path}")
    _report_others(others)
    return 0


if __name__ == "__main__":
    sys.exit(main())
