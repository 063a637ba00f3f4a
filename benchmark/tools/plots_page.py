"""``msgnn-bench plots-page``: the HTML template that makes ``dvc plots show`` draw offline.

DVC's own page loads Vega, Vega-Lite and vega-embed from a CDN, so it is blank without network.
``.dvc/config`` names ``.dvc/plots.html`` as the template (``plots.html_template``); this command
writes that file with the three libraries inlined. They come from their npm packages (pinned
versions, each tarball checked against its pinned sha512 integrity; all three BSD-3-Clause, their
licence texts kept beside the code in the page) through ``npm pack``, or from a folder of those
tarballs (``--from``). The inlined JS is ~0.8 MB, so the template is built, not committed
(``.dvc/.gitignore``); ``python3 -m benchmark.bootstrap`` builds it once.

The template also asks vega-embed for SVG output (``usermeta.embedOptions`` in the plot templates
of pipelines/plots/), so a page's marks can be read back as elements.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import html
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmark.core import io

TEMPLATE = Path(".dvc") / "plots.html"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    script: str       # path of the browser build inside the tarball's package/ folder
    integrity: str    # npm's sha512 "integrity" of the tarball

    @property
    def tarball(self) -> str:  # the name `npm pack` gives the file
        return f"{self.name}-{self.version}.tgz"


# The Vega 5 / Vega-Lite 5 line that DVC's own page uses (newer majors than DVC's pins, same APIs);
# order matters: vega-embed expects the other two as globals.
PACKAGES = (
    Package("vega", "5.33.0", "build/vega.min.js",
            "sha512-jNAGa7TxLojOpMMMrKMXXBos4K6AaLJbCgGDOw1YEkLRjUkh12pcf65J2lMSdEHjcEK47XXjKiOUVZ8L+MniBA=="),
    Package("vega-lite", "5.23.0", "build/vega-lite.min.js",
            "sha512-l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA=="),
    Package("vega-embed", "6.29.0", "build/vega-embed.min.js",
            "sha512-PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q=="),
)


class PlotsPageError(RuntimeError):
    """One line for the user: which package or file, and what went wrong."""


def integrity(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def fetch(packages: tuple[Package, ...], dest: Path) -> None:
    """``npm pack`` each pinned package into ``dest`` (npm's own cache answers repeated calls offline)."""
    npm = shutil.which("npm")
    if npm is None:
        raise PlotsPageError("npm not found: install Node.js/npm, or pass --from a folder holding "
                             + ", ".join(p.tarball for p in packages))
    for p in packages:
        res = subprocess.run([npm, "pack", f"{p.name}@{p.version}", "--pack-destination", str(dest), "--silent"],
                             capture_output=True, text=True)
        if res.returncode != 0 or not (dest / p.tarball).is_file():
            last = (res.stderr.strip().splitlines() or ["no output"])[-1]
            raise PlotsPageError(f"npm pack {p.name}@{p.version} failed: {last}")


def read_package(p: Package, folder: Path) -> tuple[str, str]:
    """The browser build and licence text of ``p`` from its checked tarball in ``folder``."""
    tgz = folder / p.tarball
    if not tgz.is_file():
        raise PlotsPageError(f"{tgz}: not found")
    got = integrity(tgz)
    if got != p.integrity:
        raise PlotsPageError(f"{tgz}: integrity {got[:30]}... differs from the pinned {p.integrity[:30]}... "
                             "(damaged or another version)")
    try:
        with tarfile.open(tgz) as tar:  # read two named members only; nothing is extracted to disk
            files = [tar.extractfile(f"package/{name}") for name in (p.script, "LICENSE")]
            if None in files:
                raise KeyError
            script, licence = (f.read().decode("utf-8") for f in files)  # type: ignore[union-attr]
    except (KeyError, tarfile.TarError, UnicodeDecodeError) as exc:
        raise PlotsPageError(f"{tgz}: no readable package/{p.script} and package/LICENSE ({exc!r})") from exc
    if "</script" in script.lower():  # would end the inline <script> element early
        raise PlotsPageError(f"{tgz}: {p.script} contains '</script' and cannot be inlined")
    return script, licence


def render(parts: list[tuple[Package, str, str]]) -> str:
    """The template: DVC fills {plot_divs} (and {refresh_tag}); no {scripts}, so no CDN tags are added."""
    blocks = []
    for p, script, licence in parts:
        note = licence.replace("*/", "* /")
        blocks.append(f"<script>/*! {p.name} {p.version} (npm), licence:\n{note}\n*/\n{script}\n</script>")
    versions = html.escape(", ".join(f"{p.name} {p.version}" for p, _, _ in parts))
    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n{refresh_tag}\n"
            f"<title>DVC plots (msgnn-bench, offline: {versions})</title>\n"
            + "\n".join(blocks) +
            "\n<style>body { font-family: sans-serif; } div[id] { margin: 1em 0; }</style>\n"
            "</head>\n<body>\n{plot_divs}\n</body>\n</html>\n")


def build(out: Path = TEMPLATE, source: Path | None = None) -> Path:
    """Write the template to ``out`` atomically, from ``source`` tarballs or freshly packed ones."""
    with tempfile.TemporaryDirectory(prefix="plots-page-") as tmp:
        folder = Path(source) if source is not None else Path(tmp)
        if source is None:
            fetch(PACKAGES, folder)
        parts = [(p, *read_package(p, folder)) for p in PACKAGES]
    io.write_text(out, render(parts))
    return out


def plots_page_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="msgnn-bench plots-page",
                                 description="write the offline HTML template of `dvc plots show` (.dvc/plots.html)")
    ap.add_argument("--out", default=str(TEMPLATE), help="template path (default: .dvc/plots.html)")
    ap.add_argument("--from", dest="source", default=None,
                    help="folder holding the pinned npm tarballs (" + ", ".join(p.tarball for p in PACKAGES) + ")")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if not out.parent.is_dir():
        print(f"msgnn-bench plots-page: error: {out.parent}: no such folder (run it in the repository root)",
              file=sys.stderr)
        return 1
    try:
        build(out, Path(args.source) if args.source else None)
    except (PlotsPageError, OSError) as exc:
        print(f"msgnn-bench plots-page: error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0
