"""Set up the suite on a fresh clone and run its main jobs, with nothing but python3 and git.

    python3 -m benchmark.bootstrap repro   # create .venv if needed, then `dvc repro` (default profile)
    python3 -m benchmark.bootstrap test    # create .venv if needed, then the test suite

Standard library only: this runs before any dependency exists. The virtual environment is
re-installed only when pyproject.toml or the constraints file changed (a stamp file records
their hash), so repeated calls start immediately.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
CONSTRAINTS = ROOT / ".ci" / "constraints.txt"
STAMP = VENV / ".msgnn-bench-installed"


def _bin(name: str) -> Path:
    return VENV / ("Scripts" if os.name == "nt" else "bin") / name


def _digest() -> str:
    h = hashlib.sha256()
    for f in (ROOT / "pyproject.toml", CONSTRAINTS):
        h.update(f.read_bytes())
    return h.hexdigest()


def ensure_env() -> None:
    if STAMP.is_file() and STAMP.read_text() == _digest():
        return
    if not _bin("python").exists():
        print(f"bootstrap: creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("bootstrap: installing msgnn-bench and its dependencies (first run takes a few minutes)", flush=True)
    cmd = [str(_bin("python")), "-m", "pip", "install", "--disable-pip-version-check", "-q",
           "-c", str(CONSTRAINTS), "-e", f"{ROOT}[dev]"]
    subprocess.run(cmd, check=True, cwd=ROOT)
    STAMP.write_text(_digest())


def _env() -> dict[str, str]:
    # DVC stage commands say `python -m pipelines.…`: the venv must come first on PATH
    env = dict(os.environ)
    env["PATH"] = f"{_bin('python').parent}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV)
    return env


def run(args: list[str]) -> int:
    return subprocess.run(args, cwd=ROOT, env=_env()).returncode


def ensure_plots_page() -> None:
    """.dvc/plots.html, the offline page of `dvc plots show` (built, not committed: ~0.8 MB of Vega)."""
    if (ROOT / ".dvc" / "plots.html").is_file():
        return
    res = subprocess.run([str(_bin("python")), "-m", "benchmark.tools.cli", "plots-page"], cwd=ROOT, env=_env(),
                         stdout=subprocess.DEVNULL)
    if res.returncode != 0:  # the pipeline does not need it: say so and go on
        print("bootstrap: `dvc plots show` needs .dvc/plots.html; retry with `msgnn-bench plots-page`",
              file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("repro", "test", "setup"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        ensure_env()
    except subprocess.CalledProcessError as exc:
        print(f"bootstrap: installation failed ({exc}); see the pip output above", file=sys.stderr)
        return 1
    ensure_plots_page()
    if argv[0] == "repro":
        return run([str(_bin("dvc")), "repro", *argv[1:]])
    if argv[0] == "test":
        return run([str(_bin("python")), "-m", "pytest", *argv[1:]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
