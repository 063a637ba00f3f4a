"""The paper run rehearsed end to end (issue 24; docs/running-the-paper.md).

* the ``rehearsal`` profile is the ``paper`` profile's DAG exactly: the expanded stage lists (names,
  commands, deps, params) are equal once the profile name is set aside, and the two profile blocks
  differ only in budget keys;
* (slow; `.ci/run` calls it) in a scratch copy: every paper dataset built as a tiny archive in its
  release's layout (tests/helpers/rehearsal_archives.py), the automatic ones served from 127.0.0.1 through
  the real download code, the manual ones handed over with ``msgnn-bench datasets download --from``
  after ``prepare`` stopped with the manual step; then the checklist's several-workers run: ``dvc repro
  prepare``, ``msgnn-bench grid`` with two CPU workers over every training, evaluation and ablation
  stage, ``dvc repro`` (report, site) to Table 1 with every paper row, Tables 2-5 and Fig. 7 from the
  per-variant stages, the real-world images in the page, ``dvc status`` clean; then ``dvc repro``
  rebuilds a part of the DAG one stage at a time, SIGKILLed during a training and during an ablation
  stage and rerun, to the same ``dvc.lock`` outputs as the grid's.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml

from .conftest import REPO, SHARED, use_profile
from .test_dvc_deps import _expand, _git_commit, _scratch_repo

# What a rehearsal may change relative to `paper`: how long and on how much, never what runs.
BUDGET_TRAIN = {"iters", "epochs", "patch", "batch", "log_every", "ckpt_every", "val_images", "val_every"}
BUDGET_EVAL = {"save_images"}
BUDGET_ABLATION = {"train", "patch_scale", "eval_images"}
PAPER_ROWS = {("rain200h", "rain200h"), ("rain200l", "rain200l"), ("rain1200", "rain1200"),
              ("rain1400", "rain1400"), ("rain200h", "rain12")}  # (trained_on, dataset) of Table 1


def _stages(params: dict, profile: str) -> list[dict]:
    """The expanded stages of ``profile`` except the official-checkpoint ones: those score the authors'
    released weights on the old test sets (benchmark/weights/), not part of the paper's study DAG."""
    p = copy.deepcopy(params)
    use_profile(p, profile)
    out = [st for st in _expand(p) if not st["name"].startswith("official@")]
    for st in out:  # `profiles.<name>.train` is the same key of a different profile: compare the rest
        st["params"] = [x.replace(f"profiles.{profile}", "profiles.<profile>") for x in st["params"]]
    return out


def test_rehearsal_has_the_paper_dag_exactly(repo_params):
    paper, rehearsal = _stages(repo_params, "paper"), _stages(repo_params, "rehearsal")
    assert [s["name"] for s in rehearsal] == [s["name"] for s in paper]
    for a, b in zip(paper, rehearsal):
        assert a == b, f"{a['name']}: the rehearsal stage differs from the paper one"
    names = {s["name"].split("@")[0] for s in paper}
    assert {"prepare", "train_msgnn", "train", "evaluate", "evaluate_input", "ablation", "report", "site"} <= names
    # per-variant stages: the 26 of the paper's tables and figures + Table 4's other stride reading
    assert sum(s["name"].startswith("ablation@") for s in paper) == 28
    assert sum(s["name"].startswith(("train@", "train_msgnn@")) for s in paper) == 36


def test_rehearsal_differs_from_paper_only_in_budgets(repo_params):
    p, r = repo_params["profiles"]["paper"], repo_params["profiles"]["rehearsal"]
    assert set(p) - {"official"} == set(r) - {"official"}
    for key in p:
        if key in ("description", "official"):  # official checkpoints: not the study's DAG (see _stages)
            continue
        if key == "train":
            assert set(r[key]) | set(p[key]) <= BUDGET_TRAIN, key
        elif key == "eval":
            assert set(r[key]) | set(p[key]) <= BUDGET_EVAL, key
        elif key == "models":
            for m in set(r[key]) | set(p[key]):
                assert set(r[key].get(m, {})) <= {"train"}
                assert set(r[key].get(m, {}).get("train", {})) <= BUDGET_TRAIN, m
        elif key == "ablation":
            for k in set(p[key]) | set(r[key]):
                if k == "train":
                    assert set(r[key][k]) | set(p[key][k]) <= BUDGET_TRAIN
                elif k not in BUDGET_ABLATION:
                    assert r[key].get(k) == p[key].get(k), f"ablation.{k}"
        else:  # datasets, seeds, dataset_overrides (the sizes of the data, not a budget here)
            assert r[key] == p[key], key


