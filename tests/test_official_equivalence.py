"""Our networks, loaded with official weights, compute what the official code computes.

Each fixture holds what the official network (run once, outside this repository, see
``tests/fixtures/official/README.md``) produced on small inputs with weights regenerated here
from names alone (``tests/helpers/official_weights.py``). A test rebuilds those weights, loads them
through the model's registered official loader (``benchmark.core.registry.load_official``), converts
the stored official-convention inputs to ours (RGB, [0, 1], NCHW; all conversions exact), runs
our model and compares every stored output. A negative control swaps two same-shaped official
tensors and checks that the comparison then fails, so a test that cannot fail would show up.

The same cases run on the independent audit's fixtures in ``../shared/official_equivalence/``
(its own generator and tolerances) when that folder is present.

Adding a network: one ``Adapter`` entry in ``ADAPTERS`` (model name, loader keyword arguments,
input/output conversions, how to get the named official outputs from ours) and a fixture folder.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from benchmark.tools import cli
from benchmark.core.registry import load_official, official_models
from tests.helpers.official_weights import load_spec

ROOT = Path(__file__).resolve().parents[1]
OWN = ROOT / "tests" / "fixtures" / "official"
SHARED = ROOT.parent / "shared" / "official_equivalence"

Outputs = dict[str, torch.Tensor]


def bgr01(x: torch.Tensor) -> torch.Tensor:  # OpenCV BGR in [0, 1]  <->  RGB in [0, 1] (its own inverse)
    return x.flip(1)


@dataclass(frozen=True)
class Adapter:
    """How to run our ``model`` (a registry name) in the official network's conventions.

    ``run(net, inputs, key)``: converts the stored official-convention input ``key`` to ours
    (NCHW RGB [0, 1]), runs ``net`` (already in the fixture's mode, under no_grad) and returns our
    outputs converted back to the official convention, by official output name.
    ``loader_kwargs``: passed to ``load_official`` (a fixture's own ``loader_kwargs`` add to them).
    ``not_compared``: (regex, reason) for stored outputs our model does not expose.
    """

    model: str
    run: Callable[[torch.nn.Module, dict, str], Outputs]
    loader_kwargs: dict = field(default_factory=dict)
    not_compared: tuple[str, str] | None = None


def _single(fn: Callable[[torch.Tensor], torch.Tensor], back: Callable[[torch.Tensor], torch.Tensor], name: str):
    """Adapter.run for a network whose eval output is its one stored output ``name``."""
    def run(net, inputs, key):
        return {name: back(net(fn(inputs[key])))}
    return run


def _stack(ts, back):
    return torch.stack([back(t) for t in ts])


def _run_msgnn(net, inputs, key):
    # the loader's model takes RGB and feeds its layers BGR, as the official loader does
    return {"out": bgr01(net(bgr01(inputs[key]), exemplar=bgr01(inputs[f"{key}/exemplar"])))}


def _all_stages(net):
    """RESCAN, PReNet and SPANet return their stages / attention map only in train(); they have
    no layer whose behaviour depends on the mode, so train() is the eval computation with every
    intermediate output kept."""
    assert not any(isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.Dropout)) for m in net.modules())
    net.train()
    return net


def _run_rescan(net, inputs, key):
    out = _all_stages(net)(bgr01(inputs[key]))
    return {"rain_stages": _stack(out["rain"], bgr01), "derained": bgr01(out["out"][-1])}


def _run_prenet(net, inputs, key):
    out = _all_stages(net)(inputs[key])
    return {"stages": torch.stack(out), "out": out[-1]}


def _run_rcdnet(net, inputs, key):
    x = inputs[key] / 255  # stored on the official 0-255 scale as exact multiples of 255 * 2**-12
    if not net.training:
        # the official eval forward returns every stage; ours returns them in train() only, so
        # switch the output form but keep BatchNorm on its running statistics (eval behaviour)
        net.train()
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
    out = net(x)
    got = {"B0": out["b0"] * 255, "ListB": torch.stack(out["out"]) * 255, "ListCM": torch.stack(out["rain"]) * 255}
    for name in ("ListB", "ListCM"):  # the batch-2 case stores only the first and last entries
        got[f"{name}[0]"], got[f"{name}[{len(got[name]) - 1}]"] = got[name][0], got[name][-1]
    return got


def _run_spanet(net, inputs, key):
    out = _all_stages(net)(bgr01(inputs[key]))  # train() adds the first attention map, nothing else changes
    return {"out": bgr01(out["out"]), "attention1": out["attention"]}


ADAPTERS: dict[str, Adapter] = {
    "msgnn": Adapter("msgnn", _run_msgnn, not_compared=(r"knn_idx_graph_\w+",
                     "kNN indices are internal; they are checked through the output they drive")),
    "rescan": Adapter("rescan", _run_rescan),
    "prenet": Adapter("prenet", _run_prenet),
    "dcsfn": Adapter("dcsfn", _single(bgr01, bgr01, "out")),
    # tied=False: fixture weights give every official view its own values (trained ones stay tied)
    "rcdnet": Adapter("rcdnet", _run_rcdnet, {"tied": False}),
    "moss": Adapter("moss", _single(lambda x: (x + 1) / 2, lambda y: y * 2 - 1, "out")),
    "spanet": Adapter("spanet", _run_spanet),
}


# ---- fixtures ------------------------------------------------------------------------------------

@dataclass
class Fixture:
    name: str
    adapter: Adapter
    state: dict[str, torch.Tensor]  # official names, regenerated
    inputs: dict[str, torch.Tensor]
    outputs: dict[str, torch.Tensor]
    atol: float
    swap: tuple[str, str]
    loader_kwargs: dict


@functools.lru_cache(maxsize=None)  # match and negative-control tests share one regeneration
def _own_fixture(name: str) -> Fixture:
    folder = OWN / name
    spec, state = load_spec(folder / "spec.json")  # checks the recorded digest of the weights
    return Fixture(name, ADAPTERS[spec["model"]], state, _tensors(folder / "inputs.pt"),
                   _tensors(folder / "outputs.pt"), float(spec["tolerance"]["atol"]),
                   tuple(spec["negative_control"]["swap"]), spec.get("loader_kwargs", {}))


@functools.lru_cache(maxsize=1)
def _shared_generator():
    spec = importlib.util.spec_from_file_location("shared_official_gen_weights", SHARED / "gen_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=None)  # match and negative-control tests share one regeneration
def _shared_fixture(name: str) -> Fixture:
    entry = json.loads((SHARED / "manifest.json").read_text())["models"][name]
    state, _ = _shared_generator().load_spec(SHARED / entry["files"]["spec"])  # (state, spec), digest-checked
    folder = SHARED / name
    return Fixture(name, ADAPTERS[entry["network"]], state, _tensors(folder / "inputs.pt"),
                   _tensors(folder / "outputs.pt"),
                   float(entry["recommended_atol"]), tuple(entry["negative_controls"]["swaps_tried"][0]["swapped"]), {})


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _own_names() -> list[str]:
    return sorted(p.parent.name for p in OWN.glob("*/spec.json")
                  if json.loads(p.read_text()).get("model") in ADAPTERS)


def _shared_names() -> list[str]:
    if not (SHARED / "manifest.json").is_file():
        return []
    models = json.loads((SHARED / "manifest.json").read_text())["models"]
    return sorted(n for n, e in models.items() if e.get("network") in ADAPTERS)


# ---- comparison ----------------------------------------------------------------------------------

def _groups(fx: Fixture) -> dict[tuple[str, str], list[str]]:
    """Stored outputs ``<mode>/<input key>/<name>`` grouped by (mode, input key)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for key in fx.outputs:
        mode, rest = key.split("/", 1)
        input_key, name = rest.rsplit("/", 1)
        groups.setdefault((mode, input_key), []).append(name)
    return groups


def _compare(fx: Fixture, state: dict, only_smallest: bool = False) -> tuple[float, list[str]]:
    """Largest |ours - official| over the compared outputs, and the names compared.

    One model per call; its weights and BatchNorm statistics are restored before every (mode,
    input) group, because BatchNorm in train mode updates its running statistics.
    """
    skip = re.compile(fx.adapter.not_compared[0]) if fx.adapter.not_compared else None
    groups = {g: [n for n in names if not (skip and skip.fullmatch(n))] for g, names in _groups(fx).items()}
    groups = {g: names for g, names in groups.items() if names}
    if only_smallest:  # the cheapest eval case
        g = min((g for g in groups if g[0] == "eval"), key=lambda g: fx.inputs[g[1]].numel())
        groups = {g: groups[g]}
    net = load_official(fx.adapter.model, state, **{**fx.adapter.loader_kwargs, **fx.loader_kwargs})
    snapshot = {k: v.clone() for k, v in net.state_dict().items()}
    worst, compared = 0.0, []
    for (mode, input_key), names in groups.items():
        net.load_state_dict(snapshot)
        net.train(mode == "train")
        with torch.no_grad():
            got = fx.adapter.run(net, fx.inputs, input_key)
        for n in names:
            key = f"{mode}/{input_key}/{n}"
            assert n in got, f"{fx.name}: our adapter gives no output {n!r} for {key}"
            ref = fx.outputs[key]
            assert got[n].shape == ref.shape, \
                f"{fx.name} {key}: shape {tuple(got[n].shape)} vs official {tuple(ref.shape)}"
            worst = max(worst, (got[n].double() - ref.double()).abs().max().item())
            compared.append(key)
    return worst, compared


def _check(fx: Fixture) -> None:
    worst, compared = _compare(fx, fx.state)
    assert compared, f"{fx.name}: no stored output was compared"
    assert worst <= fx.atol, f"{fx.name}: max |ours - official| = {worst:.3g} > tolerance {fx.atol:g} over {compared}"


def _check_negative(fx: Fixture) -> None:
    a, b = fx.swap
    assert fx.state[a].shape == fx.state[b].shape and not torch.equal(fx.state[a], fx.state[b])
    swapped = {**fx.state, a: fx.state[b], b: fx.state[a]}
    worst, _ = _compare(fx, swapped, only_smallest=True)
    assert worst > 10 * fx.atol, f"{fx.name}: swapping {a} and {b} moved the outputs by only {worst:.3g}"


OWN_NAMES = _own_names()
SHARED_NAMES = _shared_names()
_NO_SHARED = pytest.mark.skip(reason=f"{SHARED} not found: the independent audit's fixtures are not beside this clone")
SHARED_PARAMS = SHARED_NAMES or [pytest.param(n, marks=_NO_SHARED) for n in sorted(ADAPTERS)]


@pytest.mark.parametrize("name", OWN_NAMES)
def test_matches_official(name: str) -> None:
    _check(_own_fixture(name))


@pytest.mark.parametrize("name", OWN_NAMES)
def test_negative_control_fails(name: str) -> None:
    _check_negative(_own_fixture(name))


@pytest.mark.parametrize("name", SHARED_PARAMS)
def test_matches_official_shared_set(name: str) -> None:
    _check(_shared_fixture(name))


@pytest.mark.parametrize("name", SHARED_PARAMS)
def test_negative_control_fails_shared_set(name: str) -> None:
    _check_negative(_shared_fixture(name))


# ---- the loaders themselves ----------------------------------------------------------------------

def test_every_official_loader_has_an_equivalence_fixture() -> None:
    # every fixture folder counts: MSPFN/DualGCN (TensorFlow originals) are checked in test_official_tf.py
    covered = {json.loads(p.read_text())["model"] for p in OWN.glob("*/spec.json")}
    assert set(official_models()) <= covered, f"loaders without a fixture: {set(official_models()) - covered}"
    nine = {"msgnn", "rescan", "prenet", "spanet", "dcsfn", "rcdnet", "moss", "mspfn", "dualgcn"}
    assert nine <= set(official_models()) and nine <= covered


@pytest.mark.parametrize("name", ["rescan", "moss"])
def test_loader_reads_wrapped_checkpoint_with_module_prefix(name: str, tmp_path) -> None:
    fx = _own_fixture(name)
    path = tmp_path / "ckpt.pth"
    torch.save({"net": {f"module.{k}": v for k, v in fx.state.items()}, "clock": 1}, path)
    a, b = load_official(name, path).state_dict(), load_official(name, fx.state).state_dict()
    c = load_official(name, {k: v.numpy() for k, v in fx.state.items()}).state_dict()  # e.g. converted TF variables
    assert a.keys() == b.keys() == c.keys() and all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)


def test_rcdnet_loader_fits_a_model_without_the_unused_official_parameters() -> None:
    # the official forward never reads eta1, mnet and 15 of the 16 kernel copies: a model built
    # without them (or one that ties them) loads the same weights and computes the same outputs
    fx = _own_fixture("rcdnet")
    lean = load_official("rcdnet", fx.state, official_unused=False, tied=False)
    full = load_official("rcdnet", fx.state, tied=False)
    assert sum(p.numel() for p in lean.parameters()) < sum(p.numel() for p in full.parameters())
    worst, compared = _compare(dataclasses.replace(fx, loader_kwargs={"official_unused": False, "tied": False}), fx.state,
                               only_smallest=True)
    assert compared and worst <= fx.atol


@pytest.mark.parametrize("name", ["msgnn_small", "rescan", "prenet", "spanet", "rcdnet", "moss"])  # dcsfn: as rescan
def test_loader_errors_name_the_file_and_the_keys(name: str, tmp_path) -> None:
    fx = _own_fixture(name)
    model = fx.adapter.model
    victim = fx.swap[0]  # a weight every configuration reads
    # missing entries and shape errors are named in our or the official naming (PReNet and SPANet
    # stack official tensors); the message must name the file and say what is wrong
    cases = {
        "missing.pth": ({k: v for k, v in fx.state.items() if k != victim}, "missing"),
        "extra.pth": ({**fx.state, "not_official.weight": torch.zeros(1)}, "not_official"),
        "shape.pth": ({**fx.state, victim: fx.state[victim][:1]}, r"shape.*\(1, "),
    }
    for file, (state, key) in cases.items():
        torch.save(state, tmp_path / file)
        with pytest.raises(ValueError, match=rf"{re.escape(file)}.*{key}"):
            load_official(model, tmp_path / file)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_official(model, tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        load_official(model, tmp_path / "junk.pth")


def test_cli_derains_with_official_msgnn_weights(tmp_path, capsys) -> None:
    from PIL import Image

    fx = _own_fixture("msgnn_small")
    torch.save(fx.state, tmp_path / "msgnn.pth")
    for key, file in (("rainy_b2_31x43", "rain.png"), ("rainy_b2_31x43/exemplar", "exemplar.png")):
        rgb = fx.inputs[key][0].flip(0)  # stored BGR -> RGB
        Image.fromarray((rgb.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(tmp_path / file)
    code = cli.main(["derain", "--model", "msgnn", "--official", str(tmp_path / "msgnn.pth"), "--exemplar",
                     str(tmp_path / "exemplar.png"), str(tmp_path / "rain.png"), "-o", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr()
    assert Image.open(tmp_path / "out" / "rain.png").size == (43, 31)
