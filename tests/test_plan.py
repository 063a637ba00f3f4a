"""`msgnn-bench plan` (issue 27): on a fresh clone switched to the paper profile, `dvc repro --dry` stops
with "No such file or directory: data/rain200h" (DVC's run cache hashes an upstream output that does
not exist yet); the plan lists every stage in run order and the downloads the prepare stages need."""
from __future__ import annotations

import os
import subprocess
import sys

from benchmark.tools import cli, plan

from .test_dvc_deps import _scratch_repo


def test_paper_profile_plan_lists_stages_and_missing_downloads(tmp_path, monkeypatch):
    repo = _scratch_repo(tmp_path)
    assert cli.main(["profile", "paper", "--params", str(repo / "params.yaml")]) == 0
    env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS="1",
               PATH=f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}")
    r = subprocess.run([sys.executable, "-m", "benchmark.tools.cli", "plan"], cwd=repo, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    lines = r.stdout.splitlines()
    head, n_total = lines[0], len([s for s in subprocess.run(
        [sys.executable, "-m", "dvc", "stage", "list", "--name-only"], cwd=repo, env=env, capture_output=True,
        text=True, check=True).stdout.splitlines() if s.strip()])
    assert head == f"profile paper: `dvc repro` would run {n_total} of {n_total} stages, in this order:"
    stages = [ln.strip().split(":", 1)[0] for ln in lines[1:n_total + 1]]
    assert len(set(stages)) == n_total and all(ln.startswith("  ") for ln in lines[1:n_total + 1])
    # dependencies first: each dataset's prepare before its trainings, the report before the site
    for ds in ("rain200h", "rain200l", "rain1200", "rain1400"):
        assert stages.index(f"prepare@{ds}") < stages.index(f"train_msgnn@{ds}")
    assert stages.index("report") < stages.index("site")
    data = "\n".join(lines[n_total + 1:])
    assert lines[n_total + 1] == "datasets the prepare stages obtain:"
    assert ("rain200h (prepare@rain200h): MANUAL STEP: no direct link; put rain_data_train_Heavy.zip, "
            "rain_data_test_Heavy.gz in data/downloads/rain200h/") in data
    assert "rain1400 (prepare@rain1400): downloaded by the stage (needs network)" in data
    assert "real (prepare@rain200h): downloaded by the stage" in data  # an eval set of the Rain200H model

    # a placed archive is no longer asked for
    monkeypatch.chdir(repo)
    (repo / "data/downloads/rain200h").mkdir(parents=True)
    (repo / "data/downloads/rain200h/rain_data_train_Heavy.zip").write_bytes(b"placed")
    import yaml

    line = plan.dataset_lines(["rain200h"], yaml.safe_load((repo / "params.yaml").read_text()))[0]
    assert "put rain_data_test_Heavy.gz in" in line and "rain_data_train_Heavy.zip" not in line