def test_from_archive_survives_dvc_clearing_the_dataset(tmp_path):
    """`--from` keeps the archive in data/downloads/<key>/: DVC deletes data/<key> before prepare runs,
    and prepare must rebuild it from there (found by the rehearsal: it stopped with the manual step)."""
    import shutil

    from benchmark import datasets as ds

    from .helpers.dataset_fixtures import make_zip, rain100l_registry

    if not (SHARED / "data").is_dir():
        pytest.skip("needs ../shared/data")
    archive = make_zip("Rain100L_test", tmp_path / "Rain100L.zip", "Rain100L")
    reg = rain100l_registry(tmp_path)  # manual: no URL
    ds.download("rain100l", tmp_path / "data", source=archive, registry=reg, progress=False)
    kept = tmp_path / "data/downloads/rain100l/Rain100L.zip"
    assert kept.is_file() and kept.read_bytes() == archive.read_bytes()
    shutil.rmtree(tmp_path / "data/rain100l")  # what `dvc repro` does before prepare@rain100l
    ds.download("rain100l", tmp_path / "data", registry=reg, progress=False)
    assert len(list((tmp_path / "data/rain100l/test/input").iterdir())) == 20


def test_prepare_checks_an_eval_set_where_it_put_it(tmp_path, monkeypatch, capsys):
    """prepare@rain200h obtains Rain12 into data/eval_sets/rain200h/rain12 and checks that folder
    (it used to check data/rain12 and fail: found by the rehearsal)."""
    import shutil

    from benchmark import datasets
    from benchmark.core import config
    from pipelines import prepare

    if not (SHARED / "data").is_dir():
        pytest.skip("needs ../shared/data")
    monkeypatch.chdir(tmp_path)

    def fake_download(name, root, **kw):  # the download itself is tested elsewhere: place two pairs
        for sub in ("input", "target"):
            (Path(root) / name / "test" / sub).mkdir(parents=True, exist_ok=True)
            for i in (1, 2):
                shutil.copy(SHARED / f"data/Rain100L_test/{sub}/{i}.png", Path(root) / name / "test" / sub / f"{i}.png")
        return Path(root) / name

    monkeypatch.setattr(datasets, "download", fake_download)
    params = copy.deepcopy(config.load_params(REPO / "params.yaml"))
    params["datasets"]["rain200h"]["eval_sets"] = ["rain200h", "rain12"]
    fake_download("rain200h", "data")
    prepare.prepare("rain200h", params)
    assert "rain12: checked test 2" in capsys.readouterr().out


def test_checkpoint_takes_the_fractional_scales_of_an_ablation_variant(tmp_path):
    """ablation@scales-1-2 (MSGNN ``scales: [1, 0.5]``) saved its variant and then refused to load it:
    the argument check took the int 1 of the default (1, 0.5, 0.25) as the element type (found by the
    rehearsal). Fractions load; a string, a NaN or an overlong list are still refused."""
    from benchmark.core import checkpoints

    assert checkpoints.check_model_args("msgnn", {"scales": [1, 0.5]}, "f.pt") == {"scales": [1, 0.5]}
    assert checkpoints.check_model_args("msgnn", {"scales": [1, 0.25]}, "f.pt") == {"scales": [1, 0.25]}
    for bad in (["a"], [float("nan")], [1.0] * 17, [True]):
        with pytest.raises(checkpoints.CheckpointError, match="f.pt"):
            checkpoints.check_model_args("msgnn", {"scales": bad}, "f.pt")
    assert checkpoints.check_model_args("msgnn", {"n_subnets": 8}, "f.pt") == {"n_subnets": 8}
    with pytest.raises(checkpoints.CheckpointError, match="whole number"):
        checkpoints.check_model_args("msgnn", {"n_subnets": 2.5}, "f.pt")


