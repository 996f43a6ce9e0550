"""Equal-time runs: a budget of synthesis + KD wall-clock seconds that binds.

A bank method's first round is a small calibration round (`calibration_images`, each with the
method's full iterations). From what it costs, the rounds are sized so that at least
`rounds_that_fit` of them fit in the budget: fewer images per round, never fewer iterations per
image. Once rounds of two sizes are measured, a round's cost is fitted as a fixed part plus a part
per image, and the rounds are re-sized when that says the size is 10% too large or half too small.
Before each round the run stops if that round plus the final KD (scaled to the images made) would
overrun; the final KD of a run the budget stopped then fills the seconds left with student steps (it
is cut to them otherwise), so the run ends within one KD step of its budget. A run that still ends
above budget + tolerance (max(5% of the budget, one KD step)) is over budget and reports no accuracy;
so is one whose smallest unit of work (the calibration round; an online method's first generator
phase) does not fit.
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass, replace

from ..schedule import RoundInfo, Schedule


@dataclass(frozen=True)
class TimeBudget:
    """`seconds` of synthesis + KD for a whole run (evaluation is not counted)."""

    seconds: float
    rounds_that_fit: int = 5       # a bank method's rounds shrink until at least this many fit
    calibration_images: int = 2    # the first round's images: two, so a generator's BatchNorm has a batch
    tolerance_fraction: float = 0.05

    def __post_init__(self) -> None:
        if not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ValueError(f"a time budget must be a positive number of seconds, got {self.seconds}")

    def tolerance(self, kd_step_s: float) -> float:
        """How far past the budget a run may end and still count: max(5% of it, one KD step)."""
        return max(self.tolerance_fraction * self.seconds, kd_step_s)

    def overran(self, spent: float, kd_step_s: float) -> bool:
        """True when `spent` seconds are beyond the budget plus its tolerance."""
        return spent > self.seconds + self.tolerance(kd_step_s)

    def round_images(self, per_image_s: float, smallest: int, largest: int, per_round_s: float = 0.0) -> int:
        """Images per round such that `rounds_that_fit` rounds, each `per_round_s` plus `per_image_s`
        an image, fit in the budget."""
        if per_image_s <= 0:
            return largest
        fitting = math.floor((self.seconds / self.rounds_that_fit - per_round_s) / per_image_s)
        return max(smallest, min(largest, fitting))

    def final_steps(self, planned: int, spent: float, kd_step_s: float, fill: bool = False) -> int:
        """The final KD steps that fit in the seconds left: at most `planned`, or with `fill` as many as fit
        (a run the budget stopped spends what is left on its student); `planned` while a step's cost is
        unknown."""
        if kd_step_s <= 0:
            return planned
        fitting = math.floor((self.seconds - spent) / kd_step_s)
        return max(0, fitting if fill else min(planned, fitting))

    @staticmethod
    def scaled_final_steps(schedule: Schedule, rounds_done: int) -> int:
        """The final KD steps in proportion to the images made in the first `rounds_done` rounds."""
        made = sum(r.images for r in schedule.rounds[:rounds_done])
        return round(schedule.final_kd_steps * made / max(1, schedule.images))


@dataclass
class RoundCosts:
    """What the budget has measured so far (kept in the checkpoint, so a resumed run decides alike)."""

    per_image_s: float = 0.0     # synthesis seconds per extra image in a round
    per_round_s: float = 0.0     # synthesis seconds a round costs whatever its size (per-step overheads)
    kd_step_s: float = 0.0       # KD seconds per student step, over all steps so far
    largest: int = 0             # the planned images per round (the size rounds never exceed)
    unit_s: float | None = None  # seconds of the smallest unit of work, once measured
    phase_s: float = 0.0         # an online method's last generator phase with its student steps
    phase_mark: float = 0.0      # the seconds spent when the last phase began
    points: tuple[tuple[int, float], ...] = ()  # (images, synthesis seconds) of the last two round sizes

    def measured(self, images: int, synth_s: float) -> None:
        """Fit synthesis seconds = per_round_s + per_image_s * images to the last rounds of two sizes
        (proportional while only one size was measured): small rounds are dominated by per-step cost."""
        points = [p for p in self.points if p[0] != images][-1:] + [(images, synth_s)]
        self.points = tuple(points)
        if len(points) == 2:
            (n0, t0), (n1, t1) = points
            slope = (t1 - t0) / (n1 - n0)
            if slope > 0 and t1 - slope * n1 >= 0:
                self.per_image_s, self.per_round_s = slope, t1 - slope * n1
                return
        self.per_image_s, self.per_round_s = synth_s / max(1, images), 0.0

    def round_seconds(self, info: RoundInfo) -> float:
        """The projected seconds of round `info`: its synthesis and its KD steps."""
        return self.per_round_s + self.per_image_s * info.images + self.kd_step_s * info.kd_steps


def relaid(plan: Schedule, kept: list[RoundInfo], size: int, first: int | None = None) -> Schedule:
    """`plan` with the rounds after `kept` (the rounds already run) laid as rounds of `size` images
    (after one of `first` images when given; the last may be smaller). Each keeps the plan's warm-up,
    KD steps per image, generator resets and reset_l0 at the same image positions, so only the round
    size changes. Always laid from the plan, so re-laying again never moves the warm-up's end."""
    schedule, rounds = plan, plan.rounds
    ends = list(itertools.accumulate(r.images for r in rounds))
    starts = [0, *ends[:-1]]  # ascending: the plan's rounds starting in [a, b) are one bisected slice
    kd_before = [0, *itertools.accumulate(r.kd_steps for r in rounds)]

    def kd_until(position: int) -> float:
        """The plan's cumulative KD steps at image `position` (linear within a round)."""
        i = min(bisect.bisect_right(ends, position), len(rounds) - 1)
        inside = min(max(position - starts[i], 0), rounds[i].images) / max(1, rounds[i].images)
        return kd_before[i] + rounds[i].kd_steps * inside

    def source(position: int) -> RoundInfo:
        return rounds[min(bisect.bisect_right(ends, position), len(rounds) - 1)]

    done = len(kept)
    position, given = sum(r.images for r in kept), sum(r.kd_steps for r in kept)
    infos = list(kept)
    while position < schedule.images:
        step = first if first is not None and len(infos) == done else size
        end = min(schedule.images, position + max(1, step))
        origin = source(position)
        steps = 0 if origin.warmup else max(0, round(kd_until(end)) - given)
        marked = rounds[bisect.bisect_left(starts, position):bisect.bisect_left(starts, end)]
        infos.append(replace(origin, index=len(infos), images=end - position, kd_steps=steps,
                             epoch=origin.epoch if schedule.lr_per_epoch else len(infos),
                             reset_generator=any(r.reset_generator for r in marked) and position > 0,
                             reset_l0=any(r.reset_l0 for r in marked) and position > 0))
        position, given = end, given + steps
    return replace(schedule, rounds=infos)


