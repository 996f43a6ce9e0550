"""ZSKT: online draws, the generator's -KL objective and clipping, state round-trip, attention transfer
on matched blocks."""

from __future__ import annotations

from functools import partial

import copy

import pytest
import torch
import torch.nn as nn

from dfkd_bench import UserError
from dfkd_bench.config import resolve_hparams
from dfkd_bench.engine import RoundInfo, StudentStep, kd_loss
from dfkd_bench.methods.zskt import Zskt, attention_map, attention_transfer, block_outputs, maps_by_size
from dfkd_bench.schedule import plan_schedule
from method_helpers import assert_same_next_draw, assert_valid_draws, fixed_step, make_ctx, make_online

make_zskt = partial(make_online, Zskt)



def student_step(method: Zskt, images: torch.Tensor) -> StudentStep:
    """What the engine's student step does before `student_loss`: teacher (no grad), then student forward."""
    ctx = method.ctx
    x = method.model_input(images)
    with torch.no_grad():
        t = ctx.teacher(x)
    s = ctx.student(x)
    return StudentStep(x, torch.zeros(x.shape[0], dtype=torch.long), s, t)


def test_draw_shapes_range_and_labels() -> None:
    method = make_zskt(make_ctx())
    assert_valid_draws(method)


def test_generator_loss_falls_as_the_kl_grows() -> None:
    torch.manual_seed(0)
    method = make_zskt(make_ctx(seed=1), lr_g=1e-2)
    z = torch.randn(16, *method.generator.latent_shape)
    with torch.no_grad():
        step = fixed_step(method, z)
        before = float(method.generator_loss(step))
        torch.testing.assert_close(torch.tensor(before), -kd_loss(step.student.logits, step.teacher.logits, 1.0))
    for _ in range(12):  # the student does not train: only the generator moves
        method.train_generator(RoundInfo.standalone())
    assert method.teacher_blocks.last() == {} and method.student_blocks.last() == {}  # generator maps dropped
    with torch.no_grad():
        after = float(method.generator_loss(fixed_step(method, z)))
    assert before <= 0 and after < before - 0.1 * abs(before) - 1e-3, (before, after)


def test_generator_gradients_are_clipped_to_g_clip() -> None:
    method = make_zskt(make_ctx(), g_clip=0.5)
    p = nn.Parameter(torch.zeros(4))
    method.apply_gradients({"generator": [p]}, {"generator": [torch.full((4,), 100.0)]}, torch.optim.SGD([p], lr=1.0))
    torch.testing.assert_close(torch.linalg.vector_norm(p.detach()), torch.tensor(0.5))
    q = nn.Parameter(torch.zeros(4))
    method.apply_gradients({"generator": [q]}, {"generator": [torch.full((4,), 0.1)]},
                           torch.optim.SGD([q], lr=1.0))  # small: untouched
    torch.testing.assert_close(q.detach(), torch.full((4,), -0.1))


def test_state_dict_round_trip_gives_the_same_next_draw() -> None:
    method = make_zskt(make_ctx(seed=0))
    method.train_generator(RoundInfo.standalone())
    other = make_zskt(make_ctx(seed=5))
    other.load_state_dict(method.state_dict())
    assert_same_next_draw(method, other)


def test_attention_transfer_is_zero_for_identical_features_and_skips_unmatched_sizes() -> None:
    torch.manual_seed(0)
    f8, f4 = torch.randn(3, 5, 8, 8), torch.randn(3, 7, 4, 4)
    a = attention_map(f8)
    assert a.shape == (3, 64)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(3))
    assert float(attention_transfer({(8, 8): f8, (4, 4): f4}, {(8, 8): f8.clone(), (4, 4): f4.clone()})) == 0.0
    # maps are compared per position whatever the channel count; a size only one model has adds nothing
    student = {(8, 8): torch.randn(3, 2, 8, 8), (2, 2): torch.randn(3, 2, 2, 2)}
    teacher = {(8, 8): f8, (16, 16): torch.randn(3, 5, 16, 16)}
    expected = (attention_map(student[(8, 8)]) - attention_map(f8)).pow(2).mean()
    torch.testing.assert_close(attention_transfer(student, teacher), expected)
    assert float(attention_transfer({(2, 2): f4}, {(4, 4): f4})) == 0.0
    with pytest.raises(RuntimeError, match="not from the same batch"):
        attention_transfer({(8, 8): f8}, {(8, 8): f8[:2]})


