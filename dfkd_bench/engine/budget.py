"""Equal-time runs: stop a run's rounds when synthesis + KD wall-clock reaches a budget.

The check is made at round boundaries, before a round starts: the run stops when the seconds spent
so far plus the projected final KD phase reach the budget. The final KD phase is scaled to the
images actually made (the same student steps per image as the planned run), so a stopped run ends
within about one round of its budget with a student trained at the schedule's usual rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from ..schedule import Schedule


@dataclass(frozen=True)
class TimeBudget:
    """`seconds` of synthesis + KD for a whole run (evaluation is not counted)."""

    seconds: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ValueError(f"a time budget must be a positive number of seconds, got {self.seconds}")

    @staticmethod
    def scaled_final_steps(schedule: Schedule, rounds_done: int) -> int:
        """The final KD steps in proportion to the images made in the first `rounds_done` rounds."""
        made = sum(r.images for r in schedule.rounds[:rounds_done])
        return round(schedule.final_kd_steps * made / max(1, schedule.images))

    def exhausted(self, schedule: Schedule, rounds_done: int, synth_s: float, kd_s: float) -> bool:
        """True when the seconds spent plus the projected (scaled) final KD reach the budget.

        The final KD's seconds are projected from the KD seconds per step measured so far (none
        before the first KD round, when the projection is zero)."""
        steps_done = sum(r.kd_steps for r in schedule.rounds[:rounds_done])
        per_step = kd_s / steps_done if steps_done else 0.0
        projected = per_step * self.scaled_final_steps(schedule, rounds_done)
        return synth_s + kd_s + projected >= self.seconds

