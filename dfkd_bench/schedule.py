"""What each round of a run does, decided before the run starts: images, warm-up, KD steps, resets.
This module is the whole schedule policy: `plan_schedule` is its one entry point, and what a method
may vary is declared on its hyper-parameters (`ScheduleKnobs`), never decided elsewhere.

Two budget protocols build it. `equal` (the suite's default) gives every method the same student
steps per synthetic image over the same image budget, with warm-up a capped fraction of the budget,
and, per dataset, the same student recipe (`EQUAL_RECIPES`). `paper` replays a method's reference
schedule as its code counts it: epochs of synthesis rounds, KD steps after each post-warm-up epoch,
generator resets in epochs, a per-epoch cosine. Each protocol has a bank form (rounds of synthesis,
the student on the banked images) and an online form (the student on fresh generator batches, as
many student steps as the online `budget` says). A smoke run always takes the equal protocol.
The engine hands each round's `RoundInfo` to the method (`synthesize(n, round)`,
`train_generator(round)`); methods read it and never count rounds themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ClassVar, Protocol, cast

from .errors import UserError

PROTOCOLS = ("equal", "paper")
# What fixes an online run's student steps (see `plan_schedule`): the bank methods' steps for the same
# images, one step per fresh batch, or the paper's own step count.
BUDGETS = ("images", "fresh", "steps")


@dataclass(frozen=True)
class RoundInfo:
    """One synthesis round as the schedule sees it (read-only for methods).

    `epoch` is the reference code's epoch the round belongs to (under the equal protocol every round
    is its own epoch); `reset_generator` asks generator methods to re-initialise their generator
    before synthesising (NAYER's g_life); `reset_l0` asks Fast to re-draw its meta-generator's first
    layers (Fast's reset_l0).
    """

    index: int
    epoch: int
    images: int
    warmup: bool
    kd_steps: int
    reset_generator: bool = False
    reset_l0: bool = False
    total: int = 1  # rounds in the whole run (the Schedule fills it in)

    @property
    def in_warmup(self) -> bool:
        """True during the rounds that synthesise without KD (adversarial terms stay off)."""
        return self.warmup

    @classmethod
    def standalone(cls, index: int = 0, images: int = 0) -> "RoundInfo":
        """A post-warm-up round outside any schedule (a method used on its own, in a notebook or a test)."""
        return cls(index=index, epoch=index, images=images, warmup=False, kd_steps=0, total=index + 1)


@dataclass(frozen=True)
class ReferenceSchedule:
    """How a method's reference code counts a run, for the `paper` protocol.

    An epoch makes `warmup_rounds_per_epoch` rounds during the `warmup_epochs` (synthesis only), then
    `rounds_per_epoch` rounds followed by `kd_steps_per_epoch` student steps (split over the rounds
    with `kd_every_round`, as Fast's loop does). The generator is
    re-initialised at the start of epoch ep > 0 when (ep - warmup) % g_life == 0 or ep % g_life == 0
    (NAYER's rule, in epochs); Fast re-draws its first layers at `reset_l0_epoch`. The student's
    cosine steps once per post-warm-up epoch. `reference_epochs` is the scripts' total, which places
    reset_l0 at the same fraction of an equal-protocol run. `source` names the script.
    """

    warmup_epochs: int
    warmup_rounds_per_epoch: int = 1
    rounds_per_epoch: int = 1
    kd_steps_per_epoch: int = 400
    g_life_epochs: int = 0
    reset_l0_epoch: int | None = None
    reference_epochs: int = 0
    kd_every_round: bool = False  # Fast: ep_steps // kd_steps rounds an epoch, each followed by its KD share
    source: str = ""
    note: str = ""  # a choice made in replaying it (e.g. which of a reference's scripts), kept in the row


@dataclass
class Schedule:
    """Every round of a run, the KD steps after the last one, and how the student's cosine steps."""

    protocol: str
    rounds: list[RoundInfo]
    final_kd_steps: int
    lr_per_epoch: bool = False  # paper: one cosine step per post-warm-up epoch; equal: one per KD step
    notes: dict[str, Any] = field(default_factory=dict)
    source: str = "bank"        # "bank": the student samples the banked images; "online": fresh images each step
    budget: str = "images"      # what fixed the run's length: the image budget, or the paper's own "steps"

    def __post_init__(self) -> None:
        total = len(self.rounds)
        self.rounds = [r if r.total == total else replace(r, total=total) for r in self.rounds]

    @property
    def images(self) -> int:
        return sum(r.images for r in self.rounds)

    @property
    def warmup_rounds(self) -> int:
        return sum(r.warmup for r in self.rounds)

    @property
    def kd_steps(self) -> int:
        """Student steps in all: after the rounds and on the final bank."""
        return sum(r.kd_steps for r in self.rounds) + self.final_kd_steps

    @property
    def lr_steps(self) -> int:
        """Length of the student's cosine: KD steps (equal) or post-warm-up epochs (paper)."""
        if self.lr_per_epoch:
            return len({r.epoch for r in self.rounds if not r.warmup})
        return self.kd_steps

    def reset_rounds(self) -> list[int]:
        return [r.index for r in self.rounds if r.reset_generator]

    def ends_epoch(self, index: int) -> bool:
        """True when round `index` is the last round of its epoch (every round, under the equal protocol)."""
        return index == len(self.rounds) - 1 or self.rounds[index + 1].epoch != self.rounds[index].epoch

    def steps_lr_after(self, index: int) -> bool:
        """True when the per-epoch cosine (`lr_per_epoch`) steps after round `index`: the end of a
        post-warm-up epoch, as the reference scripts step their scheduler once an epoch."""
        return self.lr_per_epoch and self.ends_epoch(index) and not self.rounds[index].warmup

    def evaluates_after(self, index: int, eval_every: int) -> bool:
        """True when the student is evaluated after round `index`: at the end of every `eval_every`-th
        epoch (the references evaluate once an epoch), except after the last round when final KD
        steps follow (the evaluation then comes after them)."""
        if not self.ends_epoch(index) or (self.rounds[index].epoch + 1) % eval_every:
            return False
        return not (index == len(self.rounds) - 1 and self.final_kd_steps > 0)

    def eval_points(self, eval_every: int) -> list[int]:
        """The rounds completed at each evaluation of an uninterrupted run (the last is the final one)."""
        points = [r.index + 1 for r in self.rounds if self.evaluates_after(r.index, eval_every)]
        return points if points and points[-1] == len(self.rounds) else [*points, len(self.rounds)]

    def student_lrs(self, lr: float, min_ratio: float) -> list[float]:
        """The student's learning rate at each post-warm-up epoch boundary: the rate the epoch's first
        KD step uses (per-epoch cosine), or the per-step cosine's rate there, and the rate at the end."""
        factor = cosine_factor(1.0, min_ratio, self.lr_steps)
        if self.lr_per_epoch:
            return [lr * factor(e) for e in range(self.lr_steps + 1)]
        done, rates = 0, []
        for r in self.rounds:
            if r.kd_steps and not r.warmup:
                rates.append(lr * factor(done))
                done += r.kd_steps
        return [*rates, lr * factor(self.kd_steps)]

    def reset_l0_rounds(self) -> list[int]:
        return [r.index for r in self.rounds if r.reset_l0]

    def protocol_notes(self) -> str:
        """What the row records of the protocol: the reference script replayed and any stated choice."""
        return "; ".join(str(self.notes[k]) for k in ("source", "note") if self.notes.get(k))

    def describe(self) -> str:
        """One paragraph a user reads before a long run (`run --dry-run`)."""
        per_round = sorted({r.kd_steps for r in self.rounds if r.kd_steps})
        epochs = len({r.epoch for r in self.rounds})
        resets, l0 = self.reset_rounds(), self.reset_l0_rounds()
        shown = ", ".join(map(str, resets[:8])) + (" ..." if len(resets) > 8 else "")
        return (f"protocol {self.protocol}: {len(self.rounds)} rounds in {epochs} epochs, "
                f"{self.images} images ({self.warmup_rounds} warm-up rounds); KD {self.kd_steps} steps "
                f"({'/'.join(map(str, per_round)) or 0} after each KD round, {self.final_kd_steps} on the final "
                f"bank); student cosine over {self.lr_steps} {'epochs' if self.lr_per_epoch else 'steps'}; "
                f"generator resets {len(resets)}{f' (rounds {shown})' if resets else ''}; "
                f"reset_l0 {('at round ' + str(l0[0])) if l0 else 'none'}")


def cosine_factor(start: float, end: float, steps: int) -> Callable[[int], float]:
    """A cosine from `start` down to `end` over `steps` (flat at `end` after): the student's learning-rate
    factor, per KD step (equal) or per post-warm-up epoch (paper)."""
    def factor(step: int) -> float:
        progress = min(step, steps) / max(1, steps)
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def spread(total: int, parts: int) -> list[int]:
    """`total` split into `parts` near-equal integers (the first ones get the remainder)."""
    parts = max(1, parts)
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def equal_schedule(n_total: int, synth_batch: int, kd_per_image: float, warmup_rounds: int,
                   warmup_fraction: float, final_kd_steps: int, g_life: int = 0,
                   reset_l0_fraction: float | None = None) -> Schedule:
    """The equal protocol: ceil(n / synth_batch) rounds; warm-up = min(cap, fraction of the rounds),
    always leaving a KD round; round(kd_per_image * n) student steps spread over the KD rounds;
    the generator re-initialised every g_life rounds; reset_l0 at the reference's fraction of the run."""
    rounds = max(1, math.ceil(n_total / synth_batch))
    warmup = max(0, min(warmup_rounds, math.floor(warmup_fraction * rounds), rounds - 1))
    kd = spread(round(kd_per_image * n_total), rounds - warmup)
    l0_round = round(reset_l0_fraction * rounds) if reset_l0_fraction is not None else None
    infos = []
    for r in range(rounds):
        images = min(synth_batch, n_total - r * synth_batch)
        infos.append(RoundInfo(index=r, epoch=r, images=images, warmup=r < warmup,
                               kd_steps=0 if r < warmup else kd[r - warmup],
                               reset_generator=g_life > 0 and r > 0 and r % g_life == 0,
                               reset_l0=l0_round is not None and 0 < r == l0_round))
    return Schedule("equal", infos, final_kd_steps)


def paper_schedule(n_total: int, synth_batch: int, ref: ReferenceSchedule) -> Schedule:
    """The paper protocol: the reference's epochs, with the number of post-warm-up epochs chosen so the
    images match the ratio (NAYER100/200/300 are ratios 3.2/4.8/6.4 on CIFAR-100)."""
    warm_images = ref.warmup_epochs * ref.warmup_rounds_per_epoch * synth_batch
    epochs = max(1, round((n_total - warm_images) / (ref.rounds_per_epoch * synth_batch)))
    infos: list[RoundInfo] = []
    for ep in range(ref.warmup_epochs + epochs):
        warm = ep < ref.warmup_epochs
        loops = ref.warmup_rounds_per_epoch if warm else ref.rounds_per_epoch
        life = ref.g_life_epochs
        reset = life > 0 and ep > 0 and ((ep - ref.warmup_epochs) % life == 0 or ep % life == 0)
        shares = spread(ref.kd_steps_per_epoch, loops) if ref.kd_every_round else \
            [0] * (loops - 1) + [ref.kd_steps_per_epoch]
        for loop in range(loops):
            infos.append(RoundInfo(index=len(infos), epoch=ep, images=synth_batch, warmup=warm,
                                   kd_steps=0 if warm else shares[loop],
                                   reset_generator=reset and loop == 0,
                                   reset_l0=ref.reset_l0_epoch is not None and ep == ref.reset_l0_epoch
                                   and loop == 0))
    return Schedule("paper", infos, 0, lr_per_epoch=True,
                    notes={"source": ref.source, "note": ref.note, "epochs": epochs})


def online_schedule(student_steps: int, batches: int, batch: int, round_steps: int, budget: str = "images") -> Schedule:
    """Online methods: `student_steps` steps on `batches` fresh batches of `batch` generator images, each
    batch trained on for its even share of the steps (at most one batch a step). A round holds whole
    batches, about `round_steps` steps, and ends with an evaluation and a checkpoint, so a resumed run
    starts with a fresh draw as the uninterrupted one does. `images` counts the fresh images a round
    draws (`online_draws` places them). No warm-up, no bank."""
    student_steps = max(1, student_steps)
    batches = min(max(1, batches), student_steps)
    shares = spread(student_steps, batches)
    per_round = max(1, round(max(1, round_steps) * batches / student_steps))
    infos = [RoundInfo(index=r, epoch=r, images=len(shares[j:j + per_round]) * batch, warmup=False,
                       kd_steps=sum(shares[j:j + per_round]))
             for r, j in enumerate(range(0, batches, per_round))]
    return Schedule("equal", infos, 0, source="online", budget=budget)


def online_paper_schedule(n_total: int, ref: ReferenceSchedule, batch: int) -> Schedule:
    """Online methods under the paper protocol: the reference's epochs, one round each of
    `kd_steps_per_epoch` student steps, every step on a fresh batch of `batch` generator images (as
    DataFree's `train()` samples once a KD step); an evaluation and one cosine step per epoch. As for bank
    methods the ratio picks how many epochs (DataFree's 200 x 400 x 256 images are ratio 409.6 on CIFAR)."""
    steps = ref.kd_steps_per_epoch
    epochs = max(1, round(n_total / (steps * batch)))
    infos = [RoundInfo(index=ep, epoch=ep, images=steps * batch, warmup=False, kd_steps=steps)
             for ep in range(epochs)]
    return Schedule("paper", infos, 0, lr_per_epoch=True, source="online", budget="steps",
                    notes={"source": ref.source, "note": ref.note, "epochs": epochs})


def online_draws(steps_done: int, batches: int, steps: int) -> int:
    """Fresh batches drawn in the first `steps_done` of a round's `steps` steps that draws `batches`:
    ceil(steps_done * batches / steps), so step i draws when the count grows from i to i + 1 (step 0
    always does)."""
    return -(-steps_done * batches // steps)


# ----- the policy --------------------------------------------------------------------------------------

# The equal protocol's shared student recipe per dataset: every method distils with the same KD rate
# (student steps per synthetic image), batch, learning rate and its cosine's floor, weight decay and
# temperature. (The digits presets already share one.) Under `--protocol paper` each method keeps its
# reference's recipe.
EQUAL_RECIPES: dict[str, dict[str, Any]] = {
    "cifar10": dict(kd_per_image=1.0, kd_batch=256, lr=0.2, lr_min_ratio=1e-3, weight_decay=1e-4, temperature=20.0),
    "cifar100": dict(kd_per_image=1.0, kd_batch=256, lr=0.2, lr_min_ratio=1e-3, weight_decay=1e-4, temperature=20.0),
    "tinyimagenet": dict(kd_per_image=1.0, kd_batch=256, lr=0.1, lr_min_ratio=1e-3, weight_decay=1e-4,
                         temperature=20.0),
    "imagenet": dict(kd_per_image=1.0, kd_batch=128, lr=0.1, lr_min_ratio=1e-3, weight_decay=1e-4, temperature=5.0),
}


class ScheduleKnobs(Protocol):
    """What the policy reads of a method's hyper-parameters (`MethodHparams` and its subclasses): the
    shared student recipe, and what a method declares: where its student's images come from
    (`SAMPLE_SOURCE`) and which generator resets it takes under the equal protocol (`generator_resets`)."""

    SAMPLE_SOURCE: ClassVar[str]
    synth_batch: int
    kd_steps: int
    kd_batch: int
    kd_per_image: float
    warmup_rounds: int
    warmup_fraction: float
    final_kd_steps: int

    def generator_resets(self) -> tuple[int, bool]:
        """(g_life in rounds, reset_l0 on) under the equal protocol."""
        ...


class OnlineKnobs(ScheduleKnobs, Protocol):
    """An online method's knobs (`OnlineHparams`): student steps per round, and its step `budget`."""

    round_steps: int
    budget: str
    paper_steps: int


def protocol_recipe(protocol: str, preset_names: tuple[str, ...]) -> dict[str, Any]:
    """The student recipe a protocol imposes over a method's preset: the equal protocol's shared one
    for the first of the dataset's preset names that has one; none under `paper`."""
    if protocol != "equal":
        return {}
    return next((EQUAL_RECIPES[n] for n in preset_names if n in EQUAL_RECIPES), {})


def kd_rate(hp: ScheduleKnobs) -> float:
    """Student steps per synthetic image: `kd_per_image`, else kd_steps per synth_batch images."""
    return hp.kd_per_image or hp.kd_steps / hp.synth_batch


def plan_schedule(protocol: str, hp: ScheduleKnobs, n_total: int, reference: ReferenceSchedule | None = None,
                  smoke: bool = False) -> Schedule:
    """The rounds of a run of `n_total` synthetic images under `protocol` for a method with these
    hyper-parameters; `reference` is its reference schedule for the dataset (needed by `paper`; the
    equal protocol places reset_l0 at its fraction of the run). A smoke run takes the equal protocol."""
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol {protocol!r}; choose from: {', '.join(PROTOCOLS)}")
    online = hp.SAMPLE_SOURCE == "online"
    if protocol == "paper" and not smoke:
        if reference is None:
            raise UserError("--protocol paper: the method has no reference schedule for this dataset")
        return online_paper_schedule(n_total, reference, hp.kd_batch) if online else \
            paper_schedule(n_total, hp.synth_batch, reference)
    return _online_equal(cast(OnlineKnobs, hp), n_total) if online else _bank_equal(hp, n_total, reference)


def _bank_equal(hp: ScheduleKnobs, n_total: int, reference: ReferenceSchedule | None) -> Schedule:
    """The equal protocol's rounds for a bank method: the shared KD rate, a capped warm-up, the
    method's generator resets, reset_l0 (if on) at the reference's fraction of the run."""
    g_life, reset_l0 = hp.generator_resets()
    fraction = None
    if reset_l0 and reference is not None and reference.reset_l0_epoch and reference.reference_epochs:
        fraction = reference.reset_l0_epoch / reference.reference_epochs
    return equal_schedule(n_total, hp.synth_batch, kd_rate(hp), hp.warmup_rounds, hp.warmup_fraction,
                          hp.final_kd_steps, g_life, fraction)


def _online_equal(hp: OnlineKnobs, n_total: int) -> Schedule:
    """The equal protocol for an online method: round(n / kd_batch) fresh batches, and student steps by
    its `budget`: "images", as many as a bank method takes on the same images (the shared rate, plus
    final_kd_steps); "fresh", one per batch; "steps", the paper's `paper_steps`, each on a fresh batch."""
    batches = max(1, round(n_total / hp.kd_batch))
    if hp.budget == "steps":
        batches = steps = hp.paper_steps
    elif hp.budget == "fresh":
        steps = batches
    else:
        steps = max(batches, round(kd_rate(hp) * n_total) + hp.final_kd_steps)
    return online_schedule(steps, batches, hp.kd_batch, hp.round_steps, hp.budget)
