"""A run's FLOP columns: counting each round's and step's work once per key gives the same totals as
counting every round and step, for bank methods (MUSE: warm-up and several resolutions; DeepInversion:
a first round without the student term) and an online one (DAFL); MUSE fed natively at 16 px against
NAYER at 32; and the counter's own overhead taken out of the synthesis seconds."""

from __future__ import annotations

import itertools
from dataclasses import fields
from typing import ContextManager, Hashable

import pytest

from dfkd_bench.config import resolve_hparams
from dfkd_bench.data import get_dataset
from dfkd_bench.engine import DistillationRun
from dfkd_bench.engine.flop_overhead import CounterOverhead
from dfkd_bench.engine.flops import FlopMeter
from dfkd_bench.plugins import METHODS
from dfkd_bench.schedule import plan_schedule
from method_helpers import make_ctx

SPEC = get_dataset("digits")
SMALL = {"synth_batch": "8", "kd_batch": "8", "kd_steps": "2", "g_steps": "2", "iterations": "3",
         "lowres_iterations": "1", "warmup_rounds": "1", "final_kd_steps": "2", "noise_dim": "32",
         "round_steps": "3", "s_steps": "2"}


class CountEveryTime(FlopMeter):
    """A meter that counts every piece of work afresh (each call under a key of its own): the reference
    the keys must match."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = itertools.count()

    def measure(self, phase: str, key: Hashable) -> ContextManager[None]:
        return super().measure(phase, (key, next(self.calls)))


def small_run(name: str, resolutions: tuple[int, ...] = (32,), **overrides: str) -> DistillationRun:
    """A run of 40 digits images with SMALL settings (those the method has) and `overrides`."""
    cls = METHODS.get(name)
    known = {f.name for f in fields(cls.Hparams)}
    ctx = make_ctx(resolutions)
    values = {**{k: v for k, v in SMALL.items() if k in known}, **overrides}
    method = cls(ctx, resolve_hparams(cls.Hparams, "digits", values, name))
    return DistillationRun(method, ctx, SPEC.open().test_split().subset(10), plan_schedule("equal", method.hp, 40))


def totals(name: str, meter: FlopMeter, resolutions: tuple[int, ...], **overrides: str) -> dict[str, int]:
    run = small_run(name, resolutions, **overrides)
    method = run.method
    run.flops = run.distiller.flops = meter
    outcome = run.run()
    method.close()
    assert outcome.tflop == {"synth": meter.totals["synth"] / 1e12, "kd": meter.totals["kd"] / 1e12}
    return dict(meter.totals)


@pytest.mark.parametrize("name, resolutions", [("deepinversion", (32,)), ("muse", (16, 32)), ("dafl", (32,))])
def test_counting_once_per_key_matches_counting_every_time(name: str, resolutions: tuple[int, ...]) -> None:
    cached, every = totals(name, FlopMeter(), resolutions), totals(name, CountEveryTime(), resolutions)
    assert cached == every and cached["synth"] > 0 and cached["kd"] > 0


def test_muse_fed_natively_at_16_px_spends_fewer_synthesis_flops_than_nayer_at_32() -> None:
    """Per synthetic image (both runs make the same 40): MUSE's models see its 16 px images as generated
    (feed=native), a quarter of NAYER's pixels; its CAM term adds a second teacher pass, so the saving is
    about 3x, not 4x. Under the default feed=upsample the models see 32 px and the saving is the
    generator's alone (see benchmarks/README.md)."""
    nayer = totals("nayer", FlopMeter(), (32,))["synth"]
    muse_native = totals("muse", FlopMeter(), (16,), feed="native")["synth"]
    muse_upsampled = totals("muse", FlopMeter(), (16,))["synth"]
    assert nayer > 2.5 * muse_native
    assert muse_upsampled > muse_native


def test_the_counters_overhead_comes_off_the_synthesis_seconds() -> None:
    """A key's first round runs under the counter; when the same key next runs plain, the difference
    between the two rounds' seconds is taken back out of `synth` (a slower plain round gives nothing back)."""
    overhead, room = CounterOverhead(), 100.0
    assert overhead.discount(("k",), 3.0, counted=True, slack=room) == 0.0
    assert overhead.discount(("k",), 1.0, counted=False, slack=room) == 2.0
    assert overhead.discount(("k",), 0.5, counted=False, slack=room) == 0.0  # only the first plain round settles it
    assert overhead.discount(("j",), 1.0, counted=True, slack=room) == 0.0
    assert overhead.discount(("j",), 2.0, counted=False, slack=room) == 0.0
    assert overhead.counted_seconds == {}


def test_the_discount_never_takes_elapsed_time_below_the_curve() -> None:
    """A counted round much slower than the plain one gives back only what keeps the curve's elapsed
    seconds from running backwards (the points already recorded, and logged live, stay as they are)."""
    overhead = CounterOverhead()
    overhead.discount(("k",), 3.0, counted=True, slack=0.5)
    assert overhead.discount(("k",), 1.0, counted=False, slack=0.5) == 0.5  # overhead 2 s, but only 0.5 s of slack


def test_a_run_discounts_the_counters_overhead_once_per_key() -> None:
    """Through a run: each work key's first round runs counted and its next plain round settles it, so
    only the keys that ran once are left with counted seconds."""
    run = small_run("fast")
    run.run()
    keys = [run.method.work_key(r.images, r) for r in run.schedule.rounds]
    assert len(set(keys)) < len(keys)  # some key runs twice
    assert set(run.counter_overhead.counted_seconds) == {k for k in keys if keys.count(k) == 1}
    run.method.close()
