"""DFAD: online draws, the generator's -L1 objective, state round-trip, the L1 losses' signs."""

from __future__ import annotations

from functools import partial


import pytest
import torch
import torch.nn.functional as F

from dfkd_bench import UserError
from dfkd_bench.config import resolve_hparams
from dfkd_bench.engine import RoundInfo, StudentStep
from dfkd_bench.engine import logit_discrepancy
from dfkd_bench.methods.dfad import Dfad
from dfkd_bench.schedule import plan_schedule
from method_helpers import assert_same_next_draw, assert_valid_draws, fixed_step, make_ctx, make_online

make_dfad = partial(make_online, Dfad)



def test_draw_shapes_range_and_labels() -> None:
    method = make_dfad(make_ctx())
    assert_valid_draws(method)


def test_generator_loss_falls_as_the_discrepancy_grows() -> None:
    torch.manual_seed(0)
    method = make_dfad(make_ctx(seed=1), lr_g=1e-2)
    z = torch.randn(16, *method.generator.latent_shape)
    with torch.no_grad():
        before = float(method.generator_loss(fixed_step(method, z)))
    for _ in range(12):  # the student does not train: only the generator moves
        method.train_generator(RoundInfo.standalone())
    with torch.no_grad():
        after = float(method.generator_loss(fixed_step(method, z)))
    assert before < 0 and after < before - 0.1 * abs(before), (before, after)


def test_state_dict_round_trip_gives_the_same_next_draw() -> None:
    method = make_dfad(make_ctx(seed=0))
    method.train_generator(RoundInfo.standalone())
    other = make_dfad(make_ctx(seed=5))
    other.load_state_dict(method.state_dict())
    steps = [float(s["step"]) for s in method.generator_optimizer.state_dict()["state"].values()]
    assert steps and steps == [float(s["step"]) for s in other.generator_optimizer.state_dict()["state"].values()]
    assert_same_next_draw(method, other)


def test_adversarial_term_is_minus_l1_and_the_student_minimises_plus_l1() -> None:
    method = make_dfad(make_ctx())
    step = fixed_step(method, torch.randn(8, *method.generator.latent_shape))
    terms = method.generator_terms(step)
    assert set(terms) == {"adv"}  # oh = bn = 0: the adversarial term is the generator's only loss
    l1 = F.l1_loss(step.student.logits, step.teacher.logits)
    torch.testing.assert_close(terms["adv"], -l1)
    assert terms["adv"] < 0
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    loss = method.student_loss(StudentStep(torch.zeros(4, 3, 32, 32), torch.zeros(4, dtype=torch.long), s, t))
    assert set(loss) == {"l1"}
    torch.testing.assert_close(loss["l1"], (s - t).abs().mean())
    assert float(logit_discrepancy(t, t)) == 0.0


def test_presets_and_validation() -> None:
    for name in ("cifar10", "cifar100"):
        hp = resolve_hparams(Dfad.Hparams, name, {}, "dfad", protocol="paper")
        # zju-vipa/DataFree@acbbea6 scripts/dfad_cifar10.sh and datafree_kd.py ~256-290
        assert (hp.s_steps, hp.g_steps, hp.kd_batch, hp.lr, hp.lr_g, hp.weight_decay) == (5, 1, 256, 0.1, 1e-3, 1e-4)
        assert (hp.nz, hp.stem, hp.g_betas, hp.sample_mode, hp.student_criterion) == (256, 4, (0.5, 0.999), "eval", "l1")
        assert hp.paper_steps == 200 * 400
    hp = resolve_hparams(Dfad.Hparams, "digits", {"budget": "steps"}, "dfad")
    schedule = plan_schedule("equal", hp, 144)
    assert schedule.rounds and sum(r.kd_steps for r in schedule.rounds) == hp.paper_steps
    with pytest.raises(UserError, match="dfad.adv=0"):
        resolve_hparams(Dfad.Hparams, "digits", {"adv": "0"}, "dfad")
