"""Equal-time runs (`--time-budget`) on a controlled clock: calibrated round sizes, stops that keep the
budget, over-budget runs, online stops before a generator phase, the annealed learning rate, resume,
run ids, rows and sweep keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cli_helpers import ok, one_line_error
from method_helpers import make_ctx, make_method, make_online

from dfkd_bench.data import get_dataset
from dfkd_bench.engine import DistillationRun, timing
from dfkd_bench.engine.budget import RoundCosts, TimeBudget, relaid
from dfkd_bench.methods.dfad import Dfad
from dfkd_bench.methods.nayer import Nayer
from dfkd_bench.outputs import read_runs
from dfkd_bench.runner import run as run_api
from dfkd_bench.schedule import RoundInfo, equal_schedule, plan_schedule
from dfkd_bench.sweep import load_sweep

IMAGE_S, KD_STEP_S = 1 / 32, 0.05  # what the controlled clock charges per synthesised image and per student step
PHASE_S = 0.2  # an online generator phase


class Clock:
    """A stand-in for the `time` module in engine.timing: seconds move only when a phase charges them."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def charge_training(run: DistillationRun, clock: Clock, kd_step_s: float = KD_STEP_S) -> None:
    """Make the run's student steps cost KD_STEP_S each on `clock` (bank rounds train through `step` too)."""
    step = run.distiller.step

    def charged_step(groups: Any, batch_size: int) -> Any:
        clock.now += kd_step_s
        return step(groups, batch_size)

    run.distiller.step = charged_step  # type: ignore[method-assign]


def budgeted_run(monkeypatch: pytest.MonkeyPatch, budget: float | None, tmp_path: Path, n_total: int = 320,
                 image_s: float = IMAGE_S, kd_step_s: float = KD_STEP_S) -> tuple[DistillationRun, Clock]:
    """A tiny NAYER run on digits (rounds of 32) whose synthesis costs `image_s` an image, KD KD_STEP_S a step."""
    clock = Clock()
    monkeypatch.setattr(timing, "time", clock)
    method = make_method(Nayer, make_ctx(), final_kd_steps=40, kd_steps=4, warmup_rounds=1, synth_batch=32)
    synthesize = method.synthesize

    def charged_synthesis(n: int, round: RoundInfo | None = None) -> Any:
        clock.now += image_s * n
        return synthesize(n, round)

    method.synthesize = charged_synthesis  # type: ignore[method-assign]
    split = get_dataset("digits").open().test_split().subset(40)
    run = DistillationRun(method, method.ctx, split, plan_schedule("equal", method.hp, n_total),
                          checkpoint_path=tmp_path / "checkpoint.pt",
                          time_budget=TimeBudget(budget) if budget else None)
    charge_training(run, clock, kd_step_s)
    return run, clock


def test_a_budget_binds_with_calibrated_round_sizes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    budget = TimeBudget(6.0)
    run, clock = budgeted_run(monkeypatch, budget.seconds, tmp_path)
    planned = run.schedule
    outcome = run.run()
    rounds = run.schedule.rounds[:outcome.rounds]
    # a calibration round of two images first, then rounds sized so that at least 5 fit in the budget
    assert rounds[0].images == budget.calibration_images
    sized = rounds[-1].images  # (re-sized once the first KD round measured the student steps' cost)
    assert sized < planned.rounds[0].images
    sizes = [r.images for r in rounds[1:]]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == planned.rounds[0].images
    kd_per_image = planned.kd_steps / planned.images
    assert budget.rounds_that_fit * sized * (IMAGE_S + kd_per_image * KD_STEP_S) <= budget.seconds
    # it stopped early, every image it made was banked, and it ended within the tolerance
    assert run.state.stopped_at == outcome.rounds < len(run.schedule.rounds)
    assert outcome.n_synthetic == sum(r.images for r in rounds) < planned.images
    spent = outcome.seconds["synth"] + outcome.seconds["kd"]
    assert outcome.tolerance_s == pytest.approx(max(0.05 * budget.seconds, KD_STEP_S))
    assert budget.seconds - KD_STEP_S < spent <= budget.seconds  # the final KD filled what the rounds left
    assert not outcome.over_budget
    assert outcome.kd_steps == round(outcome.seconds["kd"] / KD_STEP_S)
    assert (outcome.round_images, outcome.unit_s) == (sized, None)
    # the student's learning rate still anneals to its floor over the shortened final phase
    hp = run.hp
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(hp.lr * hp.lr_min_ratio, rel=1e-6)
    assert clock.now == pytest.approx(spent)


