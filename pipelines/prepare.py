"""DVC stage ``prepare@<dataset>``: make ``data/<dataset>`` exist in the normalised layout.

``rain-synth`` is generated offline from params; every other key goes through the dataset
registry (download, verify, extract, normalise — or the exact manual step to take). Datasets
that a training set is also evaluated on (``eval_sets``, e.g. Rain12 with the Rain200H model)
are obtained here too, into ``data/eval_sets/<dataset>/`` (created even when empty: it is a
declared output of the stage and a dependency of the evaluate stages).
"""
from __future__ import annotations

import argparse
import sys

from benchmark.core import config, runs
from benchmark.data import loading as data
from benchmark.datasets import synth


def prepare(dataset: str, params: dict) -> None:
    cfg = config.resolve("input", dataset, params)
    runs.eval_sets_dir(dataset).mkdir(parents=True, exist_ok=True)
    for name in [dataset, *[e for e in cfg.dataset_cfg.get("eval_sets", []) if e != dataset]]:
        dest = runs.eval_set_dir(dataset, name)
        if name == "rain-synth":
            dcfg = config.resolve("input", name, params).dataset_cfg
            known = {f for f in synth.SynthParams.__dataclass_fields__}
            bad = sorted(set(dcfg) - known - {"eval_sets"})
            if bad:
                raise config.ConfigError(f"params.yaml: unknown key(s) {bad} in datasets.rain-synth")
            sp = synth.SynthParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in dcfg.items()
                                      if k in known})
            counts = synth.generate(dest, sp)
            print(f"rain-synth: {counts['train']} train / {counts['test']} test pairs in {dest}")
        else:
            from benchmark import datasets

            # download(), not ensure_dataset(): the latter also prints a manual step's message,
            # which main() prints as the error, so the user read it twice
            path = datasets.download(name, root=str(dest.parent))
            print(f"{name}: ready in {path}")
        # every image decoded and checked once here, so that no training or evaluation meets a bad one
        paired = config.has_ground_truth(params, name)
        # the folder just obtained: an eval set lives under data/eval_sets/<dataset>/, not data/<name>
        counts = data.check_dataset(dest, paired=paired)
        print(f"{name}: checked " + ", ".join(f"{k} {v}" for k, v in counts.items()) + " images/pairs")


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 ready, 1 error, 3 a manual download step is needed (the message says which)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", required=True)
    args = ap.parse_args(argv)
    from benchmark.datasets import DatasetError, ManualDownloadRequired

    try:
        prepare(args.dataset, config.load_params())
    except (config.ConfigError, DatasetError, ValueError, OSError) as exc:
        print(f"prepare {args.dataset}: error: {exc}", file=sys.stderr)
        # 3 = a manual download step is needed, as for `msgnn-bench datasets download` (docs/datasets.md)
        return 3 if isinstance(exc, ManualDownloadRequired) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
