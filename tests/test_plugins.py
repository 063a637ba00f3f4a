"""Issue 21: plugin models (entry point and local file) and scoring folders of output images."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.core import config, deps, plugins, registry

from . import test_dvc_deps as dd
from .conftest import REPO, SHARED

LOCAL = "examples/local_model/widecnn.py"


@pytest.fixture(autouse=True)
def _fresh_plugins(monkeypatch):
    monkeypatch.chdir(REPO)
    plugins.reset()
    yield
    for name in list(registry._MODELS):
        if name not in registry.BUILTIN:
            registry._MODELS.pop(name)
            registry._INFO.pop(name, None)
            registry.DISPLAY.pop(name, None)
    registry._RECORDED.clear()
    from benchmark.tools import memory

    memory._probed.clear()  # per-process caches keyed by model name
    memory._told.clear()
    plugins.reset()


def _with_local(params: dict) -> dict:
    p = copy.deepcopy(params)
    p["plugins"] = {"widecnn": f"{LOCAL}:build"}
    config.declare_plugins(p)
    p["plugin_runs"] = config.plugin_runs_for(p)
    p["models"]["widecnn"] = {}
    return p


def test_local_file_plugin_is_a_model(repo_params):
    p = _with_local(repo_params)
    assert "widecnn" in registry.list_models()
    info = registry.model_info("widecnn")
    assert (info.display, info.venue, info.year) == ("WideCNN", "local example", 2025)
    assert registry.display_name("widecnn") == "WideCNN"
    assert registry.paper_rank("widecnn") >= len(registry.ORDER)
    cfg = config.resolve("widecnn", "rain-synth", p)
    assert cfg.key == "widecnn-rain-synth"
    assert p["plugin_runs"]["widecnn-rain-synth"] == {"model": "widecnn", "dataset": "rain-synth", "source": LOCAL}


def test_plugin_stages_deps_cover_the_plugin_file_and_nothing_more(repo_params):
    p = _with_local(repo_params)
    stages = [st for st in dd._expand(p) if st["name"].endswith("plugin@widecnn-rain-synth")]
    assert {st["name"] for st in stages} == {"train_plugin@widecnn-rain-synth", "evaluate_plugin@widecnn-rain-synth"}
    for st in stages:
        files = set(deps.files(dd._entry(st["cmd"]), dd._model_of(st["cmd"])))
        assert LOCAL in files and LOCAL in st["deps"]
        assert not sorted(f for f in files if not dd._covered(f, st["deps"])), st["name"]
        assert not sorted(dd._code_files(st["deps"]) - files), st["name"]
    # no other stage depends on the plugin's file: editing it re-runs only its two stages
    others = [st for st in dd._expand(p) if "plugin@" not in st["name"]]
    assert not any(dd._covered(LOCAL, st["deps"]) for st in others)
    assert LOCAL in deps.training_code("widecnn") and LOCAL not in deps.training_code("prenet")


def _bad(tmp_path: Path, body: str, name: str = "bad") -> str:
    (tmp_path / "m.py").write_text("import torch\nfrom torch import nn\n" + body)
    plugins.declare({name: "m.py:build"}, base=tmp_path)
    with pytest.raises(plugins.PluginError) as e:
        registry.build_model(name)
    msg = str(e.value)
    assert "\n" not in msg and f"plugin {name!r}" in msg
    return msg


def test_contract_errors_are_one_line_naming_the_plugin(tmp_path):
    assert "cannot import" in _bad(tmp_path, "import no_such_module_xyz\ndef build(): pass\n")
    assert "not a torch.nn.Module" in _bad(tmp_path, "def build(): return 3\n")
    assert "wrong shape" in _bad(tmp_path, "def build(): return nn.Conv2d(3, 1, 1)\n")
    assert "collides with a built-in" in _bad(tmp_path, "def build(): return nn.Identity()\n", name="prenet")
    assert "no attribute" in _bad(tmp_path, "def other(): return nn.Identity()\n")
    plugins.declare({"bad": "m.py:build"}, base=tmp_path)
    with pytest.raises(config.ConfigError, match="baselines: 'bad' is a plugin"):
        raw = {"baselines": ["bad"]}
        config._check_plugin_runs(Path("params.yaml"), raw)


def test_entry_point_plugin_from_outside_the_repository(tmp_path):
    """pip install --target of examples/tiny_plugin; the suite run from a folder outside the repository."""
    site = tmp_path / "site"
    src = tmp_path / "src"
    shutil.copytree(REPO / "examples/tiny_plugin", src)  # build in a copy: no build/ in the repository
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
                    "--target", str(site), str(src)], check=True, capture_output=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{REPO}")
    out = subprocess.run([sys.executable, "-m", "benchmark.tools.cli", "models", "--json"], cwd=outside,
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    row = {r["name"]: r for r in json.loads(out.stdout)}["tinycnn"]
    assert row["plugin"] and row["display"] == "TinyCNN" and row["params_total"] == 3 * 16 * 9 + 16 + 16 * 16 * 9 + 16 + 16 * 3 * 9 + 3
    code = ("from benchmark.core import deps, plugins; s = plugins.spec('tinycnn'); print(s.kind, s.path); "
            "print(deps.training_code('tinycnn'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=outside, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    kind, path = out.stdout.splitlines()[0].split(" ", 1)
    assert kind == "entry-point" and Path(path) == (site / "tiny_plugin").resolve()
    assert str((site / "tiny_plugin/net.py").resolve()) in out.stdout.splitlines()[1]


def _pred_gt(shared, tmp_path, n=3):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    for sub in ("input", "target"):
        (gt / sub).mkdir(parents=True)
    pred.mkdir()
    for i in range(1, n + 1):
        for sub in ("input", "target"):
            shutil.copy(shared / f"data/Rain100L_old_full/{sub}/{i}.png", gt / sub / f"{i}.png")
        shutil.copy(shared / f"data/published_outputs/Rain2Avoid_Rain100L/{i}.png", pred / f"{i}.png")
    return pred, gt


def test_score_cli_on_published_outputs(shared, tmp_path):
    from benchmark.evaluation import protocols
    from benchmark.tools import cli

    pred, gt = _pred_gt(shared, tmp_path)
    out = subprocess.run([sys.executable, "-m", "benchmark.tools.cli", "score", "--pred", str(pred), "--gt", str(gt),
                          "--json", "--out", str(tmp_path / "run")], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["n_images"] == 3 and set(res["protocols"]) == set(protocols.ALL)
    assert 20 < res["protocols"]["msgnn"]["psnr"] < 40
    m = json.loads((tmp_path / "run/metrics.json").read_text())
    assert m["results"]["gt"]["n_images"] == 3 and "psnr:msgnn" in m["results"]["gt"]
    assert len(m["source"]["fingerprint"]) == 64
    assert (tmp_path / "run/per_image.csv").read_text().count("\n") == 4
    # refusals: one line naming the file
    (pred / "9.png").write_bytes((pred / "1.png").read_bytes())
    assert cli.main(["score", "--pred", str(pred), "--gt", str(gt)]) == 1
    (pred / "9.png").unlink()
    (pred / "3.png").unlink()
    assert cli.main(["score", "--pred", str(pred), "--gt", str(gt)]) == 1
    from PIL import Image
    Image.new("RGB", (10, 10)).save(pred / "3.png")
    assert cli.main(["score", "--pred", str(pred), "--gt", str(gt)]) == 1
    (pred / "3.png").write_bytes(b"not a png")
    assert cli.main(["score", "--pred", str(pred), "--gt", str(gt)]) == 1


def test_score_refusals_name_the_file(shared, tmp_path):
    from benchmark.tools import score

    pred, gt = _pred_gt(shared, tmp_path, 2)
    (pred / "7.png").write_bytes((pred / "1.png").read_bytes())
    with pytest.raises(score.ScoreError, match=r"7\.png: no ground truth"):
        score.score_folder(pred, gt)
    (pred / "7.png").unlink()
    (pred / "2.png").unlink()
    with pytest.raises(score.ScoreError, match=r"2\.png: no output image"):
        score.score_folder(pred, gt)


def test_results_stage_writes_a_table1_row(shared, tmp_path, repo_params, monkeypatch):
    """score@<name>-<dataset> through pipelines.score into runs/eval/, collected like an evaluate run."""
    from benchmark.reporting import tables
    from pipelines import score as stage

    pred, gt = _pred_gt(shared, tmp_path, 2)
    work = tmp_path / "w"
    (work / "data/rain100l").mkdir(parents=True)
    shutil.copytree(gt, work / "data/rain100l/test")
    p = copy.deepcopy(repo_params)
    p["results"] = {"rain2avoid": {"rain100l": str(pred)}}
    p["score_runs"] = config.score_runs_for(p)
    import yaml
    (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    monkeypatch.chdir(work)
    plugins.reset()
    assert stage.main(["--name", "rain2avoid", "--dataset", "rain100l"]) == 0
    rows = tables.collect(Path("runs"))
    assert [(r["key"], r["model"], r["dataset"]) for r in rows] == [("rain2avoid-rain100l", "rain2avoid", "rain100l")]
    assert registry.display_name("rain2avoid") == "rain2avoid (published outputs, re-scored)"


def test_plugin_trains_and_evaluates_on_the_ci_profile(repo_params, tmp_path, monkeypatch):
    """The train/evaluate stage bodies with a local-file plugin on a shrunk ci profile; its row is collected
    for Table 1 with its display name. With the example package installed (CI: pip install examples/tiny_plugin)
    the entry-point model tinycnn runs too."""
    from benchmark.reporting import tables
    from benchmark.training.run import train
    from benchmark.evaluation.run import evaluate
    from pipelines import prepare

    from .conftest import tiny_ci

    p = _with_local(tiny_ci(repo_params, tmp_path / "mlflow.db", "plugins", n_test=2, ckpt_every=3))
    p["tracking"]["enabled"] = False
    models = ["widecnn"] + (["tinycnn"] if plugins.spec("tinycnn") else [])
    for m in models:
        p["models"].setdefault(m, {})
    monkeypatch.chdir(tmp_path)
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    config.declare_plugins(p)
    prepare.prepare("rain-synth", p)
    for m in models:
        train(m, "rain-synth", "cpu", params=p, progress=False)
        evaluate(m, "rain-synth", params=p, progress=False)
    rows = {r["model"]: r for r in tables.collect(Path("runs"))}
    assert set(models) <= set(rows)
    assert registry.display_name("widecnn") == "WideCNN"


def test_profile_switch_keeps_plugin_and_score_runs_in_step(tmp_path, monkeypatch):
    """`msgnn-bench profile NAME` rewrites plugin_runs / score_runs for the new run_datasets (as `plugins
    sync` does), adding models.<plugin>; without that the switched file would not validate."""
    from benchmark.tools import cli
    from ruamel.yaml import YAML

    monkeypatch.chdir(tmp_path)
    y = YAML(typ="rt")
    doc = y.load((REPO / "params.yaml").read_text())
    doc["plugins"] = {"widecnn": f"{LOCAL}:build"}
    doc["results"] = {"outs": {"rain100l": "published/outs"}}
    with open("params.yaml", "w") as fh:
        y.dump(doc, fh)
    assert cli.main(["profile", "ci"]) == 0
    raw = config.load_params("params.yaml")
    assert raw["plugin_runs"]["widecnn-rain-synth"] == {"model": "widecnn", "dataset": "rain-synth", "source": LOCAL}
    assert raw["score_runs"] == {"outs-rain100l": {"name": "outs", "dataset": "rain100l", "folder": "published/outs"}}
    assert raw["models"]["widecnn"] == {}
    assert cli.main(["profile", "paper"]) == 0
    raw = config.load_params("params.yaml")
    assert {k for k, e in raw["plugin_runs"].items() if e["model"] == "widecnn"} == {
        f"widecnn-{d}" for d in raw["profiles"]["paper"]["datasets"]}
    assert "# Plugin models" in Path("params.yaml").read_text()  # comments kept


def test_memory_estimate_of_a_plugin(tmp_path, capsys):
    """A plugin has no measured line: the meta-device probe gives one, above the measured line of the
    built-ins it was calibrated on; a model the meta device cannot run has "no estimate", said once."""
    from benchmark.tools import memory

    for name in ("rescan", "dualgcn", "moss"):  # cheap to probe; measured lines in memory.COEFFS
        fixed, per_px = memory.probed(name)
        assert per_px >= memory.COEFFS[name][1] and fixed >= memory.COEFFS[name][0], name
    plugins.declare({"widecnn": f"{LOCAL}:build"})
    assert memory.coefficients("widecnn") == memory.probed("widecnn")
    assert memory.need("widecnn", 321, 481) > memory.need("widecnn", 64, 64) > 0
    (tmp_path / "m.py").write_text(
        "import torch\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x * float(x.mean().item() > -1)  # data-dependent: fine on real tensors, not on meta\n"
        "def build(): return Net()\n")
    plugins.declare({"itemnet": "m.py:build"}, base=tmp_path)
    registry.build_model("itemnet")  # the contract probe passes
    assert memory.need("itemnet", 64, 64) is None
    for _ in range(2):
        memory.check("itemnet", Path("a.png"), 64, 64, free=1)  # no estimate: not refused
    err = capsys.readouterr().err
    assert err.count("memory: no estimate for itemnet") == 1 and "skipped" in err


def test_report_names_come_from_the_runs(tmp_path):
    """tables.collect records the display name a plugin run's metrics.json carries: the report stages
    name the row without loading the plugin (here: no plugin of that name is even declared)."""
    from benchmark.core import io
    from benchmark.reporting import tables

    plugins.declare({})
    run = tmp_path / "runs/eval/ghostnet-rain-synth"
    io.write_json(run / "metrics.json", {"model": "ghostnet", "display": "GhostNet", "dataset": "rain-synth",
                                         "key": "ghostnet-rain-synth", "profile": "ci", "params_total": 7,
                                         "params_trainable": 7, "results": {"rain-synth": {"n_images": 1, "psnr_y": 20.0}}})
    assert registry.display_name("ghostnet") == "ghostnet"
    [row] = tables.collect(tmp_path / "runs")
    assert row["model"] == "ghostnet" and registry.display_name("ghostnet") == "GhostNet"


def test_gate_reports_plugin_values_without_gating_them(tmp_path, capsys):
    """check-metrics: the committed reference holds the suite's models only; a plugin's (or published
    outputs') values are printed as "reported, not gated", never written by --update, and gated with
    --include-plugins against a reference of one's own."""
    from benchmark.core import io
    from benchmark.tools import gate

    runs = tmp_path / "runs"
    for model, psnr in (("prenet", 30.0), ("mynet", 25.0)):
        io.write_json(runs / "eval" / f"{model}-rain-synth/metrics.json",
                      {"key": f"{model}-rain-synth", "model": model, "dataset": "rain-synth", "profile": "ci",
                       "params_total": 10, "results": {"rain-synth": {"psnr_y": psnr, "n_images": 4}}})
    ref, mine = tmp_path / "ref.json", tmp_path / "mine.json"
    common = ["--runs", str(runs), "--params", str(tmp_path / "none.yaml")]
    assert gate.main(common + ["--reference", str(ref), "--update"]) == 0
    assert set(json.loads(ref.read_text())) == {"prenet-rain-synth/rain-synth/psnr_y", "prenet-rain-synth/params_total"}
    capsys.readouterr()
    assert gate.main(common + ["--reference", str(ref)]) == 0
    out = capsys.readouterr().out
    assert "2 values within tolerance" in out and "reported, not gated" in out and "mynet-rain-synth/rain-synth/psnr_y" in out
    assert gate.main(common + ["--reference", str(ref), "--include-plugins"]) == 1  # not in the suite's reference
    assert "mynet-rain-synth/rain-synth/psnr_y" in capsys.readouterr().err
    assert gate.main(common + ["--reference", str(mine), "--include-plugins", "--update"]) == 0
    assert gate.main(common + ["--reference", str(mine), "--include-plugins"]) == 0
    assert len(json.loads(mine.read_text())) == 4
