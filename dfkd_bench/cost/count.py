"""Count a run's work without computing it: one synthesis round per work key and one student step per
batch shape, run on the meta device under the FLOP counter, multiplied by the schedule as the engine
adds them up (`engine.trainer`), so the totals equal the `synth_tflop`/`kd_tflop` a real run records.

A synthesis round repeats one step `g_steps` (or `iterations`) times, and its work is affine in that
count; a long round is counted at two small counts and extrapolated (`STEP_FIELDS`). Method state that
shapes later rounds (a BN loss's momentum buffers, CMI's feature bank) is carried as the real run
carries it: the rounds between new keys run (uncounted, at their smallest step count) until a round
of their key leaves the shapes of the state as they were (at most `REPLAY_ROUNDS`), and a counted
round's extra runs start again from the state before it. One process: a data-parallel run's ranks
split each batch, and their summed work is the same wherever it is linear in the batch (every
per-image operator; CMI's contrastive similarities are not)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields, replace
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Hashable

import torch

from ..engine import Method
from ..engine.distill import Distiller
from ..options import stable_hash
from ..schedule import RoundInfo
from .meta import META, meta_method
from .work import Work, measure

if TYPE_CHECKING:
    from ..resolve import ResolvedRun

# Hyper-parameters that set how many times a synthesis round (or generator phase) repeats its step, with
# the smallest count at which extrapolating from it is exact (the first step may differ from the rest).
STEP_FIELDS: dict[str, int] = {"g_steps": 1, "iterations": 2, "lowres_iterations": 1}
REPLAY_ROUNDS = 64  # rounds replayed (uncounted) to carry method state to a later new key; state saturates sooner


@dataclass
class PhaseCount:
    """A phase's work: each distinct piece (by work key) with its Work and how often the run does it."""

    pieces: dict[Hashable, tuple[Work, float]] = field(default_factory=dict)

    def add(self, key: Hashable, work: Work, times: float) -> None:
        """`times` more of `key`'s work."""
        known = self.pieces.get(key, (work, 0.0))[1]
        self.pieces[key] = (work, known + times)

    @property
    def total(self) -> Work:
        """The phase's whole work."""
        out = Work()
        for work, times in self.pieces.values():
            out = out + work.times(times)
        return out

    @property
    def tflop(self) -> float:
        """The phase's FLOPs in TFLOP, as runs.csv records them."""
        return self.total.flops / 1e12


@dataclass
class RunCount:
    """A run's counted work per phase ("synth", "kd"), as a real run with the same settings records it."""

    run_id: str
    synth: PhaseCount
    kd: PhaseCount
    synth_recorded: bool = True  # False under a time budget: a real run does not count synthesis there


_COUNTED: dict[str, RunCount] = {}  # by the run's identity less its seed (the seed changes no shape)


def count_run(resolved: "ResolvedRun") -> RunCount:
    """The run's synthesis and student-step work, counted on the meta device (no data, no compute);
    runs that differ only in their seed are counted once."""
    identity = {k: v for k, v in resolved.identity().items() if k != "seed"}
    key = stable_hash({**identity, "halvings": resolved.halvings}, 16)
    if key not in _COUNTED:
        with meta_method(resolved) as method:
            counter = _Counter(resolved, method)
            counter.count()
        _COUNTED[key] = RunCount(resolved.run_id, counter.synth, counter.kd,
                                 synth_recorded=not resolved.config.time_budget)
    return replace(_COUNTED[key], run_id=resolved.run_id)


def step_counts(hp: Any) -> dict[str, int]:
    """The run's value of each STEP_FIELDS hyper-parameter it has."""
    names = {f.name for f in fields(hp)}
    return {name: int(getattr(hp, name)) for name in STEP_FIELDS if name in names}


