"""``msgnn-bench datasets list|download|verify|path``: the command line of ``benchmark.datasets``
(kept beside ``cli.py`` so that the dataset package holds no command-line code)."""
from __future__ import annotations

import argparse
from pathlib import Path

from benchmark import datasets
from benchmark.datasets.transfer import say

def _datasets_list(args: argparse.Namespace) -> int:
    reg = datasets.load_registry(args.registry)
    print(f"{'key':<11}{'source':<10}{'splits':<28}{'present':<9}title")
    for key, s in reg.items():
        splits = ", ".join(f"{n} {sp.count if sp.count is not None else '?'}{'*' if sp.optional else ''}"
                           for n, sp in s.splits.items())
        present = "yes" if all(datasets.split_ready(Path(args.root) / key / n, sp) for n, sp in s.splits.items()
                               if not sp.optional) else "no"
        print(f"{key:<11}{s.source:<10}{splits:<28}{present:<9}{s.title}")
    print("(* optional split; source 'manual' = needs a manual step, see `datasets download NAME`)")
    return 0


def _datasets_download(args: argparse.Namespace) -> int:
    datasets.download(args.name, args.root, source=args.source, splits=args.split, registry=args.registry,
                      force=args.force)
    return 0


def _datasets_verify(args: argparse.Namespace) -> int:
    counts = datasets.verify(args.name, args.root, args.registry)
    print(f"{args.name}: OK ({', '.join(f'{k} {v}' for k, v in counts.items())})")
    return 0


def _datasets_path(args: argparse.Namespace) -> int:
    path = datasets.dataset_path(args.name, args.root, args.registry)
    if not path.is_dir():
        raise datasets.DatasetError(f"dataset {args.name!r} is not in {path}; "
                                    f"run `msgnn-bench datasets download {args.name}`")
    print(path.resolve())
    return 0


def datasets_parser(prog: str = "msgnn-bench datasets") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Obtain, normalise and check deraining datasets.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default="data", help="data folder (default: data)")
    common.add_argument("--registry", default=None,
                        help="dataset registry yaml (default: benchmark/datasets/datasets.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", parents=[common], help="list datasets and whether they are present")
    listing.set_defaults(fn=_datasets_list)
    p = sub.add_parser("download", parents=[common], help="download (or take --from), check and normalise")
    p.add_argument("name")
    p.add_argument("--from", dest="source", default=None, help="a manually obtained archive or extracted folder")
    p.add_argument("--split", action="append", choices=datasets.SPLITS, help="only this split (repeatable)")
    p.add_argument("--force", action="store_true", help="rebuild even if already present")
    p.set_defaults(fn=_datasets_download)
    for name, fn, text in (("verify", _datasets_verify, "re-check pairs, sizes, checksums and counts"),
                           ("path", _datasets_path, "print the dataset's folder")):
        q = sub.add_parser(name, parents=[common], help=text)
        q.add_argument("name")
        q.set_defaults(fn=fn)
    return parser


def datasets_main(argv: list[str] | None = None) -> int:
    """CLI entry: 0 ok, 1 error, 2 usage error, 3 manual download step needed."""
    args = datasets_parser().parse_args(argv)
    try:
        return args.fn(args)
    except datasets.ManualDownloadRequired as exc:
        say(f"error: {exc}")
        return 3
    except (datasets.DatasetError, datasets.DataError) as exc:
        say(f"error: {exc}")
        return 1