def test_site_reads_a_test_only_set_from_eval_sets_and_lists_absent_images(tmp_path, monkeypatch, tiny_params):
    """The page's comparison grid of a test-only set (Rain12, real-world) reads it from
    data/eval_sets/<training set>/<set>, where prepare put it (it read data/<set> and stopped: found by
    the rehearsal); a run whose set's images this workspace lacks (the quick profile's committed
    rain-synth runs in a paper workspace) is listed as not shown instead of stopping the stage."""
    from pipelines import evaluate, prepare, site

    monkeypatch.chdir(tmp_path)
    tiny_params["tracking"]["enabled"] = False
    tiny_params["report"]["images"] = {"rain12": ["1"], "rain-synth": ["1"]}
    tiny_params["report"]["crops"] = {}
    prepare.prepare("rain-synth", tiny_params)
    # Rain12 where prepare@rain-synth would have put it (its download is tested elsewhere)
    shutil.copytree(tmp_path / "data/rain-synth/test", tmp_path / "data/eval_sets/rain-synth/rain12/test")
    tiny_params["datasets"]["rain-synth"]["eval_sets"] = ["rain-synth", "rain12"]
    evaluate.evaluate("input", "rain-synth", params=tiny_params, progress=False)
    shutil.rmtree(tmp_path / "data/rain-synth")  # that set's images are absent here; Rain12's are not
    res = site.build(Path("runs"), Path("data"), Path("reports"), tiny_params, {})
    assert (tmp_path / "reports/site/compare_rain12_1.png").is_file()
    assert not (tmp_path / "reports/site/compare_rain-synth_1.png").exists()
    assert [m.split(":")[0] for m in res["missing"]] == ["rain-synth/1"], res["missing"]
    assert "data/rain-synth" in res["missing"][0]  # which folder is missing, said on the page
    page = (tmp_path / "reports/index.html").read_text()
    assert "Not shown:" in page and "rain12 / 1" in page


# ------------------------------------------------------------------ the slow rehearsal

def _server(files: dict[str, bytes]):
    from .helpers.dataset_fixtures import _Handler as Handler  # serves Range requests like a real mirror

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.requests, srv.cut_first, srv.honour_range = dict(files), [], {}, True
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv


