"""DAFL: online draws, a falling generator loss, state round-trip, the one-hot / activation /
information-entropy terms, presets."""

from __future__ import annotations

from functools import partial

import math

import pytest
import torch
import torch.nn.functional as F

from dfkd_bench import UserError
from dfkd_bench.config import resolve_hparams
from dfkd_bench.engine import RoundInfo
from dfkd_bench.engine import negative_batch_entropy, pseudo_label_ce
from dfkd_bench.methods.dafl import Dafl
from method_helpers import assert_online_budgets, assert_state_round_trip, assert_valid_draws, fixed_step, make_ctx, make_online

make_dafl = partial(make_online, Dafl)



def test_draw_shapes_range_and_labels() -> None:
    method = make_dafl(make_ctx(), act=0.1)  # the digits preset has act 0
    assert_valid_draws(method)
    assert {"synth/oh", "synth/act", "synth/ie"} <= set(method.loss_terms)


def loss_before_and_after(method: Dafl, steps: int = 10) -> tuple[float, float]:
    """The generator loss on one fixed latent before and after `steps` generator phases."""
    z = torch.randn(16, *method.generator.latent_shape)
    with torch.no_grad():
        before = float(method.generator_loss(fixed_step(method, z)))
    for _ in range(steps):  # the student does not train: only the generator moves
        method.train_generator(RoundInfo.standalone())
    with torch.no_grad():
        after = float(method.generator_loss(fixed_step(method, z)))
    return before, after


def test_generator_loss_falls() -> None:
    torch.manual_seed(0)
    before, after = loss_before_and_after(make_dafl(make_ctx(seed=1), lr_g=1e-2, kd_batch=16))
    assert after < before - 0.01, (before, after)
    torch.manual_seed(0)  # the activation term alone: the teacher's features grow several-fold
    before, after = loss_before_and_after(make_dafl(make_ctx(seed=1), lr_g=1e-2, kd_batch=16, oh=0, ie=0, act=1))
    assert after < 2 * before < 0, (before, after)


def test_state_dict_round_trip_gives_the_same_next_draw() -> None:
    assert_state_round_trip(make_dafl)


def test_information_entropy_is_lowest_for_a_balanced_batch() -> None:
    balanced = torch.eye(10) * 50  # ten confident samples, one per class
    one_class = balanced[[3] * 10]
    torch.testing.assert_close(negative_batch_entropy(balanced), torch.tensor(-math.log(10)))
    assert float(negative_batch_entropy(one_class)) == pytest.approx(0.0, abs=1e-5)
    mixed = torch.randn(10, 10)
    assert negative_batch_entropy(balanced) <= negative_batch_entropy(mixed) <= negative_batch_entropy(one_class)


def test_terms_use_pseudo_labels_and_the_teachers_penultimate_features() -> None:
    method = make_dafl(make_ctx(), act=0.5, ie=2.0, oh=3.0)
    step = fixed_step(method, torch.randn(8, *method.generator.latent_shape))
    terms = method.generator_terms(step)
    assert set(terms) == {"oh", "act", "ie"}  # bn = adv = 0 in the preset
    logits = step.teacher.logits
    torch.testing.assert_close(terms["oh"], 3.0 * F.cross_entropy(logits, logits.argmax(1)))
    torch.testing.assert_close(pseudo_label_ce(logits), F.cross_entropy(logits, logits.argmax(1)))
    torch.testing.assert_close(terms["ie"], 2.0 * negative_batch_entropy(logits))
    teacher = method.ctx.teacher
    features = []
    handle = teacher.classifier.register_forward_pre_hook(lambda m, x: features.append(x[0]))
    with torch.no_grad():
        teacher(step.inputs)
    handle.remove()
    torch.testing.assert_close(terms["act"], -0.5 * features[0].abs().mean())
    assert terms["act"] < 0


def test_presets_and_validation() -> None:
    for name in ("cifar10", "cifar100"):
        hp = resolve_hparams(Dafl.Hparams, name, {}, "dafl", protocol="paper")
        # zju-vipa/DataFree@9e79fa9 scripts/dafl/dafl_cifar10_wrn402_wrn161.sh and datafree_kd.py ~256-290
        assert (hp.s_steps, hp.g_steps, hp.kd_batch, hp.lr, hp.lr_g, hp.weight_decay) == (5, 1, 256, 0.1, 1e-3, 1e-4)
        assert (hp.oh, hp.act, hp.ie, hp.bn, hp.adv, hp.nz, hp.ngf, hp.stem) == (1.0, 0.001, 20.0, 0.0, 0.0, 512, 64, 4)
        assert (hp.sample_mode, hp.student_criterion, hp.lr_min_ratio, hp.g_betas) == ("eval", "kl", 0.0, (0.5, 0.999))
        assert hp.paper_steps == 200 * 400
    digits = resolve_hparams(Dafl.Hparams, "digits", {}, "dafl")
    assert (digits.sample_mode, digits.student_criterion, digits.stem) == ("train", "kl", 2)
    assert_online_budgets(Dafl)
    with pytest.raises(UserError, match="dafl.ie=-1"):
        resolve_hparams(Dafl.Hparams, "digits", {"ie": "-1"}, "dafl")
    with pytest.raises(UserError, match="dafl.nz=0"):
        resolve_hparams(Dafl.Hparams, "digits", {"nz": "0"}, "dafl")