def test_block_outputs_record_each_resolutions_last_stage() -> None:
    ctx = make_ctx()
    model = ctx.student
    blocks = block_outputs(model)
    x = torch.randn(2, 3, 32, 32)
    stem = model.stem(x)
    outs = [model.stages[0](stem)]
    outs.append(model.stages[1](outs[0]))
    outs.append(model.stages[2](outs[1]))
    blocks.take()  # forget what the manual calls recorded
    model(x)
    maps = maps_by_size(blocks.take())
    assert sorted(maps) == [(4, 4), (8, 8), (16, 16)]  # the 1x1 pooled map is skipped
    for out in outs:
        torch.testing.assert_close(maps[tuple(out.shape[-2:])], out)
    assert blocks.last() == {}
    blocks.close()
    model(x)
    assert blocks.last() == {}


def test_student_loss_is_kl_plus_scaled_attention_and_vanishes_for_a_copy_of_the_teacher() -> None:
    ctx = make_ctx()
    ctx.student.eval()  # BN on running statistics: a copy of the teacher then computes what it computes
    ctx.teacher = copy.deepcopy(ctx.student).requires_grad_(False)
    method = make_zskt(ctx, temperature=2.0)
    images = torch.rand(4, 3, 32, 32)
    terms = method.student_loss(student_step(method, images))
    assert set(terms) == {"kl", "at"}
    assert float(terms["kl"].detach()) < 1e-6 and float(terms["at"].detach()) < 1e-9
    assert method.teacher_blocks.last() == {} and method.student_blocks.last() == {}

    other = make_zskt(make_ctx(seed=3), temperature=2.0)  # a different student: both terms are positive
    step = student_step(other, images)
    teacher_maps, student_maps = maps_by_size(other.teacher_blocks.last()), maps_by_size(other.student_blocks.last())
    terms = other.student_loss(step)
    torch.testing.assert_close(terms["kl"], kd_loss(step.s_logits, step.t_logits, 1.0))  # "kl": T 1, whatever T
    torch.testing.assert_close(terms["at"], other.hp.beta * 10 * attention_transfer(student_maps, teacher_maps))
    assert float(terms["at"].detach()) > 0
    terms["at"].backward()  # the attention term trains the student
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in other.ctx.student.parameters())


def test_presets_and_validation() -> None:
    for name in ("cifar10", "cifar100"):
        hp = resolve_hparams(Zskt.Hparams, name, {}, "zskt", protocol="paper")
        # zju-vipa/DataFree@9e79fa9 scripts/zskt/zskt_cifar10_wrn402_wrn161.sh and datafree_kd.py ~256-290
        assert (hp.g_steps, hp.s_steps, hp.kd_batch, hp.lr, hp.lr_g, hp.weight_decay) == (1, 5, 256, 0.1, 1e-3, 1e-4)
        assert (hp.beta, hp.g_clip, hp.nz, hp.stem, hp.g_betas) == (0.0, 0.0, 256, 4, (0.5, 0.999))
        assert (hp.sample_mode, hp.student_criterion, hp.lr_min_ratio) == ("eval", "kl", 0.0)
        assert hp.paper_steps == 200 * 400
    hp = resolve_hparams(Zskt.Hparams, "digits", {"budget": "steps"}, "zskt")
    assert sum(r.kd_steps for r in plan_schedule("equal", hp, 144).rounds) == hp.paper_steps
    with pytest.raises(UserError, match="zskt.beta=-1"):
        resolve_hparams(Zskt.Hparams, "digits", {"beta": "-1"}, "zskt")