def _run(repo: Path, env: dict, *cmd: str, ok: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    if ok:
        assert out.returncode == 0, f"{' '.join(cmd)}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


# What a stage writes that no rerun can reproduce: wall-clock timings and run provenance. Everything
# else of every output (weights, images, numbers, tables, figures, the page) must be byte-identical.
VOLATILE = {"seconds", "sec_per_step", "git_commit", "mlflow_run_id", "train_run_id"}


def _normalised(path: Path) -> bytes:
    """A file's bytes, minus the VOLATILE fields of JSON/CSV records and the page's generation time."""
    data = path.read_bytes()
    if path.suffix == ".json":
        def drop(x):
            if isinstance(x, dict):
                return {k: drop(v) for k, v in x.items() if k not in VOLATILE}
            return [drop(v) for v in x] if isinstance(x, list) else x
        return json.dumps(drop(json.loads(data)), sort_keys=True).encode()
    if path.suffix == ".csv":
        rows = list(csv.reader(io.StringIO(data.decode())))
        keep = [i for i, h in enumerate(rows[0] if rows else []) if h not in VOLATILE]
        return "\n".join(",".join(r[i] for i in keep if i < len(r)) for r in rows).encode()
    if path.suffix == ".html":
        return re.sub(rb"generated \(UTC\).{0,80}?\d{4}-\d\d-\d\d \d\d:\d\d", b"", data)
    if path.name == "last.pt":  # the resume checkpoint carries the open log window's wall-clock seconds
        return _canonical(torch.load(path, weights_only=True, map_location="cpu"))
    return data


def _canonical(x) -> bytes:
    """A checkpoint's content as bytes, VOLATILE keys dropped: tensors by dtype, shape and raw bytes."""
    if isinstance(x, dict):
        return b"{" + b",".join(repr(k).encode() + b":" + _canonical(v)
                                for k, v in sorted(x.items(), key=lambda kv: repr(kv[0]))
                                if k not in VOLATILE) + b"}"
    if isinstance(x, (list, tuple)):
        return b"[" + b",".join(_canonical(v) for v in x) + b"]"
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu().contiguous()
        return f"T{t.dtype}{tuple(t.shape)}".encode() + t.view(-1).view(torch.uint8).numpy().tobytes()
    return repr(x).encode()


def _outs(repo: Path) -> dict[str, str]:
    """{output path: digest} over every output in dvc.lock: the lock's md5 where the output holds no
    VOLATILE field, else a hash of its files with those fields dropped (per-image seconds, sec/step)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    out = {}
    for st in lock.values():
        for o in st.get("outs", []):
            p = repo / o["path"]
            files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
            h = hashlib.md5()
            volatile = False
            for f in files:
                raw, norm = f.read_bytes() if f.exists() else b"<missing>", _normalised(f) if f.exists() else b""
                volatile |= f.exists() and norm != raw
                h.update(f.relative_to(repo).as_posix().encode() + b"\0" + (norm if f.exists() else raw))
            out[o["path"]] = ("norm:" + h.hexdigest()) if volatile else o["md5"]
    return out


def _kill_during(repo: Path, env: dict, args: list[str], marker: str, after_s: float = 2.0) -> None:
    """Start `dvc repro ARGS`, wait until a stage process whose command line holds ``marker`` runs,
    give it ``after_s`` seconds, then SIGKILL the whole process group (what a lost node does)."""
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", *args], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if _group_runs(proc.pid, marker):
                time.sleep(after_s)
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"dvc repro {args} ended before a {marker!r} stage could be killed"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the process group: dvc and the stage it started
        proc.wait()


def _group_runs(pgid: int, marker: str) -> bool:
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if os.getpgid(int(d.name)) == pgid and marker in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                return True
        except (OSError, ProcessLookupError):
            continue
    return False


# The part of the DAG that `dvc repro` reruns one stage at a time after the grid built everything: a
# dataset's prepare -> trainings -> evaluations (MSGNN, a baseline, the rainy input), two per-variant
# ablation stages, the report and the page: every kind of stage, each in its DAG position.
SEQ_PART = ["prepare@rain1400", "train_msgnn@rain1400", "train@prenet-rain1400", "evaluate_msgnn@rain1400",
            "evaluate@prenet-rain1400", "evaluate_input@rain1400", "ablation@m1-0", "ablation@m2-0",
            "report", "site"]


def _forget(repo: Path, names: list[str]) -> None:
    """Put ``names`` back to never having run: their outputs (and the trainings' resume checkpoints)
    deleted, their dvc.lock entries dropped, DVC's run cache emptied. Otherwise DVC would check the
    outputs out of its cache (the lock still names them) or restore them from the run cache."""
    from benchmark.tools import grid

    jobs = grid.collect(repo, names)
    assert {j.name for j in jobs} == set(names)
    for job in jobs:
        for o in job.outs:
            p = repo / o
            p = p.parent if p.name == "model.pt" else p  # runs/train/<key>/: last.pt too
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    from ruamel.yaml import YAML  # DVC's own YAML (1.2): PyYAML would read `1e-08` back as a string

    rt = YAML()
    lock = rt.load(repo / "dvc.lock")
    for name in names:
        del lock["stages"][name]
    rt.dump(lock, repo / "dvc.lock")
    shutil.rmtree(repo / ".dvc/cache/runs", ignore_errors=True)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="needs ../shared/data (real images for the archives)")
def test_paper_rehearsal_from_release_archives(tmp_path):
    from .helpers import rehearsal_archives as ra

    t0 = time.monotonic()
    phases: dict[str, float] = {}

    def phase(name: str, since: float) -> float:
        phases[name] = time.monotonic() - since
        return time.monotonic()

    repo = _scratch_repo(tmp_path)
    srv = _server({})
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    built = ra.build(tmp_path / "archives", base)
    # the DDN list names files with spaces: the code asks for quoted URLs, the server answers those
    srv.files.update({urllib.parse.quote(k): v.read_bytes() for k, v in built["served"].items()})
    venv = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{venv}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=str(repo),  # `msgnn-bench` imports the scratch copy, not the installed tree
               MSGNN_DATASETS_REGISTRY=str(built["registry"]), no_proxy="127.0.0.1,localhost",
               # one torch thread in every stage: two CPU workers share two cores, and on a CPU MSGNN's
               # weights depend on the thread count (summation order), so grid and dvc repro use the same
               OMP_NUM_THREADS="1")
    t = phase("scratch copy and archives", t0)
    try:
        # docs/running-the-paper.md, step by step
        _run(repo, env, "msgnn-bench", "profile", "rehearsal")
        params = repo / "params.yaml"
        text = params.read_text()  # report.images: a Rain200H test image and a real-world one (step 3)
        text = text.replace('    rain-synth: ["1", "3"]\n',
                            '    rain-synth: ["1", "3"]\n    rain200h: ["1"]\n    real: ["1"]\n', 1)
        assert 'real: ["1"]' in text
        # MLflow off: `tracking` is no stage's param (dvc.yaml) and changes no output but the run ids
        # (VOLATILE); it costs ~4 s CPU a stage (import, SQLite store, run; measured 11.0 vs 6.8 s for a
        # 1-step training), ~40% of the rehearsal. Logging from these stages is tested in test_tracking*.
        text = text.replace("tracking:\n  enabled: true\n", "tracking:\n  enabled: false\n", 1)
        assert "tracking:\n  enabled: false\n" in text
        params.write_text(text)
        _git_commit(repo, "rehearsal profile")

        # a manual dataset whose archive is missing: prepare stops with the manual step
        out = _run(repo, env, sys.executable, "-m", "dvc", "repro", "prepare@rain200h", ok=False)
        assert out.returncode != 0
        msg = out.stdout + out.stderr
        for piece in ("dataset 'rain200h' has no public direct download; a manual step is needed",
                      "https://www.icst.pku.edu.cn/struct/Projects/joint_rain_removal.html",
                      "data/downloads/rain200h/rain_data_train_Heavy.zip",
                      "data/downloads/rain200h/rain_data_test_Heavy.gz",
                      "msgnn-bench datasets download rain200h --from"):
            assert piece in msg, f"missing {piece!r} in:\n{msg[-3000:]}"
        for key in ra.MANUAL:  # what the message says: hand the archives over with --from
            for archive in built["manual"][key]:
                _run(repo, env, "msgnn-bench", "datasets", "download", key, "--from", str(archive))
        t = phase("manual step and --from hand-overs", t)

        # step 4, several workers (two CPU workers here), exactly as the checklist gives it
        _run(repo, env, sys.executable, "-m", "dvc", "repro", "prepare")
        t = phase("dvc repro prepare", t)
        _run(repo, env, "msgnn-bench", "grid", "--devices", "cpu,cpu", "train*", "evaluate*", "ablation*")
        t = phase("grid: 36 trainings, 40 evaluations, 28 ablation stages", t)
        out = _run(repo, env, sys.executable, "-m", "dvc", "repro")
        ran = set(re.findall(r"Running stage '([^']+)'", out.stdout))
        assert {"report", "site"} <= ran and not any(r.startswith(("train", "evaluate", "ablation")) for r in ran), ran
        t = phase("dvc repro (report, site)", t)
        served = {urllib.parse.unquote(p) for p, _ in srv.requests}
        assert {"/li_cvpr16_rain.zip", "/Practical.zip", "/ddn/rainy image/901_1.jpg"} <= served

        rows = list(csv.DictReader((repo / "reports/table1.csv").open()))
        models = yaml.safe_load((REPO / "params.yaml").read_text())["trained_models"]
        for trained_on, dataset in PAPER_ROWS:
            for m in models:
                row = [r for r in rows if (r["model"], r["trained_on"], r["dataset"]) == (m, trained_on, dataset)]
                assert row and row[0]["psnr"] not in ("", "nan"), f"Table 1 lacks {m} on {dataset} ({trained_on} model)"
        page = (repo / "reports/index.html").read_text()
        assert "real / 1" in page and "rain200h / 1" in page
        assert (repo / "reports/site/compare_real_1.png").is_file()
        for tab in ("table2", "table3", "table4", "table5", "fig7"):
            cells = list(csv.DictReader((repo / f"reports/{tab}.csv").open()))
            assert cells and all(c["psnr"] not in ("", "nan") for c in cells), tab
        assert (repo / "reports/figures/fig7_subnetworks.png").is_file()
        variants = yaml.safe_load(params.read_text())["profiles"]["rehearsal"]["ablation"]["variants"]
        assert len(variants) == 28  # one stage each: the 26 of the paper's tables/figures + Table 4's s=3 reading
        missing = [v for v in variants if not (repo / f"runs/eval/ablation-{v}-s0.json").is_file()]
        assert not missing, f"no ablation summary for {missing}"
        assert "up to date" in _run(repo, env, sys.executable, "-m", "dvc", "status").stdout
        want = _outs(repo)

        # one stage at a time: `dvc repro` rebuilds SEQ_PART, as if it had never run, to the grid's
        # outputs, SIGKILLed during a training and during an ablation stage and rerun each time
        # (step 5: the same command again)
        t = time.monotonic()
        _forget(repo, SEQ_PART)
        _kill_during(repo, env, [], "pipelines.train --model prenet")
        _kill_during(repo, env, [], "--group m2")
        out = _run(repo, env, sys.executable, "-m", "dvc", "repro")
        ran = set(re.findall(r"Running stage '([^']+)'", out.stdout))
        assert {"ablation@m2-0", "report", "site"} <= ran <= set(SEQ_PART), ran  # what the kills left
        assert "up to date" in _run(repo, env, sys.executable, "-m", "dvc", "status").stdout
        got = _outs(repo)
        assert got == want, {k: (want.get(k), got.get(k)) for k in set(want) | set(got) if want.get(k) != got.get(k)}
        phase("dvc repro of a part, killed twice, rerun", t)
    finally:
        srv.shutdown()
        srv.server_close()
        print("\nrehearsal: " + ", ".join(f"{k} {v:.0f} s" for k, v in phases.items())
              + f"; whole test {time.monotonic() - t0:.0f} s")