class _Counter:
    """Walks a run's schedule as the trainer does, measuring each new piece of work once."""

    def __init__(self, resolved: "ResolvedRun", method: Method) -> None:
        self.resolved, self.method = resolved, method
        self.schedule = resolved.schedule
        self.hp = method.hp
        self.synth, self.kd = PhaseCount(), PhaseCount()

    def count(self) -> None:
        """Fill `synth` and `kd` from the schedule."""
        if self.schedule.source == "online":
            self._online()
        else:
            self._bank()

    # ----- synthesis ---------------------------------------------------------------------------------
    def _bank(self) -> None:
        """Bank rounds: a round's synthesis (work key `method.work_key`), then the student's steps, after
        each round and on the final bank, on bank batches of kd_batch."""
        rounds = [_plain(r) for r in self.schedule.rounds]
        keys = [self.method.work_key(info.images, info) for info in rounds]
        first: dict[Hashable, int] = {}
        for index, key in enumerate(keys):
            first.setdefault(key, index)
        works: dict[Hashable, Work] = {}
        settled: set[Hashable] = set()  # keys whose rounds no longer change the shapes of the method's state
        replayed = 0
        for index, info in enumerate(rounds[:max(first.values()) + 1]):
            run_round = partial(self.method.synthesize, info.images, info)
            if first[keys[index]] == index:
                works[keys[index]] = self._round_work(run_round)
            elif keys[index] not in settled and replayed < REPLAY_ROUNDS:
                before = state_shapes(self.method.state_dict())
                self._replay(run_round)
                replayed += 1
                if state_shapes(self.method.state_dict()) == before:
                    settled.add(keys[index])
        for key in keys:
            self.synth.add(key, works[key], 1)
        self._student_steps(sum(r.kd_steps for r in rounds) + self.schedule.final_kd_steps, self._bank_groups())

    def _online(self) -> None:
        """Online rounds: a generator phase before every `student_steps_per_generator_step` student
        steps, a fresh draw of kd_batch images per batch of the round, a student step on each."""
        rounds, batch = [_plain(r) for r in self.schedule.rounds], self.hp.kd_batch
        total = sum(r.kd_steps for r in rounds)
        phases = math.ceil(total / self.method.student_steps_per_generator_step)
        self.synth.add(("train_generator",), self._round_work(partial(self.method.train_generator, rounds[0])), phases)
        self.synth.add(("draw", batch), measure(partial(self.method.draw, batch)),
                       sum(r.images // batch for r in rounds))
        side = self.method.round_resolution(rounds[0])
        self._student_steps(total, [(side, 1.0)])

    def _round_work(self, run_round: Callable[[], Any]) -> Work:
        """One round's work at the run's step counts: measured directly when they are small, else at the
        smallest counts and once more per step-count field, and extrapolated (the work is affine in each).
        Every extra run starts from the state before the first; the last run's state is kept."""
        target = step_counts(self.hp)
        base = {name: min(value, STEP_FIELDS[name]) for name, value in target.items()}
        varied = [name for name in target if target[name] > base[name]]
        if not varied:
            return measure(run_round)
        snapshot = copy.deepcopy(self.method.state_dict())
        points = [base, *({**base, name: base[name] + 1} for name in varied)]
        works = []
        for i, point in enumerate(points):
            if i:
                self.method.load_state_dict(copy.deepcopy(snapshot))
            works.append(self._with_steps(point, lambda: measure(run_round)))
        work = works[0]
        for name, bumped in zip(varied, works[1:]):
            work = work + (bumped - works[0]).times(target[name] - base[name])
        return work

    def _replay(self, run_round: Callable[[], Any]) -> None:
        """Run a round uncounted at the smallest step counts: only its effect on the method's state matters."""
        base = {name: min(value, STEP_FIELDS[name]) for name, value in step_counts(self.hp).items()}
        self._with_steps(base, lambda: measure(run_round))

    def _with_steps(self, counts: dict[str, int], fn: Callable[[], Any]) -> Any:
        """Call `fn` with the method's step-count hyper-parameters set to `counts`, then restore them."""
        original = self.method.hp
        self.method.hp = replace(original, **counts)
        try:
            return fn()
        finally:
            self.method.hp = original

    # ----- student steps -----------------------------------------------------------------------------
    def _student_steps(self, steps: int, sides: list[tuple[int, float]]) -> None:
        """`steps` student steps on batches of kd_batch images, each of one side in `sides` (side, share
        of the steps): one side, except for a bank of several resolutions fed as generated."""
        method, ctx, hp, spec = self.method, self.method.ctx, self.hp, self.resolved.spec
        optimizer = torch.optim.SGD(list(ctx.student.parameters()) + method.student_parameters(), lr=hp.lr,
                                    momentum=hp.momentum, weight_decay=hp.weight_decay)
        distiller = Distiller(ctx, method, optimizer, None)
        for side, share in sides:
            images = torch.empty(hp.kd_batch, spec.in_chans, side, side, device=META)
            labels = torch.zeros(hp.kd_batch, dtype=torch.long, device=META)
            work = measure(lambda: distiller.step([(images, labels)], hp.kd_batch))
            self.kd.add(tuple(images.shape), work, steps * share)

    def _bank_groups(self) -> list[tuple[int, float]]:
        """The side of a bank batch as `SyntheticBank.sample` gives it: the feed size, or the one stored
        resolution. A bank of several resolutions fed as generated gives one group per resolution, of
        random sizes: counted here as whole batches at each resolution's share of the stored images
        (the expected work: a step's work is linear in its images)."""
        method = self.method
        if method.feed_size is not None or len(self.resolved.resolutions) == 1:
            return [(method.feed_size or self.resolved.resolutions[0], 1.0)]
        stored: dict[int, int] = {}
        for info in self.schedule.rounds:
            side = method.round_resolution(info)
            stored[side] = stored.get(side, 0) + info.images
        total = sum(stored.values())
        return [(side, n / total) for side, n in stored.items()]


def state_shapes(state: Any) -> Any:
    """The shapes of every tensor in a (nested) state dict: what a later round's work can depend on (on
    the meta device no value can steer it)."""
    if isinstance(state, torch.Tensor):
        return tuple(state.shape)
    if isinstance(state, dict):
        return tuple((k, state_shapes(v)) for k, v in state.items())
    if isinstance(state, (list, tuple)):
        return tuple(state_shapes(v) for v in state)
    return state if isinstance(state, (int, float, str, bool, type(None))) else type(state).__name__


def _plain(info: RoundInfo) -> RoundInfo:
    """The round without its generator resets: re-initialising a generator changes no shape and no FLOP,
    and on the meta device would build a module on the CPU first."""
    return replace(info, reset_generator=False, reset_l0=False)
