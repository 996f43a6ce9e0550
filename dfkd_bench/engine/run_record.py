"""What a run records: its progress, which the checkpoint holds, and the outcome it ends with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .bank import SyntheticBank
from .budget import RoundCosts
from ..schedule import Schedule


@dataclass
class CurvePoint:
    """One evaluation: after `round` rounds and `images` banked images, `elapsed_s` of synthesis+KD."""

    round: int
    images: int
    elapsed_s: float
    student_acc: float


@dataclass
class RunOutcome:
    """What a finished run measured."""

    student_acc: float
    n_synthetic: int
    seconds: dict[str, float]
    curve: list[CurvePoint] = field(default_factory=list)
    bank: SyntheticBank | None = None
    tflop: dict[str, float] = field(default_factory=dict)  # forward+backward TFLOP per phase (synth, kd)
    kd_steps: int = 0
    rounds: int = 0
    round_images: int = 0            # images per round at the end (a budget may have re-sized them)
    over_budget: bool = False        # a budgeted run that ended past budget + tolerance: no accuracy
    unit_s: float | None = None      # an over-budget run's smallest unit of work, when that did not fit
    tolerance_s: float | None = None


RoundCallback = Callable[[int, int, "RunState"], None]


@dataclass
class RunState:
    """Mutable progress of a run, what the checkpoint holds besides module states."""

    next_round: int = 0
    curve: list[CurvePoint] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    last_loss: float = float("nan")
    images_seen: int = 0  # online methods: fresh images the student has trained on
    stopped_at: int | None = None  # the round a time budget stopped the run before (None: not stopped)
    kd_steps_done: int = 0
    schedule: Schedule | None = None  # the rounds as a time budget re-sized them (None: as planned)
    costs: RoundCosts = field(default_factory=RoundCosts)
    unit_over_budget: bool = False  # the smallest unit of work did not fit the budget
