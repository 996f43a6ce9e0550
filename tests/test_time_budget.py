"""Equal-time runs (`--time-budget`): stopping at round boundaries on a controlled clock, the scaled final
KD phase, the annealed learning rate, resume, run ids, rows and sweep keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cli_helpers import ok, one_line_error
from method_helpers import make_ctx, make_method

from dfkd_bench.data import get_dataset
from dfkd_bench.engine import DistillationRun, timing
from dfkd_bench.engine.budget import TimeBudget
from dfkd_bench.methods.nayer import Nayer
from dfkd_bench.outputs import read_runs
from dfkd_bench.runner import run as run_api
from dfkd_bench.schedule import RoundInfo, equal_schedule
from dfkd_bench.sweep import load_sweep

SYNTH_S, KD_STEP_S = 1.0, 0.05  # what the controlled clock charges per round and per student step


class Clock:
    """A stand-in for the `time` module in engine.timing: seconds move only when a phase charges them."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def budgeted_run(monkeypatch: pytest.MonkeyPatch, budget: float | None, tmp_path: Path,
                 n_total: int = 320) -> tuple[DistillationRun, Clock]:
    """A tiny NAYER run on digits whose synthesis costs SYNTH_S a round and KD KD_STEP_S a step."""
    clock = Clock()
    monkeypatch.setattr(timing, "time", clock)
    method = make_method(Nayer, make_ctx(), final_kd_steps=40, kd_steps=4, warmup_rounds=1)
    synthesize = method.synthesize

    def charged_synthesis(n: int, round: RoundInfo | None = None) -> Any:
        clock.now += SYNTH_S
        return synthesize(n, round)

    method.synthesize = charged_synthesis  # type: ignore[method-assign]
    split = get_dataset("digits").open().test_split().subset(40)
    run = DistillationRun(method, method.ctx, split, n_total, checkpoint_path=tmp_path / "checkpoint.pt",
                          time_budget=TimeBudget(budget) if budget else None)
    train = run.distiller.train

    def charged_training(bank: Any, steps: int, batch_size: int) -> float:
        clock.now += KD_STEP_S * steps
        return train(bank, steps, batch_size)

    run.distiller.train = charged_training  # type: ignore[method-assign]
    return run, clock


def test_budget_stops_at_a_round_boundary_and_scales_the_final_kd(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    budget = 6.0
    run, clock = budgeted_run(monkeypatch, budget, tmp_path)
    schedule = run.schedule
    outcome = run.run()
    stopped = run.state.stopped_at
    assert stopped is not None and 0 < stopped < len(schedule.rounds)
    made = sum(r.images for r in schedule.rounds[:stopped])
    assert outcome.n_synthetic == made < schedule.images
    # the final phase ran the final KD steps in proportion to the images made
    final = round(schedule.final_kd_steps * made / schedule.images)
    kd_before = sum(r.kd_steps for r in schedule.rounds[:stopped])
    assert 0 < final < schedule.final_kd_steps
    assert outcome.seconds["kd"] == pytest.approx(KD_STEP_S * (kd_before + final))
    # it went on while the budget allowed, and ended within one round of it
    spent = outcome.seconds["synth"] + outcome.seconds["kd"]
    last_round = SYNTH_S + KD_STEP_S * schedule.rounds[stopped - 1].kd_steps
    assert budget <= spent <= budget + last_round
    earlier = SYNTH_S * (stopped - 1) + KD_STEP_S * sum(r.kd_steps for r in schedule.rounds[:stopped - 1])
    earlier_final = round(schedule.final_kd_steps * (made - schedule.rounds[stopped - 1].images) / schedule.images)
    assert earlier + KD_STEP_S * earlier_final < budget
    # the student's learning rate still anneals to its floor over the shortened final phase
    hp = run.hp
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(hp.lr * hp.lr_min_ratio, rel=1e-6)
    assert clock.now == pytest.approx(spent)


def test_a_generous_budget_changes_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    run, _ = budgeted_run(monkeypatch, 1e6, tmp_path / "a", n_total=96)
    budgeted = run.run()
    plain_run, _ = budgeted_run(monkeypatch, None, tmp_path / "b", n_total=96)
    plain = plain_run.run()
    assert run.state.stopped_at is None
    assert budgeted.n_synthetic == plain.n_synthetic == 96
    assert budgeted.student_acc == plain.student_acc
    assert budgeted.seconds == pytest.approx(plain.seconds)


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
    assert resumed.n_synthetic == full.n_synthetic
    assert resumed.seconds == pytest.approx(full.seconds)


def test_exhausted_projects_the_final_kd_from_measured_step_time() -> None:
    schedule = equal_schedule(n_total=100, synth_batch=10, kd_per_image=1.0, warmup_rounds=2,
                              warmup_fraction=0.5, final_kd_steps=50)
    budget = TimeBudget(10.0)
    # 4 rounds (2 of warm-up) made 40 images: final 20 steps; 2 KD rounds of 13 steps took 2.6 s: 0.1 s a step
    assert TimeBudget.scaled_final_steps(schedule, 4) == 20
    assert [r.kd_steps for r in schedule.rounds[:4]] == [0, 0, 13, 13]
    assert not budget.exhausted(schedule, 4, synth_s=5.3, kd_s=2.6)   # 7.9 + 2.0 projected < 10
    assert budget.exhausted(schedule, 4, synth_s=5.4, kd_s=2.6)       # 8.0 + 2.0 projected = 10
    assert not budget.exhausted(schedule, 2, synth_s=9.9, kd_s=0.0)   # warm-up only: nothing to project
    with pytest.raises(ValueError):
        TimeBudget(0.0)


def test_run_rows_and_ids_record_the_budget(digits_teacher: Any, tmp_path: Path, tiny_args: Any) -> None:
    args = ["run", "--methods", "fast", "--ratio", "1.0", "--out", str(tmp_path), "--quiet",
            *tiny_args("fast"), "--set", "fast.eval_every=100"]
    ok(args + ["--time-budget", "0.3"])
    rows = list(read_runs(tmp_path).values())
    assert len(rows) == 1
    row = rows[0]
    assert "-b0.3s-s0-" in row["run_id"] and row["time_budget"] == "0.3" and row["status"] == "ok"
    planned = round(1.0 * get_dataset("digits").train_size)
    assert 0 < int(row["n_synthetic"]) < planned
    plans = run_api("fast", ratio=1.0, time_budget=[0.3, 0.6], dry_run=True)
    plain = run_api("fast", ratio=1.0, dry_run=True)[0]
    assert ["-b0.3s-s0-" in plans[0].run_id, "-b0.6s-s0-" in plans[1].run_id] == [True, True]
    assert len({p.run_id for p in plans} | {plain.run_id}) == 3
    assert "-b" not in plain.run_id and plain.config.time_budget is None


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
