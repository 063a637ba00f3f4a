"""``msgnn-bench weights list|download|verify|path``: the official checkpoints of
``benchmark/weights/checkpoints.yaml``, fetched through the resumable, checksummed transfer code of
the dataset layer (``benchmark.datasets.transfer``) into ``<root>/<name>/<file>`` (default root
``weights/``), or, for an entry with ``location: torch-hub`` (``lpips-alexnet``, the ImageNet AlexNet
that LPIPS needs), into torch hub's checkpoint folder, where ``benchmark.evaluation.metrics`` looks.

``download`` streams into ``<file>.part`` (resumed with HTTP Range after a drop), checks size,
sha256 and git blob id where recorded, and only then moves the file into place: a file that fails
a check is never left under its final name. Offline, one line names the checkpoint and its URL.
Exit codes: 0 ok, 1 error, 2 usage, 3 manual step needed.
"""
from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from benchmark.datasets import transfer
from benchmark.datasets.transfer import DatasetError, OfflineError, say
from benchmark.weights import registry
from benchmark.weights.registry import CheckpointSpec, RegistryError


class ManualStep(DatasetError):
    """No direct link: the message holds the manual step."""


def check_file(spec: CheckpointSpec, path: Path) -> dict:
    """Size, sha256 and git blob id of ``path`` against the registry; raises DatasetError on a mismatch.
    Returns the measured values and which of them were checked."""
    got = {"size": path.stat().st_size, "sha256": transfer.sha256_file(path),
           "git_blob_sha1": transfer.git_blob_sha1(path)}
    checked = []
    for key in ("size", "sha256", "git_blob_sha1"):
        want = getattr(spec, key)
        if want is None:
            continue
        if got[key] != want:
            raise DatasetError(f"{spec.name}: {path}: {key} {got[key]} differs from the registry's {want} "
                               "(truncated, damaged or another file)")
        checked.append(key)
    if spec.sha256_prefix and spec.sha256 is None:  # weaker, but catches a truncated or wrong file
        if not got["sha256"].startswith(spec.sha256_prefix):
            raise DatasetError(f"{spec.name}: {path}: sha256 {got['sha256'][:16]}... does not start with the "
                               f"registry's {spec.sha256_prefix} (truncated, damaged or another file)")
        checked.append("sha256_prefix")
    return {**got, "checked": checked}


def status(spec: CheckpointSpec, root: Path) -> str:
    path = spec.file_path(root)
    if path.is_file():
        try:
            res = check_file(spec, path)
        except DatasetError:
            return "present (checksum mismatch)"
        if "sha256" in res["checked"]:
            return "verified"
        return "present (sha256 prefix ok)" if "sha256_prefix" in res["checked"] else "present (sha256 not recorded)"
    return "manual" if spec.source == "manual" else "missing"


def download(spec: CheckpointSpec, root: Path, source: Path | None = None, force: bool = False) -> Path:
    """The verified file at ``<root>/<name>/<file>``: downloaded, or copied from ``source``."""
    dest = spec.file_path(root)
    if dest.is_file() and not force:
        check_file(spec, dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".download")
    if source is not None:
        if not Path(source).is_file():
            raise DatasetError(f"{source}: not a file")
        shutil.copyfile(source, tmp)
    elif spec.source == "manual" or not spec.urls:
        raise ManualStep(f"{spec.name}: no direct download. {spec.manual} "
                         f"(then: msgnn-bench weights download {spec.name} --from FILE)")
    else:
        last: Exception | None = None
        for url in spec.urls:  # mirrors in order
            try:
                transfer.http_download(url, tmp, size=spec.size)
                break
            except OfflineError:
                last = OfflineError(f"{spec.name}: offline, cannot reach {url}")
            except DatasetError as exc:
                last = exc
        else:
            raise last  # type: ignore[misc]
    try:
        res = check_file(spec, tmp)
    except DatasetError:
        tmp.unlink(missing_ok=True)  # a wrong file is not kept, not even as .part: a retry starts clean
        raise
    os.replace(tmp, dest)
    if "sha256" not in res["checked"]:
        say(f"{spec.name}: sha256 {res['sha256']} (git blob {res['git_blob_sha1']}, {res['size']} bytes) "
            f"was not recorded: {spec.status or 'record it'} in {registry.REGISTRY_PATH.name}")
    return dest


def _list(args) -> int:
    reg = registry.load_registry(args.registry)
    root = Path(args.root)
    print(f"{'checkpoint':<28}{'model':<9}{'status':<31}{'trained on / published on'}")
    for name, s in reg.items():
        pubs = ", ".join(f"{p.test_set} {p.psnr:g}/{p.ssim:g}" for p in s.published) or "-"
        print(f"{name:<28}{s.model:<9}{status(s, root):<31}{s.train_set or '-'} / {pubs}")
    return 0


def _download(args) -> int:
    spec = registry.get(args.name, args.registry)
    path = download(spec, Path(args.root), Path(args.source) if args.source else None, force=args.force)
    print(path)
    return 0


def _present(args):
    """The registry entry named on the command line and its downloaded file (one error if absent)."""
    spec = registry.get(args.name, args.registry)
    path = spec.file_path(args.root)
    if not path.is_file():
        raise DatasetError(f"{spec.name}: {path} not found; run `msgnn-bench weights download {spec.name}`")
    return spec, path


def _verify(args) -> int:
    spec, path = _present(args)
    res = check_file(spec, path)
    missing = [k for k in ("sha256", "git_blob_sha1") if k not in res["checked"] and getattr(spec, k) is None]
    extra = f"; not recorded: {', '.join(missing)} (measured: " + \
        ", ".join(f"{k} {res[k]}" for k in missing) + ")" if missing else ""
    print(f"{spec.name}: OK ({', '.join(res['checked']) or 'nothing recorded to check'}){extra}")
    return 0


def _path(args) -> int:
    _, path = _present(args)
    print(path.resolve())
    return 0


def weights_parser(prog: str = "msgnn-bench weights") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Official checkpoints: list, download, verify, path.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default=str(registry.ROOT), help="weights folder (default: weights)")
    common.add_argument("--registry", default=None,
                        help="checkpoint registry yaml (default: benchmark/weights/checkpoints.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", parents=[common], help="every checkpoint with its status").set_defaults(fn=_list)
    p = sub.add_parser("download", parents=[common], help="download (or take --from) and verify")
    p.add_argument("name")
    p.add_argument("--from", dest="source", default=None, help="a manually obtained file")
    p.add_argument("--force", action="store_true", help="fetch again even if present")
    p.set_defaults(fn=_download)
    for name, fn, text in (("verify", _verify, "re-check size, sha256 and git blob id"),
                           ("path", _path, "print the checkpoint file's path")):
        q = sub.add_parser(name, parents=[common], help=text)
        q.add_argument("name")
        q.set_defaults(fn=fn)
    return parser


def weights_main(argv: list[str] | None = None) -> int:
    args = weights_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ManualStep as exc:
        say(f"error: {exc}")
        return 3
    except OfflineError as exc:
        say(f"error: {exc}")
        return 1
    except (DatasetError, RegistryError, OSError) as exc:
        say(f"error: {exc}")
        return 1
