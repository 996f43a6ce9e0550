"""One DFKD run's round loop: synthesise, bank, distil, evaluate, checkpoint; resumable at any round."""

from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path
from typing import ContextManager

import torch

from . import checkpoint
from .bank import SyntheticBank, to_uint8
from ..distributed import align_shared_modules, fingerprint
from .budget import BudgetPlanner, TimeBudget
from .distill import Distiller
from ..data.split import EvalSplit
from .evaluate import correct_predictions
from .flop_overhead import CounterOverhead
from .flops import FlopMeter
from .run_record import CurvePoint, RoundCallback, RunOutcome, RunState
from .method import Method, MethodContext
from ..schedule import RoundInfo, Schedule, cosine_factor, online_draws
from .timing import PhaseTimer


RESIDENT_TEST_BYTES = 1 << 30  # a uint8 test split up to 1 GiB is copied to the device once; larger ones stream


class Diverged(RuntimeError):
    """A loss or a synthetic image became NaN/inf."""


class DistillationRun:
    """Drives a method through the rounds of a `Schedule` (laid out before the run by the schedule policy,
    `schedule.plan_schedule`)."""

    def __init__(self, method: Method, ctx: MethodContext, test_split: EvalSplit,
                 schedule: Schedule, checkpoint_path: str | Path | None = None,
                 on_round: RoundCallback | None = None, time_budget: TimeBudget | None = None,
                 bank_budget_bytes: int | None = None) -> None:
        """`bank_budget_bytes`: what the uint8 bank may take on the device before its host tier takes
        over (None: no limit)."""
        hp = method.hp
        self.method, self.ctx, self.hp = method, ctx, hp
        self.group = ctx.group
        self.test_images = len(test_split)
        bounds = [0, *itertools.accumulate(self.group.shares(len(test_split)))]
        shard = test_split.part(bounds[self.group.rank], bounds[self.group.rank + 1])
        self.test_split = shard.to(ctx.device, RESIDENT_TEST_BYTES)  # this rank's shard (all of it alone)
        self.schedule = self.plan = schedule  # the plan as resolved; a time budget re-lays the rounds from it
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.on_round = on_round
        self.time_budget = time_budget
        self.bank = SyntheticBank(ctx.device, bank_budget_bytes)
        self.online = self.schedule.source == "online"
        self.planner = BudgetPlanner(time_budget, max(time_budget.calibration_images, self.group.world_size)) \
            if time_budget is not None and not self.online else None
        self.counts_synthesis = time_budget is None
        if self.online != (method.sample_source == "online"):
            raise ValueError(f"{method.name} samples from its {method.sample_source}, but the schedule is for "
                             f"a {self.schedule.source} method")
        params = list(ctx.student.parameters()) + method.student_parameters()
        self.optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           cosine_factor(1.0, hp.lr_min_ratio, self.schedule.lr_steps))
        self.flops = FlopMeter()
        self.counter_overhead = CounterOverhead()
        self.distiller = Distiller(ctx, method, self.optimizer,
                                   None if self.schedule.lr_per_epoch else self.scheduler, self.flops)
        self.state = RunState()
        self.timer = PhaseTimer(ctx.device)
        self.teacher_fingerprint = fingerprint(ctx.teacher, ctx.device).tolist()  # once (frozen), one host read

    def _save(self) -> None:
        """Rank 0 writes the checkpoint: the shared state once, and every rank's own RNG and method
        state (per-rank streams, BN-statistics buffers), gathered from the group."""
        if self.checkpoint_path is None:
            return
        ranks = self.group.gather_objects({"rng": checkpoint.rng_state(self.ctx.generator),
                                           "method": self.method.state_dict(), "flops": self.flops.state_dict()})
        if not self.group.is_main:
            return
        checkpoint.save_atomic({
            "state": self.state,
            "student": self.ctx.student.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "method": ranks[0]["method"],
            "bank": self.bank.state_dict(),
            "rng": ranks[0]["rng"],
            "flops": ranks[0]["flops"],
            "world_size": self.group.world_size,
            "teacher": self.teacher_fingerprint,
            **({"ranks": ranks} if self.group.active else {}),
        }, self.checkpoint_path)

    def try_resume(self) -> bool:
        """Restore everything from the checkpoint if one exists; True if it did."""
        if self.checkpoint_path is None or not self.checkpoint_path.exists():
            return False
        saved = checkpoint.load(self.checkpoint_path)
        if saved.get("world_size", 1) != self.group.world_size:
            raise ValueError(f"{self.checkpoint_path} was written by {saved.get('world_size', 1)} processes, "
                             f"this run has {self.group.world_size}")
        if saved.get("teacher", self.teacher_fingerprint) != self.teacher_fingerprint:
            warnings.warn(f"{self.checkpoint_path} was made with another teacher than this run's: "
                          f"starting the run again instead of resuming it")
            return False
        own = saved["ranks"][self.group.rank] if self.group.active else saved
        self.state = saved["state"]
        self.ctx.student.load_state_dict(saved["student"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.method.load_state_dict(own["method"])
        if "flops" in own:
            self.flops.load_state_dict(own["flops"])
        self.bank.load_state_dict(saved["bank"])
        checkpoint.restore_rng_state(own["rng"], self.ctx.generator)
        self.timer = PhaseTimer(self.ctx.device, self.state.seconds)
        return True

    def _evaluate(self, round_idx: int) -> None:
        with self.timer.phase("eval"):
            correct = correct_predictions(self.ctx.student, self.test_split, self.ctx.normalize,
                                          amp_dtype=self.ctx.amp_dtype, channels_last=self.ctx.channels_last)
            acc = 100.0 * self.group.sum_(correct).item() / max(1, self.test_images)
        elapsed = self.timer.get("synth") + self.timer.get("kd")
        self.state.curve.append(CurvePoint(round_idx, self.images_so_far, elapsed, acc))

    def _distil(self, steps: int) -> None:
        if steps <= 0:
            return
        with self.timer.phase("kd"):
            mean = self.distiller.train(self.bank, steps, self.hp.kd_batch)
            self.group.average_([mean])
        self.state.kd_steps_done += steps
        loss = self.state.last_loss = mean.item()  # the round's one read of the student's loss
        if not math.isfinite(loss):
            raise Diverged(f"student loss became {loss}")

    @property
    def images_so_far(self) -> int:
        """Synthetic images the student has had: banked (bank methods) or drawn (online methods)."""
        return self.state.images_seen if self.online else len(self.bank)

    def _online_round(self, info: RoundInfo) -> tuple[SyntheticBank | None, bool]:
        """An online round: `info.kd_steps` student steps on fresh generator batches (drawn at the steps
        `online_draws` picks, `info.images` images in all), the generator trained before every
        `student_steps_per_generator_step` steps; returns the last batch (None when a time budget stopped
        the run before the round's first step), and whether a budget stopped the round before a phase."""
        method, batch_size = self.method, self.hp.kd_batch
        local = self.group.share(batch_size)  # this rank's part of every fresh batch
        every = method.student_steps_per_generator_step
        first = sum(r.kd_steps for r in self.schedule.rounds[:info.index])
        steps, batches = info.kd_steps, info.images // batch_size
        total = torch.zeros((), device=self.ctx.device)
        batch, done, stopped = None, 0, False
        for i in range(steps):  # spans: timed without a device wait per step, added up once below
            if (first + i) % every == 0 and first + i > 0 and self._online_out_of_time(first + i == every):
                stopped = True
                break
            with self.timer.span("synth"):
                if (first + i) % every == 0:
                    with self._synthesis_flops(("train_generator",)):
                        method.train_generator(info)
                if online_draws(i + 1, batches, steps) > online_draws(i, batches, steps):
                    with self._synthesis_flops(("draw", local)):
                        batch = method.draw(local)
            with self.timer.span("kd"):
                total += self.distiller.step([(batch.images, batch.labels)], local)
            done = i + 1
        self.timer.flush()
        if done == 0:  # a budget stopped the run before this round's first phase: no round
            return None, True
        if batch is None or not self.group.all_true(torch.isfinite(batch.images).all()):
            raise Diverged(f"the generator's images became NaN/inf in round {info.index}")
        self.group.average_([total])
        self.state.last_loss = total.item() / max(1, done)
        if not math.isfinite(self.state.last_loss):
            raise Diverged(f"student loss became {self.state.last_loss}")
        self.state.kd_steps_done += done
        self.state.images_seen += online_draws(done, batches, steps) * batch_size
        shown = SyntheticBank(self.ctx.device)  # the round's last batch (every rank's part), for sample grids only
        shown.add(*self._gathered(batch.images, batch.labels, batch_size))
        return shown, stopped

    def _spent(self) -> float:
        """Synthesis + KD seconds so far (what a time budget counts)."""
        return self.timer.get("synth") + self.timer.get("kd")

    def _online_out_of_time(self, after_first_phase: bool) -> bool:
        """Before an online method's generator phase (under a budget): would one more phase, as long as
        the last, overrun? The first phase is the smallest unit of work: not fitting it is over budget."""
        if self.time_budget is None:
            return False
        self.timer.flush()
        spent, costs = self._spent(), self.state.costs
        phase_s = spent - costs.phase_mark if spent > costs.phase_mark else costs.phase_s  # (none since a resume)
        costs.phase_s, costs.phase_mark = phase_s, spent
        costs.kd_step_s = self._kd_step_s()
        if after_first_phase:
            costs.unit_s = phase_s
            self.state.unit_over_budget = self.group.any_true(self.time_budget.overran(spent, costs.kd_step_s))
        return self.state.unit_over_budget or self.group.any_true(spent + phase_s > self.time_budget.seconds)

    def _bank_round(self, info: RoundInfo) -> float:
        """A bank round: synthesise the round's images, bank them, then the round's student steps;
        returns the synthesis seconds (FLOP counting included: what the round cost this time)."""
        share = self.group.share(info.images)
        key = self.method.work_key(share, info)
        counting, before = self.counts_synthesis and not self.flops.has_counted("synth", key), self.timer.get("synth")
        with self.timer.phase("synth"):
            with self._synthesis_flops(key):
                batch = self.method.synthesize(share, info)
            finite = torch.isfinite(batch.images).all()
            if batch.kept_loss is not None:
                finite = finite & torch.isfinite(torch.as_tensor(batch.kept_loss, device=finite.device))
            images, labels = self._gathered(batch.images, batch.labels, info.images)
        synth_s = self.timer.get("synth") - before
        floor = self.state.curve[-1].elapsed_s if self.state.curve else 0.0
        self.timer.discount("synth", self.counter_overhead.discount(key, synth_s, counting, self._spent() - floor))
        if not self.group.all_true(finite):  # the round's one host read of its synthesis
            raise Diverged(f"synthesis diverged in round {info.index} (loss {batch.loss})")
        self.bank.add(images, labels)
        return synth_s

    def _round_kd(self, info: RoundInfo) -> bool:
        """A bank round's student steps. Under a budget whose KD step cost is still unknown (the first
        KD round) one step runs first; the rest run only if they and the final KD fit the budget, else
        the rounds stop here (the final KD, cut to fit, trains on the bank). True when stopped."""
        steps = info.kd_steps
        if self.planner is None or self.state.kd_steps_done or steps <= 1:
            self._distil(steps)
            return False
        self._distil(1)
        kd_step_s = self._kd_step_s()
        final = kd_step_s * TimeBudget.scaled_final_steps(self.schedule, info.index + 1)
        if self.group.any_true(self._spent() + (steps - 1) * kd_step_s + final > self.time_budget.seconds):
            return True
        self._distil(steps - 1)
        return False

    def _synthesis_flops(self, key: tuple) -> ContextManager[None]:
        """Count the synthesis FLOPs of `key` (once, then cached); not under a time budget, where the
        counter's per-op overhead (several times a small round's own cost) would be charged to the budget."""
        return self.flops.measure("synth", key) if self.counts_synthesis else self.flops.uncounted()

    def _gathered(self, images: torch.Tensor, labels: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Every rank's new images and labels, in rank order; gathered as uint8, which the bank keeps as is."""
        if not self.group.active:
            return images, labels
        return self.group.all_gather_rows(to_uint8(images), total), self.group.all_gather_rows(labels, total)

    def _kd_step_s(self) -> float:
        """KD seconds per student step over the run so far (0 before any)."""
        return self.timer.get("kd") / max(1, self.state.kd_steps_done)

    def _budgeted_round_done(self, info: RoundInfo, synth_s: float) -> None:
        """A bank round under a budget: record its costs; after the calibration round, stop a run whose
        smallest unit did not fit, and size the rounds to come."""
        costs, planner = self.state.costs, self.planner
        costs.kd_step_s = self._kd_step_s()
        planner.measured(costs, info, synth_s)
        if info.index == 0 and self.group.any_true(self.time_budget.overran(self._spent(), costs.kd_step_s)):
            self.state.unit_over_budget = True
            return
        size = self.group.main_value(planner.fitting_size(self.schedule, info.index + 1, costs))
        self.schedule = self.state.schedule = planner.resized(self.plan, self.schedule, info.index + 1, size)

    def _out_of_time(self, rounds_done: int) -> bool:
        """At a round boundary: has the time budget (if any) run out, the next round and the final KD
        included? (Decided alike on every rank: any rank out of time stops them all.)"""
        if self.state.unit_over_budget:
            return True
        if self.time_budget is None or rounds_done == 0:
            return False
        if self.planner is None:
            return self.group.any_true(self._spent() >= self.time_budget.seconds)
        return self.group.any_true(self.planner.stops_before(self.schedule, rounds_done, self._spent(),
                                                             self.state.costs))

    def _relay_cosine(self, steps: int) -> None:
        """Re-lay the student's per-step cosine to anneal from its current rate over `steps` steps."""
        if steps > 0 and not self.schedule.lr_per_epoch:
            current = self.scheduler.get_last_lr()[0] / max(self.scheduler.base_lrs[0], 1e-12)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, cosine_factor(current, self.hp.lr_min_ratio, steps))
            self.distiller.scheduler = self.scheduler

    def final_kd(self) -> int:
        """The final KD phase: the schedule's steps, or for a run its budget stopped, those scaled to the
        images made. Under a budget they are cut to the seconds left, and a bank run the budget stopped
        fills those seconds with student steps (the cosine re-laid over what runs). Returns the steps run."""
        if self.state.unit_over_budget:
            return 0
        stopped = self.state.stopped_at is not None
        filling = stopped and self.planner is not None  # a bank run the budget stopped: fill what is left
        steps = TimeBudget.scaled_final_steps(self.schedule, self.state.stopped_at) if stopped \
            else self.schedule.final_kd_steps
        if self.time_budget is None or (steps == 0 and not filling):
            if stopped:
                self._relay_cosine(steps)
            self._distil(steps)
            return steps
        ran = 0
        if self.state.kd_steps_done == 0:  # a KD step's cost is still unknown: measure one first
            self._relay_cosine(max(1, steps))
            self._distil(1)
            ran, steps = 1, max(0, steps - 1)
        kd_step_s = self._kd_step_s()
        fitting = self.group.main_value(self.time_budget.final_steps(steps, self._spent(), kd_step_s,
                                                                     fill=filling))
        if stopped or fitting != steps:
            self._relay_cosine(fitting)
        self._distil(fitting)
        return ran + fitting

    def run(self) -> RunOutcome:
        """Run (or finish) all rounds and the final KD steps; checkpoint after each round. Under a time
        budget the rounds are sized and stopped to fit it (checked before each round, and before each
        generator phase of an online method) and the final KD is scaled down and cut to fit."""
        if self.planner is not None:
            if self.state.schedule is None and self.state.next_round == 0:
                self.state.schedule = self.planner.opening(self.plan, self.state.costs)
            self.schedule = self.state.schedule or self.schedule
        while self.state.next_round < len(self.schedule.rounds):
            r = self.state.next_round
            if self._out_of_time(r):
                self.state.stopped_at = r
                break
            info = self.schedule.rounds[r]
            stopped = False
            if self.online:
                shown, stopped = self._online_round(info)
                if shown is None:
                    self.state.stopped_at = r
                    break
                self.bank = shown
            else:
                synth_s = self._bank_round(info)
                stopped = self._round_kd(info)
                if self.planner is not None and not stopped:
                    self._budgeted_round_done(info, synth_s)
            align_shared_modules(self.group, self.method.shared_modules(), f"round {r + 1}")
            if self.schedule.steps_lr_after(r):
                self.scheduler.step()  # the reference's cosine steps once per post-warm-up epoch
            if self.schedule.evaluates_after(r, self.hp.eval_every) or stopped:
                self._evaluate(r + 1)
            self.state.next_round = r + 1
            if stopped:
                self.state.stopped_at = r + 1
            self.state.seconds = self.timer.seconds
            self._save()
            if self.on_round:
                self.on_round(r + 1, len(self.schedule.rounds), self.state)
            if stopped:
                break
        return self._finish()

    def _finish(self) -> RunOutcome:
        """The final KD and evaluation, and what the run measured (over budget or not)."""
        rounds_run = self.state.next_round
        if self.final_kd() > 0:
            align_shared_modules(self.group, self.method.shared_modules(), "the final KD")
            self._evaluate(rounds_run)
        elif not self.state.curve or self.state.curve[-1].round != rounds_run:
            self._evaluate(rounds_run)
        self.state.seconds = self.timer.seconds
        kd_step_s = self._kd_step_s()
        budget = self.time_budget
        over = budget is not None and (self.state.unit_over_budget or budget.overran(self._spent(), kd_step_s))
        made = [r.images for r in self.schedule.rounds[:rounds_run]]
        return RunOutcome(self.state.curve[-1].student_acc, self.images_so_far, dict(self.timer.seconds),
                          list(self.state.curve), self.bank, self._group_tflop(),
                          kd_steps=self.state.kd_steps_done, rounds=rounds_run,
                          round_images=made[-1] if made else 0, over_budget=over,
                          unit_s=self.state.costs.unit_s if self.state.unit_over_budget else None,
                          tolerance_s=budget.tolerance(kd_step_s) if budget else None)

    def _group_tflop(self) -> dict[str, float]:
        """TFLOP per phase summed over the process group's ranks (each counted its own share)."""
        phases = ("synth", "kd") if self.counts_synthesis else ("kd",)
        totals = torch.tensor([float(self.flops.totals.get(p, 0)) for p in phases], dtype=torch.float64,
                              device=self.ctx.device)
        return dict(zip(phases, (self.group.sum_(totals) / 1e12).tolist()))
