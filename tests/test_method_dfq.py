"""DFQ: online draws, a falling generator loss, state round-trip, the adversarial KL term's sign,
the BN / pseudo-label / entropy terms, presets."""

from __future__ import annotations

from functools import partial

import math

import pytest
import torch
import torch.nn.functional as F

from dfkd_bench import UserError
from dfkd_bench.config import resolve_hparams
from dfkd_bench.engine import RoundInfo
from dfkd_bench.methods.dfq import Dfq
from method_helpers import assert_online_budgets, assert_state_round_trip, assert_valid_draws, fixed_step, make_ctx, make_online

make_dfq = partial(make_online, Dfq)



def test_draw_shapes_range_and_labels() -> None:
    method = make_dfq(make_ctx())
    assert_valid_draws(method)
    assert {"synth/bn", "synth/oh", "synth/ie", "synth/adv"} <= set(method.loss_terms)


def test_generator_loss_falls() -> None:
    torch.manual_seed(0)
    method = make_dfq(make_ctx(seed=1), lr_g=1e-2, kd_batch=16)
    z = torch.randn(16, *method.generator.latent_shape)
    with torch.no_grad():
        before = method.generator_terms(fixed_step(method, z))
    for _ in range(10):  # the student does not train: only the generator moves
        method.train_generator(RoundInfo.standalone())
    with torch.no_grad():
        after = method.generator_terms(fixed_step(method, z))
    assert sum(after.values()) < sum(before.values()) - 0.5, (before, after)
    assert after["bn"] < before["bn"] - 0.5, (before, after)  # the BN statistics move towards the teacher's


def test_state_dict_round_trip_gives_the_same_next_draw() -> None:
    assert_state_round_trip(make_dfq)


def test_adversarial_term_is_minus_the_kl_and_vanishes_for_a_perfect_student() -> None:
    method = make_dfq(make_ctx(), adv=2.0, bn=0.5, oh=3.0, ie=4.0)
    step = fixed_step(method, torch.randn(8, *method.generator.latent_shape))
    terms = method.generator_terms(step)
    assert set(terms) == {"bn", "oh", "ie", "adv"}
    s, t = step.student.logits, step.teacher.logits
    kl = F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), reduction="batchmean", log_target=True)
    torch.testing.assert_close(terms["adv"], -2.0 * kl)
    assert terms["adv"] < 0  # an untrained student disagrees with the teacher
    torch.testing.assert_close(terms["oh"], 3.0 * F.cross_entropy(t, t.argmax(1)))
    p = F.softmax(t, 1).mean(0)
    torch.testing.assert_close(terms["ie"], 4.0 * (p * p.log()).sum())
    assert -4.0 * math.log(10) - 1e-4 <= float(terms["ie"].detach()) <= 0
    torch.testing.assert_close(terms["bn"], 0.5 * step.teacher.bn)

    method.ctx.student.load_state_dict(method.ctx.teacher.state_dict())  # the same architecture in make_ctx
    method.ctx.student.eval()
    step = fixed_step(method, torch.randn(8, *method.generator.latent_shape))
    assert float(method.adversarial_term(step).detach()) == pytest.approx(0.0, abs=1e-5)


def test_presets_and_validation() -> None:
    # zju-vipa/DataFree@9e79fa9 scripts/dfq/dfq_cifar10_wrn402_wrn161.sh (lr 0.1) and dfq_cifar10_res34_res18.sh
    # (--dataset cifar100, lr 0.05), datafree_kd.py ~256-290
    for name, lr in (("cifar10", 0.1), ("cifar100", 0.05)):
        hp = resolve_hparams(Dfq.Hparams, name, {}, "dfq", protocol="paper")
        assert (hp.s_steps, hp.g_steps, hp.kd_batch, hp.lr, hp.lr_g, hp.weight_decay) == (10, 1, 256, lr, 1e-3, 1e-4)
        assert (hp.bn, hp.oh, hp.ie, hp.adv, hp.bn_momentum, hp.nz, hp.stem) == (1.0, 1.0, 20.0, 1.0, 0.0, 256, 4)
        assert (hp.sample_mode, hp.student_criterion, hp.lr_min_ratio) == ("eval", "kl", 0.0)
        assert hp.paper_steps == 200 * 400
    digits = resolve_hparams(Dfq.Hparams, "digits", {}, "dfq")
    assert (digits.sample_mode, digits.student_criterion, digits.temperature, digits.stem) == ("train", "kd", 4.0, 2)
    assert_online_budgets(Dfq)
    with pytest.raises(UserError, match="dfq.adv=-1"):
        resolve_hparams(Dfq.Hparams, "digits", {"adv": "-1"}, "dfq")
    with pytest.raises(UserError, match="dfq.ngf=0"):
        resolve_hparams(Dfq.Hparams, "digits", {"ngf": "0"}, "dfq")