def test_a_generous_budget_makes_every_image_in_planned_rounds(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    run, _ = budgeted_run(monkeypatch, 1e6, tmp_path / "a", n_total=96)
    budgeted = run.run()
    plain_run, _ = budgeted_run(monkeypatch, None, tmp_path / "b", n_total=96)
    plain = plain_run.run()
    assert run.state.stopped_at is None and not budgeted.over_budget
    assert budgeted.n_synthetic == plain.n_synthetic == 96
    assert [r.images for r in run.schedule.rounds] == [2, 32, 32, 30]  # the calibration round, then planned sizes
    assert budgeted.kd_steps == plain.kd_steps == plain_run.schedule.kd_steps
    assert budgeted.seconds["kd"] == pytest.approx(plain.seconds["kd"])
    # synthesis is not FLOP-counted under a budget (the counter's overhead would be charged to it); KD is
    assert "synth" not in budgeted.tflop and budgeted.tflop["kd"] == pytest.approx(plain.tflop["kd"])


def test_a_unit_that_cannot_fit_is_over_budget(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    run, _ = budgeted_run(monkeypatch, 5.0, tmp_path, image_s=4.0)
    outcome = run.run()
    assert outcome.over_budget and outcome.unit_s == pytest.approx(8.0)  # two images of 4 s
    assert (outcome.rounds, outcome.n_synthetic, outcome.kd_steps) == (1, 2, 0)


def test_a_run_that_overran_is_over_budget(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    run, clock = budgeted_run(monkeypatch, 6.0, tmp_path)
    synthesize = run.method.synthesize

    def slower_later(n: int, round: RoundInfo | None = None) -> Any:
        clock.now += 3.0 if round is not None and round.index == 3 else 0.0  # a round far slower than measured
        return synthesize(n, round)

    run.method.synthesize = slower_later  # type: ignore[method-assign]
    outcome = run.run()
    assert outcome.over_budget and outcome.unit_s is None
    assert outcome.seconds["synth"] + outcome.seconds["kd"] > 6.0 + outcome.tolerance_s


def test_the_first_kd_round_stops_the_rounds_when_its_steps_would_overrun(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Path) -> None:
    run, _ = budgeted_run(monkeypatch, 6.0, tmp_path, kd_step_s=0.5)
    outcome = run.run()
    first_kd = next(r for r in run.schedule.rounds if r.kd_steps)
    assert first_kd.kd_steps > 1 and run.state.stopped_at == first_kd.index + 1  # its images made, one step
    spent = outcome.seconds["synth"] + outcome.seconds["kd"]
    assert outcome.kd_steps > 1 and 6.0 - 0.5 < spent <= 6.0 and not outcome.over_budget  # final KD fills the rest


def test_an_interrupted_budgeted_run_resumes_to_the_same_stop(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    full_run, _ = budgeted_run(monkeypatch, 6.0, tmp_path / "full")
    full = full_run.run()
    first, _ = budgeted_run(monkeypatch, 6.0, tmp_path / "resumed")
    first.on_round = lambda r, n, state: (_ for _ in ()).throw(KeyboardInterrupt) if r == 3 else None
    with pytest.raises(KeyboardInterrupt):
        first.run()
    second, _ = budgeted_run(monkeypatch, 6.0, tmp_path / "resumed")
    assert second.try_resume() and second.state.next_round == 3
    resumed = second.run()
    assert second.state.stopped_at == full_run.state.stopped_at
    assert [r.images for r in second.schedule.rounds] == [r.images for r in full_run.schedule.rounds]
    assert (resumed.n_synthetic, resumed.kd_steps) == (full.n_synthetic, full.kd_steps)
    assert resumed.seconds == pytest.approx(full.seconds)


def test_online_methods_stop_before_a_generator_phase_that_would_overrun(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    clock = Clock()
    monkeypatch.setattr(timing, "time", clock)
    method = make_online(Dfad, make_ctx(), round_steps=10)  # rounds of two phases: stops also at round starts
    train_generator = method.train_generator

    def charged_phase(info: RoundInfo) -> None:
        clock.now += PHASE_S
        train_generator(info)

    method.train_generator = charged_phase  # type: ignore[method-assign]
    split = get_dataset("digits").open().test_split().subset(40)
    run = DistillationRun(method, method.ctx, split, plan_schedule("equal", method.hp, 4000),
                          time_budget=TimeBudget(3.1))
    charge_training(run, clock)
    outcome = run.run()
    phase = PHASE_S + KD_STEP_S * method.student_steps_per_generator_step
    phases = outcome.kd_steps // method.student_steps_per_generator_step
    assert run.state.stopped_at is not None and outcome.kd_steps < run.schedule.kd_steps
    assert 3.1 - phase < phases * phase <= 3.1 and not outcome.over_budget
    assert outcome.n_synthetic < run.schedule.images


def test_relaid_rounds_keep_the_plan_at_every_image() -> None:
    plan = equal_schedule(n_total=100, synth_batch=10, kd_per_image=1.0, warmup_rounds=2,
                          warmup_fraction=0.5, final_kd_steps=50, g_life=3)
    relaid_plan = relaid(plan, [], 4, first=2)
    assert [r.images for r in relaid_plan.rounds][:3] == [2, 4, 4] and relaid_plan.images == 100
    warm = sum(r.images for r in relaid_plan.rounds if r.warmup)
    assert 20 <= warm < 20 + 4  # the plan's two warm-up rounds, to the end of the round they end in
    assert sum(r.kd_steps for r in relaid_plan.rounds) == sum(r.kd_steps for r in plan.rounds)
    starts = {sum(r.images for r in relaid_plan.rounds[:i]) for i, r in enumerate(relaid_plan.rounds)
              if r.reset_generator}
    # generator resets at the rounds holding the plan's reset images (30, 60, 90: rounds 3, 6, 9 of 10)
    assert sorted(starts) == [30, 58, 90]
    assert [r.index for r in relaid_plan.rounds] == list(range(len(relaid_plan.rounds)))
    assert relaid(plan, plan.rounds[:3], 10).rounds == plan.rounds
    # re-laid again from the plan, the warm-up still ends where the plan's does (it never creeps)
    again = relaid(plan, relaid_plan.rounds[:6], 7)
    assert sum(r.images for r in again.rounds if r.warmup) == warm


def test_round_sizing_and_the_final_kd_fit_the_budget() -> None:
    budget = TimeBudget(10.0)
    assert budget.round_images(per_image_s=0.1, smallest=2, largest=64) == 20   # 5 rounds of 20 images = 10 s
    assert budget.round_images(per_image_s=10.0, smallest=2, largest=64) == 2
    assert budget.round_images(per_image_s=0.001, smallest=2, largest=64) == 64
    costs = RoundCosts()
    costs.measured(2, 4.0)  # one size measured: proportional, 2 s an image
    assert (costs.per_image_s, costs.per_round_s) == (2.0, 0.0)
    costs.measured(6, 4.5)  # two sizes: 3.75 s a round (per-step overheads) + 0.125 s an image
    assert (costs.per_image_s, costs.per_round_s) == pytest.approx((0.125, 3.75))
    assert TimeBudget(60.0).round_images(costs.per_image_s, 2, 256, costs.per_round_s) == 66  # 5 x 12 s
    assert TimeBudget(10.0).round_images(costs.per_image_s, 2, 256, costs.per_round_s) == 2
    assert budget.final_steps(planned=100, spent=8.0, kd_step_s=0.1) == 20
    assert budget.final_steps(planned=10, spent=8.0, kd_step_s=0.1) == 10
    assert budget.final_steps(planned=10, spent=12.0, kd_step_s=0.1) == 0
    assert budget.final_steps(planned=10, spent=8.0, kd_step_s=0.1, fill=True) == 20  # a stopped run fills 2 s
    assert budget.tolerance(kd_step_s=0.1) == 0.5 and budget.tolerance(kd_step_s=2.0) == 2.0
    assert budget.overran(10.6, 0.1) and not budget.overran(10.5, 0.1)
    with pytest.raises(ValueError):
        TimeBudget(0.0)


def test_run_rows_and_ids_record_the_budget(digits_teacher: Any, tmp_path: Path, tiny_args: Any) -> None:
    args = ["run", "--methods", "fast", "--ratio", "1.0", "--out", str(tmp_path), "--quiet",
            *tiny_args("fast"), "--set", "fast.eval_every=100"]
    ok(args + ["--time-budget", "3"])
    rows = list(read_runs(tmp_path).values())
    assert len(rows) == 1
    row = rows[0]
    assert "-b3s-s0-" in row["run_id"] and row["time_budget"] == "3" and row["status"] == "ok"
    assert float(row["synth_s"]) + float(row["kd_s"]) <= 3 + float(row["tolerance_s"])
    assert int(row["rounds"]) > 1 and int(row["kd_steps"]) > 0 and row["unit_s"] == ""
    planned = round(1.0 * get_dataset("digits").train_size)
    assert 0 < int(row["n_synthetic"]) < planned
    plans = run_api("fast", ratio=1.0, time_budget=[0.3, 0.6], dry_run=True)
    plain = run_api("fast", ratio=1.0, dry_run=True)[0]
    assert ["-b0.3s-s0-" in plans[0].run_id, "-b0.6s-s0-" in plans[1].run_id] == [True, True]
    assert len({p.run_id for p in plans} | {plain.run_id}) == 3
    assert "-b" not in plain.run_id and plain.config.time_budget is None
    # a number is a number: 1 and 1.0, 5 and 5.0 name the same run from Python, the CLI or a sweep file
    assert run_api("fast", ratio=1, time_budget=5, dry_run=True)[0].run_id == \
        run_api("fast", ratio=1.0, time_budget=5.0, dry_run=True)[0].run_id


def test_bad_budgets_are_refused_in_one_line(tmp_path: Path) -> None:
    one_line_error(["run", "--methods", "fast", "--time-budget", "0", "--out", str(tmp_path)], "--time-budget",
                   "positive")
    one_line_error(["run", "--methods", "fast", "--time-budget", "soon", "--out", str(tmp_path)], "--time-budget")
    spec = tmp_path / "bad.toml"
    spec.write_text('methods = ["fast"]\ntime_budgets = [30, -1]\n')
    one_line_error(["sweep", str(spec), "--dry-run", "--out", str(tmp_path)], "time_budgets", "positive")
    assert not (tmp_path / "runs.csv").exists()


def test_sweep_time_budgets_expand_the_grid(tmp_path: Path) -> None:
    spec = tmp_path / "equal_time.toml"
    spec.write_text('methods = ["fast", "nayer"]\nratios = [0.5]\nseeds = [0, 1]\ntime_budgets = [10, 20]\n')
    configs = load_sweep(spec)
    assert len(configs) == 8
    assert sorted({c.time_budget for c in configs}) == [10.0, 20.0]
    out = ok(["sweep", str(spec), "--dry-run", "--out", str(tmp_path)])
    assert out.count("-b10s-") == 4 and out.count("-b20s-") == 4
    assert out.count("~10s") == 4 and out.count("~20s") == 4  # nothing finished yet: the budget is the estimate
