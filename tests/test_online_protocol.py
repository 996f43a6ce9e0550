"""The online methods (DAFL, DFQ, ZSKT, DFAD) as zju-vipa/DataFree runs them: the generator's width, the
mode it samples in, the student's criterion, and the `--protocol paper` run, checked against numbers
read from DataFree (commit 9e79fa9; DFAD's script at acbbea6) or measured by running its code."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from cli_helpers import ok
from dfkd_bench.data import get_dataset
from dfkd_bench.engine import DistillationRun, ReferenceSchedule, StudentStep, kd_loss, logit_discrepancy
from dfkd_bench.methods.dafl import Dafl
from dfkd_bench.methods.dfad import Dfad
from dfkd_bench.schedule import online_paper_schedule
from method_helpers import make_ctx, make_online

ONLINE = ("dafl", "dfq", "zskt", "dfad")


def plan(*args: str) -> dict[str, Any]:
    """The JSON plan `dfkd-bench run ... --dry-run --format json` prints for one run."""
    return json.loads(ok(["run", *args, "--dry-run", "--format", "json"]))[0]


def cosine_annealing(base: float, t_max: int, epoch: int) -> float:
    """torch's CosineAnnealingLR (eta_min 0) after `epoch` steps: DataFree's student schedule."""
    return base * (1 + math.cos(math.pi * epoch / t_max)) / 2


# Parameters of DataFree's `LargeGenerator(nz, ngf=64, img_size=32, nc=3)` (datafree/models/generator.py
# ~42-69), counted by building it: nz 512 (DAFL, datafree_kd.py ~256) and nz 256 (DFQ, ZSKT, DFAD).
LARGE_GENERATOR_PARAMETERS = {"dafl": 8_776_259, "dfq": 4_581_955, "zskt": 4_581_955, "dfad": 4_581_955}


# DataFree's scripts (scripts/{dafl,dfq,zskt}/*_cifar10_wrn402_wrn161.sh; DFAD: scripts/dfad_cifar10.sh at
# acbbea6): --epochs 200 --ep_steps 400 --batch_size 256 --lr 0.1, weight decay 1e-4 (datafree_kd.py ~110),
# CosineAnnealingLR(T_max=epochs) stepped after each epoch's evaluation (~290, ~351), the student's
# criterion KLDiv() at T 1 or L1Loss() for DFAD (~259), one evaluation an epoch (~346).
@pytest.mark.parametrize("method", ONLINE)
def test_cifar10_paper_plan_is_datafrees_run(method: str) -> None:
    p = plan("--methods", method, "--dataset", "cifar10", "--protocol", "paper", "--ratio", "409.6")
    s, recipe = p["schedule"], p["student_recipe"]
    assert (s["protocol"], s["sample_source"], s["budget"]) == ("paper", "online", "steps")
    assert "zju-vipa/DataFree" in s["reference"]
    assert (s["rounds"], s["epochs"], s["warmup_rounds"], s["final_kd_steps"]) == (200, 200, 0, 0)
    assert s["kd_steps"] == 200 * 400 and set(s["kd_steps_after_round"]) == {400}
    assert s["images"] == 200 * 400 * 256  # a fresh batch of 256 every KD step: 20.48M images
    assert s["eval_points"] == list(range(1, 201))
    assert s["lr_schedule"] == "cosine per post-warm-up epoch" and len(s["student_lr"]) == 201
    for epoch in (0, 1, 100, 199, 200):
        assert s["student_lr"][epoch] == pytest.approx(cosine_annealing(0.1, 200, epoch), abs=1e-12)
    assert (recipe["batch"], recipe["lr"], recipe["lr_min"], recipe["weight_decay"]) == (256, 0.1, 0.0, 1e-4)
    assert recipe["loss"] == ("L1 between logits (mean)" if method == "dfad" else "KL at T=1")
    assert p["generator_parameters"] == LARGE_GENERATOR_PARAMETERS[method]
    assert p["hparams"]["sample_mode"] == "eval"
    assert p["hparams"]["paper_steps"] == s["kd_steps"]


def test_equal_steps_budget_keeps_the_suites_student_recipe() -> None:
    """budget=steps under `equal` runs the paper's step count with the suite's shared student recipe
    (lr 0.2 on CIFAR); only `--protocol paper` takes the reference's student settings."""
    equal = plan("--methods", "dfq", "--dataset", "cifar10", "--set", "dfq.budget=steps")
    paper = plan("--methods", "dfq", "--dataset", "cifar10", "--protocol", "paper", "--ratio", "409.6")
    assert equal["schedule"]["kd_steps"] == paper["schedule"]["kd_steps"] == 80_000
    assert equal["student_recipe"]["lr"] == 0.2 and paper["student_recipe"]["lr"] == 0.1
    assert equal["student_recipe"]["loss"] == paper["student_recipe"]["loss"] == "KL at T=1"


def test_paper_run_steps_the_cosine_once_an_epoch() -> None:
    """A tiny online paper run (3 epochs of 2 KD steps): the student's rate after epoch e is DataFree's
    cosine after e + 1 scheduler steps, and every KD step drew a fresh batch."""
    method = make_online(Dafl, make_ctx(), lr="0.1", lr_min_ratio="0")
    batch = method.hp.kd_batch
    schedule = online_paper_schedule(3 * 2 * batch, ReferenceSchedule(warmup_epochs=0, kd_steps_per_epoch=2), batch)
    rates: list[float] = []
    split = get_dataset("digits").open().test_split().subset(8)
    run = DistillationRun(method, method.ctx, split, schedule,
                          on_round=lambda done, total, state: rates.append(run.optimizer.param_groups[0]["lr"]))
    outcome = run.run()
    assert rates == pytest.approx([cosine_annealing(0.1, 3, e + 1) for e in range(3)], abs=1e-12)
    assert outcome.n_synthetic == 3 * 2 * method.hp.kd_batch and len(outcome.curve) == 3


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_draws_normalise_with_the_sample_modes_statistics(mode: str) -> None:
    """eval: the generator's BN running statistics (DataFree's `sample()`); train: the batch's own. The
    generator's mode is left as it was."""
    method = make_online(Dafl, make_ctx(), sample_mode=mode)
    method.train_generator(method.round)
    method.generator.train()
    method.ctx.generator.manual_seed(5)
    drawn = method.draw(6)
    method.ctx.generator.manual_seed(5)
    method.round_labels(6)
    z = method.round_latent(torch.zeros(6, dtype=torch.long))
    with torch.no_grad():
        as_eval = method.generator.eval()(z)
        as_train = method.generator.train()(z)
    torch.testing.assert_close(drawn.images, as_eval if mode == "eval" else as_train)
    assert not torch.allclose(as_eval, as_train)
    assert method.generator.training


def test_student_criteria() -> None:
    """kl: KL at T 1 whatever `temperature`; kd: T^2 KL at `temperature`; l1: the mean absolute logit gap."""
    s, t = torch.randn(5, 10), torch.randn(5, 10)
    step = StudentStep(torch.zeros(5, 3, 32, 32), torch.zeros(5, dtype=torch.long), s, t)
    expected = {"kl": kd_loss(s, t, 1.0), "kd": kd_loss(s, t, 4.0), "l1": F.l1_loss(s, t)}
    for criterion, value in expected.items():
        method = make_online(Dafl, make_ctx(), student_criterion=criterion, temperature=4.0)
        torch.testing.assert_close(method.student_loss(step), {criterion: value})
    torch.testing.assert_close(logit_discrepancy(s, t), F.l1_loss(s, t))
    assert make_online(Dfad, make_ctx()).hp.student_criterion == "l1"
