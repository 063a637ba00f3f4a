"""MOSS (Huang, Yu, He, CVPR 2021): size, shapes, memory-read semantics, losses, training signal."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from baselines.moss import MOSS, MemoryBlock
from benchmark.core.contract import count_params, effective_params
from benchmark.core.registry import build_model
from tests.helpers.training import assert_loss_falls, loss_curve, shared_loss

OFFICIAL_PARAMS = 2_855_939  # released NetG with test.yaml
MEMORY_TABLE = 512 * 96  # updated by EMA only, never by gradient


def test_parameter_count_is_official():
    model = build_model("moss")
    assert isinstance(model, MOSS) and model.pad_multiple == 8
    assert count_params(model) == {"total": OFFICIAL_PARAMS, "trainable": OFFICIAL_PARAMS}
    assert effective_params(model, probe=16) == OFFICIAL_PARAMS - MEMORY_TABLE


@pytest.mark.parametrize("fit", ["reflect", "bicubic"])
@pytest.mark.parametrize("h, w", [(67, 45), (45, 67)])
def test_any_shape_returns_input_shape(h, w, fit):
    model = build_model("moss", fit=fit).eval()
    x = torch.rand(1, 3, h, w)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    if fit == "reflect":  # a crop of the tanh output mapped to [0, 1]; bicubic resizing may overshoot
        assert 0 <= y.min() and y.max() <= 1
    assert model.train()(x).shape == x.shape


def test_internal_padding_is_reflect_bottom_right():
    torch.manual_seed(0)
    model = build_model("moss").eval()
    x = torch.rand(1, 3, 21, 18)
    padded = F.pad(x, (0, 6, 0, 3), mode="reflect")
    with torch.no_grad():
        assert torch.allclose(model(x), model(padded)[..., :21, :18], atol=1e-6)
        assert torch.allclose(model(padded), (model.generate(padded * 2 - 1) + 1) / 2)


def test_bad_input_is_named():
    model = build_model("moss")
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        model(torch.rand(1, 4, 16, 16))
    with pytest.raises(ValueError, match=">= 8"):
        model(torch.rand(1, 3, 7, 32))
    with pytest.raises(ValueError, match="fit"):
        build_model("moss", fit="crop")


def test_memory_read_uses_ema_updated_table_and_persists_only_in_training():
    mem = MemoryBlock(dim=2, items=3, rate=0.9)
    table = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]])
    with torch.no_grad():
        mem.units.weight.copy_(table)
    feats = torch.tensor([[3.0, 0.5], [1.0, 0.0]])  # both closest (cosine) to item 0; items 1, 2 unused
    x = feats.view(1, 1, 2, 2).permute(0, 3, 1, 2)  # (b, c, h, w) = (1, 2, 1, 2)
    new = table * 0.9
    new[0] += 0.1 * feats.mean(0)
    expected = F.softmax(F.normalize(feats, dim=1) @ F.normalize(new, dim=1).t(), dim=1) @ new

    mem.eval()
    for _ in range(2):  # stateless across eval calls: the table is read updated but not stored
        out = mem(x).permute(0, 2, 3, 1).reshape(2, 2)
        assert torch.allclose(out, expected, atol=1e-6)
        assert torch.equal(mem.units.weight.detach(), table)
    mem.train()
    mem(x)
    assert torch.allclose(mem.units.weight.detach(), new, atol=1e-6)


def test_eval_output_does_not_depend_on_earlier_calls():
    torch.manual_seed(0)
    model = build_model("moss").eval()
    a, b = torch.rand(1, 3, 16, 24), torch.rand(3, 3, 16, 24)
    with torch.no_grad():
        first = model(a)
        model(b)
        assert torch.equal(model(a), first)


def test_own_loss_is_plain_l1_in_minus_one_one_space():
    """The official supervised phase (train_sl) uses plain L1; x10 (weight_pixel) is the semi-supervised phase's."""
    model = build_model("moss")
    clean, out = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    assert model.own_loss(clean, out, clean).item() == 0.0
    assert model.own_loss(out, out, clean).item() == pytest.approx(2 * F.l1_loss(out, clean).item(), rel=1e-6)
    assert model.own_loss({"out": [clean, out]}, out, clean).item() == pytest.approx(
        2 * F.l1_loss(out, clean).item(), rel=1e-6)
    assert model.own_loss(out, out, clean, weight_pixel=10).item() == pytest.approx(
        20 * F.l1_loss(out, clean).item(), rel=1e-6)


def test_semi_supervised_term_trains_student_and_ema_moves_teacher():
    torch.manual_seed(0)
    student = build_model("moss").train()
    teacher = student.make_teacher()
    real = torch.rand(2, 3, 16, 16)
    loss = student.semi_supervised_loss(teacher, real)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0  # dropout of the fuse gate + train-mode BN differ
    assert student.head.weight.grad is not None and student.head.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    before = teacher.tail.bias.clone()
    with torch.no_grad():
        student.tail.bias.add_(1.0)
    student.ema_teacher_update(teacher, decay=0.99)
    assert torch.allclose(teacher.tail.bias, 0.99 * before + 0.01 * student.tail.bias)


def test_few_training_steps_reduce_shared_loss_on_rain_synth():
    torch.manual_seed(0)
    assert_loss_falls(loss_curve(build_model("moss"), 8, loss=shared_loss()))  # shared settings