class BudgetPlanner:
    """Sizes and stops a bank method's rounds under a `TimeBudget`, from the seconds they measured."""

    RESIZE_BELOW, RESIZE_ABOVE = 0.9, 2.0  # re-size when the fitting size is this far off (timings are noisy)
    GROWTH = 2.0  # later rounds grow at most this much at once: a fitted cost is trusted near measured sizes

    def __init__(self, budget: TimeBudget, smallest: int) -> None:
        self.budget = budget
        self.smallest = max(1, smallest)

    def opening(self, schedule: Schedule, costs: RoundCosts) -> Schedule:
        """The schedule with a calibration round first (the rest keep the planned size)."""
        costs.largest = schedule.rounds[0].images
        first = min(self.smallest, costs.largest)
        return relaid(schedule, [], costs.largest, first=first) if first < costs.largest else schedule

    @staticmethod
    def measured(costs: RoundCosts, info: RoundInfo, synth_s: float) -> None:
        """Record the round just run (`costs.kd_step_s` already holds the KD seconds per step so far)."""
        costs.measured(info.images, synth_s)
        if info.index == 0:
            costs.unit_s = synth_s + costs.kd_step_s * info.kd_steps

    def fitting_size(self, schedule: Schedule, done: int, costs: RoundCosts) -> int:
        """The images per round from round `done` on: the size at which `rounds_that_fit` rounds fit,
        taken after the calibration round, and again when the current size is 10% too large or half too
        small (growing at most `GROWTH` times at once)."""
        if done >= len(schedule.rounds):
            return 0
        current = schedule.rounds[done].images
        kd_per_image = schedule.kd_steps / max(1, schedule.images)
        fitting = self.budget.round_images(costs.per_image_s + kd_per_image * costs.kd_step_s,
                                           self.smallest, costs.largest, costs.per_round_s)
        if done == 1:  # from the calibration round alone: proportional, so a cost that errs high
            return fitting
        if not self.RESIZE_BELOW * current <= fitting <= self.RESIZE_ABOVE * current:
            return min(fitting, math.ceil(self.GROWTH * current))
        return current

    @staticmethod
    def resized(plan: Schedule, schedule: Schedule, done: int, size: int) -> Schedule:
        """`schedule` with rounds of `size` images from round `done` on, laid from `plan` (unchanged
        when they are that size already)."""
        if done >= len(schedule.rounds) or size in (0, schedule.rounds[done].images):
            return schedule
        return relaid(plan, schedule.rounds[:done], size)

    def stops_before(self, schedule: Schedule, index: int, spent: float, costs: RoundCosts) -> bool:
        """True when round `index` and the final KD scaled to the images it would bring overrun the budget."""
        final = costs.kd_step_s * TimeBudget.scaled_final_steps(schedule, index + 1)
        return spent + costs.round_seconds(schedule.rounds[index]) + final > self.budget.seconds
