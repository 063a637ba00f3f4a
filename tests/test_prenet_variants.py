"""PReNet's official variants (csdwren/PReNet @ 6d908d1): builder switches, official-output
fixtures with regenerated and with released weights, and the 20 released checkpoints.

The switches and which official class each checkpoint belongs to are documented in
``baselines/prenet.py`` (``PReNet``, ``OFFICIAL_RELEASES``). The ``tests/fixtures/official/prenet_*``
folders were made by running the official networks.py / generator.py (see their spec.json); the
generic comparison in test_official_equivalence.py runs on them as well.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from baselines.prenet import (OFFICIAL_RELEASES, PReNet, from_official, official_structure, official_to_ours,
                              ours_to_official)
from benchmark.core.contract import count_params, effective_params
from benchmark.core.registry import build_model, load_official
from tests.helpers.official_weights import load_spec

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "official"
SHARED = ROOT.parent / "shared"  # CI keeps ../shared beside the clone
LOGS = SHARED / "official_weights" / "prenet" / "logs"
needs_release = pytest.mark.skipif(not LOGS.is_dir(), reason=f"official PReNet checkpoints not found under {LOGS}")

VARIANT_FIXTURES = sorted(p.name for p in FIXTURES.glob("prenet_*") if (p / "spec.json").is_file())

# builder kwargs -> parameter count; the counts are the tensor sizes summed over the released files
SWITCHES = {
    "PReNet6": ({}, 168_963),
    "PRN6": ({"recurrent": None}, 95_107),
    "PReNet6_r": ({"recursive": True}, 94_979),
    "PRN6_r": ({"recurrent": None, "recursive": True}, 21_123),
    "PReNet6_GRU": ({"recurrent": "gru", "input_skip": False}, 150_499),
    "PReNet6_x": ({"feed_rainy": False, "input_skip": False}, 168_099),
    "PReNet5_LSTM": ({"stages": 5, "input_skip": False}, 168_963),
    "PReNet1 (real)": ({"stages": 4, "input_skip": False, "recurrent_after_blocks": True}, 168_963),
}


def _file(release: str) -> Path:
    folder, name = release.split("/")
    return LOGS / "real" / f"{name}.pth" if folder == "real" else LOGS / folder / name / "net_latest.pth"


@pytest.mark.parametrize("name", SWITCHES)
def test_switches_build_the_official_sizes_and_every_weight_is_used(name):
    kwargs, params = SWITCHES[name]
    model = build_model("prenet", **kwargs)
    assert count_params(model) == {"total": params, "trainable": params}
    # the recursive block is reused 5 times and still counts once; nothing is built but unused
    assert effective_params(model, probe=16) == params
    x = torch.rand(2, 3, 17, 13)
    outs = model.train()(x)
    assert len(outs) == kwargs.get("stages", 6) and all(o.shape == x.shape for o in outs)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), outs[-1].detach())


def test_defaults_are_prenet6_and_bad_switches_are_named():
    m = build_model("prenet")
    assert (m.stages, m.recurrent, m.recursive, m.input_skip, m.feed_rainy, m.recurrent_after_blocks) == \
        (6, "lstm", False, True, True, False)
    assert build_model("prenet", recurrent="none").recurrent is None  # YAML/CLI spelling of "no unit"
    with pytest.raises(ValueError, match="recurrent unit"):
        PReNet(recurrent="rnn")
    with pytest.raises(ValueError, match="recurrent_after_blocks"):
        PReNet(recurrent=None, recurrent_after_blocks=True)


def test_input_skip_and_recursion_change_the_computation():
    # same weights, one switch flipped: the skip adds exactly O to the last stage's prediction
    # when there is one stage; recursive reuse of block 0 differs from five separate blocks
    torch.manual_seed(0)
    x = torch.rand(1, 3, 12, 12)
    a = PReNet(stages=1).eval()
    b = PReNet(stages=1, input_skip=False).eval()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        assert torch.allclose(a(x), b(x) + x, atol=1e-6)
    r = PReNet(recursive=True).eval()
    five = PReNet().eval()
    with torch.no_grad():
        for blk in five.blocks:
            blk.load_state_dict(r.blocks[0].state_dict())
        shared = {k: v for k, v in r.state_dict().items() if not k.startswith("blocks.")}
        five.load_state_dict({**five.state_dict(), **shared})
        assert torch.equal(five(x), r(x))  # five copies of one block = the block applied five times


# ---- official outputs ----------------------------------------------------------------------------

def _spec(name: str) -> dict:
    return json.loads((FIXTURES / name / "spec.json").read_text())


def test_every_new_architecture_has_a_fixture():
    want = {"prenet_prn", "prenet_r", "prenet_prn_r", "prenet_gru", "prenet_x", "prenet_lstm", "prenet_real"}
    assert want <= set(VARIANT_FIXTURES)
    assert all(_spec(n)["model"] == "prenet" for n in VARIANT_FIXTURES)  # picked up by test_official_equivalence


@pytest.mark.parametrize("name", VARIANT_FIXTURES)
def test_regenerated_weights_reproduce_official_outputs(name):
    spec, state = load_spec(FIXTURES / name / "spec.json")  # checks the weights' digest
    inputs = torch.load(FIXTURES / name / "inputs.pt", weights_only=True)
    outputs = torch.load(FIXTURES / name / "outputs.pt", weights_only=True)
    model = load_official("prenet", state, **spec["loader_kwargs"]).train()  # train(): every stage
    atol, compared = spec["tolerance"]["atol"], 0
    for key, x in inputs.items():
        with torch.no_grad():
            stages = model(x)
        for out_name, got in (("out", stages[-1]), ("stages", torch.stack(stages))):
            ref = outputs[f"eval/{key}/{out_name}"]
            assert got.shape == ref.shape
            assert (got - ref).abs().max().item() <= atol, f"{name} {key} {out_name}"
            compared += 1
    assert compared == 4


@needs_release
@pytest.mark.parametrize("name", VARIANT_FIXTURES)
def test_released_weights_reproduce_official_outputs(name):
    """Official forward with the released checkpoint (trained weights, realistic activations)."""
    rel = _spec(name)["released"]
    path = SHARED / rel["checkpoint"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == rel["checkpoint_sha256"], f"{path} is not the file used"
    stored = torch.load(FIXTURES / name / rel["file"], weights_only=True)
    model = from_official(path, release=rel["release"]).eval()
    with torch.no_grad():
        got = model(stored["input"])
    assert got.shape == stored["out"].shape
    assert (got - stored["out"]).abs().max().item() <= rel["tolerance"]["atol"]
    # without release=: the keys alone suffice for every layout that exists in one official class;
    # the LSTM ablations and real models share PReNet6's keys and need their switches (documented)
    with torch.no_grad():
        plain = from_official(path).eval()(stored["input"])
    if set(OFFICIAL_RELEASES[rel["release"]]) - {"stages"}:
        assert (plain - got).abs().max().item() > 100 * rel["tolerance"]["atol"]
    else:
        assert torch.equal(plain, got)


# ---- the 20 released checkpoints -----------------------------------------------------------------

@needs_release
def test_release_table_lists_every_shared_checkpoint():
    files = {p.relative_to(LOGS).as_posix() for p in LOGS.rglob("*.pth")}
    assert len(files) == 20
    assert {_file(r).relative_to(LOGS).as_posix() for r in OFFICIAL_RELEASES} == files


@needs_release
@pytest.mark.parametrize("release", sorted(OFFICIAL_RELEASES))
def test_released_checkpoint_loads_strictly(release):
    path = _file(release)
    original = torch.load(path, map_location="cpu", weights_only=True)
    model = from_official(path, release=release)  # strict: raises on any missing/extra/mis-shaped key
    total = sum(v.numel() for v in original.values())
    assert count_params(model)["total"] == total
    assert sum(v.numel() for v in official_to_ours(original, len(model.blocks), model.recurrent).values()) == total
    back = ours_to_official(model.state_dict(), len(model.blocks), model.recurrent)
    assert back.keys() == original.keys() and all(torch.equal(back[k], original[k]) for k in original)
    for k, v in OFFICIAL_RELEASES[release].items():
        assert getattr(model, k) == v
    variant = release.split("/")[1]
    assert model.recurrent == ("gru" if "GRU" in variant else None if variant.startswith("PRN") else "lstm")
    assert model.recursive == variant.endswith("_r")
    assert model.feed_rainy == (variant != "PReNet6_x")


@needs_release
def test_loader_reads_structure_from_keys_and_refuses_contradictions(tmp_path):
    path = _file("Rain100H/PRN6_r")
    m = from_official(path)  # no arguments: keys say no unit, one recursive block
    assert (m.recurrent, m.recursive, m.input_skip, m.stages) == (None, True, True, 6)
    with pytest.raises(ValueError, match=r"PRN6_r/net_latest\.pth.*recurrent=None.*recurrent='lstm'"):
        from_official(path, recurrent="lstm")
    with pytest.raises(ValueError, match="unknown PReNet release"):
        from_official(path, release="Rain100H/PRN7")
    # explicit switches the keys cannot show override the release defaults
    assert from_official(_file("Ablation/PReNet6_LSTM"), release="Ablation/PReNet6_LSTM", stages=3).stages == 3
    # a GRU file with one gate removed: the strict check names it
    state = torch.load(_file("Ablation/PReNet6_GRU"), map_location="cpu", weights_only=True)
    del state["conv_b.0.bias"]
    torch.save(state, tmp_path / "gru_partial.pth")
    with pytest.raises(ValueError, match=r"gru_partial\.pth.*conv_b\.0\.bias"):
        from_official(tmp_path / "gru_partial.pth")
