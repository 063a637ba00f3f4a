"""Tiled inference equals whole-image inference where the margin covers the receptive field."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from benchmark.evaluation.inference import predict
from benchmark.core.registry import build_model
from benchmark.tools.tiling import receptive_radius, tiled_predict


def _convs(n: int) -> nn.Module:
    torch.manual_seed(0)
    layers = []
    for i in range(n):
        layers += [nn.Conv2d(3 if i == 0 else 8, 3 if i == n - 1 else 8, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).double()


def _img(h: int, w: int) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_conv_stack_radius_and_exact_tiling():
    model = _convs(4)
    assert receptive_radius(model, size=33) == 4
    model.double()
    x = _img(45, 70)
    whole = predict(model, x)
    tiled = tiled_predict(model, x, tile=16, margin=4)
    assert torch.allclose(tiled.double(), whole.double(), atol=1e-12, rtol=0)
    # a margin below the radius leaves the tiles' zero padding visible along every inner seam
    assert (tiled_predict(model, x, tile=16, margin=2) - whole).abs().max() > 1e-4


def test_prenet_tiles_exactly_with_the_measured_margin():
    model = build_model("prenet", stages=2, channels=8, res_blocks=1)
    r = receptive_radius(model, size=49)
    assert r is not None and 8 <= r <= 24  # 2 stages x (fuse + 2 res convs + LSTM gates + to_image)
    model.double()
    x = _img(40, 57)
    whole = predict(model, x)
    assert torch.allclose(tiled_predict(model, x, tile=16, margin=r), whole, atol=1e-10, rtol=0)


def test_rescan_without_se_is_local_and_with_se_is_not():
    local = build_model("rescan", stages=1, depth=3, use_se=False)
    r = receptive_radius(local, size=41)
    assert r is not None
    local.double()
    x = _img(37, 50)
    assert torch.allclose(tiled_predict(local, x, tile=16, margin=r), predict(local, x), atol=1e-10, rtol=0)
    # squeeze-and-excitation pools over the whole image: every input pixel matters
    assert receptive_radius(build_model("rescan", stages=1, depth=3, use_se=True), size=41) is None


def test_msgnn_graph_search_is_non_local_so_tiles_differ():
    # gathered neighbours carry gradient from anywhere in the search windows (the kNN choice itself
    # carries none); tiles search their neighbours among their own pixels only
    model = build_model("msgnn", n_subnets=2, blocks=1)  # the graphs feed the fusion after sub-network 1
    g = torch.Generator().manual_seed(2)
    x, ex = torch.rand(3, 64, 80, generator=g), torch.rand(3, 64, 80, generator=g)
    assert receptive_radius(model, size=64, exemplar=ex) is None
    out = tiled_predict(model, x, ex, tile=32, margin=16)
    assert out.shape == (1, 3, 64, 80) and torch.isfinite(out).all()
    assert (out - predict(model, x, ex)).abs().max() > 1e-6


def test_padded_models_keep_their_grid_and_bad_sizes_are_refused():
    model = build_model("moss")
    out = tiled_predict(model, torch.rand(3, 50, 70), tile=20, margin=3)  # rounded up to 24 / 8
    assert out.shape == (1, 3, 50, 70)
    with pytest.raises(ValueError, match="tile must be > 0"):
        tiled_predict(model, torch.rand(3, 8, 8), tile=0)


def test_cli_tile_options_reach_evaluate_and_derain(shared, tmp_path, capsys):
    from PIL import Image

    from benchmark.tools import cli
    from benchmark.data import loading as data

    # evaluate: the identity row is unchanged by tiling (plumbing through inference.evaluate)
    folder = shared / "data/Rain100L_test"
    assert cli.main(["evaluate", "--model", "input", "--data", str(folder), "--json"]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert cli.main(["evaluate", "--model", "input", "--data", str(folder), "--json", "--tile", "100",
                     "--tile-overlap", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["psnr_y"] == whole["psnr_y"]
    # derain: official PReNet weights, margin 80 >= its 78 px radius → the same PNG (to rounding)
    crop = tmp_path / "crop.png"
    Image.fromarray(data.load_image(folder / "input/1.png")[:96, :128]).save(crop)
    w = str(shared / "official_weights/prenet/PReNet6_Rain100L.pth")
    assert cli.main(["derain", "--model", "prenet", "--official", w, str(crop), "-o", str(tmp_path / "a")]) == 0
    assert cli.main(["derain", "--model", "prenet", "--official", w, str(crop), "-o", str(tmp_path / "b"),
                     "--tile", "64", "--tile-overlap", "80"]) == 0
    a, b = (data.load_image(tmp_path / d / "crop.png").astype(int) for d in "ab")
    assert abs(a - b).max() <= 1 and (a != b).mean() < 1e-3
