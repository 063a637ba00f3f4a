"""Name-keyed deterministic weights for the official-equivalence fixtures (tests/fixtures/official/).

A fixture stores no weights. Its ``spec.json`` lists the official parameter/buffer names (PyTorch
state-dict keys or TensorFlow variable names), each with a shape, a dtype and an ``init`` rule, and
``official_state`` rebuilds the tensors from those names alone:

* ``"init": [low, high]`` — float32 values uniform over [low, high];
* ``"init": {"const": v}`` — every element is v (e.g. BatchNorm's int64 ``num_batches_tracked``).

Why not ``torch.manual_seed``: torch does not promise identical random streams across releases or
platforms, and a fixture must outlive both. Here the stream is SplitMix64 over numpy ``uint64``
(wrapping arithmetic, logical shifts), keyed by the first 8 bytes of ``blake2b(name)``:

    z_i = splitmix64(key + (i + 1) * 0x9E3779B97F4A7C15)     for element i (C order)
    u_i = ((z_i >> 11) + 0.5) / 2**53                          in (0, 1), exact in float64
    value_i = float32(low + (high - low) * u_i)

``state_digest`` hashes a rebuilt state so a fixture notices a changed generator.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def name_key(name: str) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big"))


def unit_values(name: str, numel: int) -> np.ndarray:
    """float64 u_i in (0, 1) for the entry ``name``, i = 0 .. numel-1."""
    with np.errstate(over="ignore"):
        z = name_key(name) + (np.arange(1, numel + 1, dtype=np.uint64) * _GAMMA)
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53


def make_tensor(name: str, shape: list[int], init, dtype: str = "float32") -> torch.Tensor:
    numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
    tdtype = getattr(torch, dtype)
    if isinstance(init, dict):
        return torch.full(shape, init["const"], dtype=tdtype)
    low, high = float(init[0]), float(init[1])
    vals = (low + (high - low) * unit_values(name, numel)).astype(np.float32)
    return torch.from_numpy(vals.reshape(shape)).to(tdtype)


def official_state(entries: dict) -> dict[str, torch.Tensor]:
    """``{official name: tensor}`` for the ``entries`` of a spec, in the spec's order."""
    return {n: make_tensor(n, e["shape"], e["init"], e.get("dtype", "float32")) for n, e in entries.items()}


def state_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for n, t in state.items():
        h.update(n.encode())
        h.update(str(t.dtype).encode())
        h.update(json.dumps(list(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def load_spec(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read ``spec.json``, rebuild the official-keyed state and check its recorded digest."""
    spec = json.loads(Path(path).read_text())
    state = official_state(spec["entries"])
    want = spec.get("state_sha256")
    if want is not None and state_digest(state) != want:
        raise AssertionError(f"{path}: regenerated weights differ from the ones the fixture was made with")
    return spec, state


def _reference(name: str, i: int) -> float:
    """Plain-integer SplitMix64 for element ``i``, to cross-check the vectorised numpy version."""
    m = (1 << 64) - 1
    z = (int(name_key(name)) + (i + 1) * 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    z ^= z >> 31
    return ((z >> 11) + 0.5) / 2.0**53
