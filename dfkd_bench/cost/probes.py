"""Calibration probes: the suite's own synthesis rounds and student steps, on untrained models at a few
sizes, timed on the user's device in its precision (the device synchronised before each clock reading)
and counted on the meta device; `calibrate` fits each phase's time model to them."""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from ..engine import MethodContext, SyntheticBank
from ..engine.distill import Distiller
from ..engine.flops import count_flops
from ..engine.precision import amp_dtype_for, device_name, precision_name
from ..engine.timing import synchronize
from ..models import create_model
from ..options import RunConfig
from ..schedule import RoundInfo
from .meta import embedding_shape_only, frozen, meta_method
from .rates import PHASES, Calibration, Point, fit
from .work import Work, measure

if TYPE_CHECKING:
    from ..resolve import ResolvedRun


@dataclass(frozen=True)
class Probe:
    """One piece of work to time: a method's synthesis round (or online generator phase) or a student
    step on a bank batch, on a dataset's default models, at the given hyper-parameters."""

    phase: str
    method: str
    dataset: str
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How the calibration's table names the probe."""
        sets = ",".join(f"{k}={v}" for k, v in self.overrides.items())
        return f"{self.phase}: {self.method} on {self.dataset} ({sets})"

    def config(self, device: torch.device, amp: str) -> RunConfig:
        """The probe as a run's options (the caller resolves it, without data)."""
        return RunConfig(method=self.method, dataset=self.dataset, device=str(device), amp=amp,
                         overrides={k: str(v) for k, v in self.overrides.items()})


# Small (digits), medium (CIFAR) and, on a GPU, large (ImageNet) work: bank and online synthesis, student steps.
CPU_PROBES: tuple[Probe, ...] = (
    Probe("synth", "nayer", "digits", {"synth_batch": 64, "g_steps": 3}),
    Probe("synth", "nayer", "digits", {"synth_batch": 256, "g_steps": 2}),
    Probe("synth", "deepinversion", "digits", {"synth_batch": 64, "iterations": 6}),
    Probe("synth", "dafl", "digits", {"kd_batch": 128, "g_steps": 3}),
    Probe("synth", "nayer", "cifar10", {"synth_batch": 16, "g_steps": 1}),
    Probe("synth", "deepinversion", "cifar10", {"synth_batch": 16, "iterations": 2}),
    Probe("kd", "nayer", "digits", {"kd_batch": 64}),
    Probe("kd", "nayer", "digits", {"kd_batch": 256}),
    Probe("kd", "muse", "digits", {"kd_batch": 256}),
    Probe("kd", "nayer", "cifar10", {"kd_batch": 16}),
)
GPU_PROBES: tuple[Probe, ...] = (
    Probe("synth", "nayer", "digits", {"synth_batch": 64, "g_steps": 5}),
    Probe("synth", "nayer", "cifar10", {"synth_batch": 256, "g_steps": 5}),
    Probe("synth", "deepinversion", "cifar10", {"synth_batch": 256, "iterations": 5}),
    Probe("synth", "dafl", "cifar10", {"kd_batch": 256, "g_steps": 5}),
    Probe("synth", "nayer", "imagenet", {"synth_batch": 64, "g_steps": 2}),
    Probe("kd", "nayer", "digits", {"kd_batch": 256}),
    Probe("kd", "nayer", "cifar10", {"kd_batch": 256}),
    Probe("kd", "muse", "cifar10", {"kd_batch": 512}),
    Probe("kd", "nayer", "imagenet", {"kd_batch": 64}),
)
SECONDS_PER_PROBE = 2.5  # timed calls repeat until this long (after one warm-up call)


def probes_for(device: torch.device) -> tuple[Probe, ...]:
    """The probes of a device type."""
    return GPU_PROBES if device.type == "cuda" else CPU_PROBES


def _timed(fn: Callable[[], Any], device: torch.device, seconds: float) -> float:
    """Seconds per call of `fn` after one warm-up call: calls repeat until `seconds` have passed."""
    fn()
    synchronize(device)
    start, calls = time.perf_counter(), 0
    while True:
        fn()
        calls += 1
        synchronize(device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / calls


class _Bench:
    """A probe's work, built twice: for real on the device (to time) and on the meta device (to count)."""

    def __init__(self, probe: Probe, resolved: "ResolvedRun", device: torch.device, amp: str) -> None:
        self.probe, self.device = probe, device
        self.resolved = res = resolved
        spec = res.spec
        teacher = frozen(create_model(res.teacher, spec.num_classes, spec.in_chans))
        student = create_model(res.student, spec.num_classes, spec.in_chans)
        ctx = MethodContext.create(teacher, student, spec, 0, res.resolutions, device, amp,
                                   label_embeddings_loader=lambda: embedding_shape_only(res))
        self.method = res.method_cls(ctx, res.run_hparams)
        self.round = RoundInfo(index=1, epoch=1, images=res.run_hparams.synth_batch, warmup=False, kd_steps=0, total=2)

    def work_fn(self, method: Any, real: bool) -> Callable[[], Any]:
        """The probe's call on `method`: a synthesis round (a generator phase for an online method) or
        one student step (on a bank of random images when real, as the engine samples them)."""
        hp, ctx, info = method.hp, method.ctx, self.round
        if self.probe.phase == "synth":
            if self.resolved.schedule.source == "online":
                return lambda: method.train_generator(info)
            return lambda: method.synthesize(info.images, info)
        optimizer = torch.optim.SGD(list(ctx.student.parameters()) + method.student_parameters(), lr=hp.lr,
                                    momentum=hp.momentum, weight_decay=hp.weight_decay)
        distiller = Distiller(ctx, method, optimizer, None)
        side = method.feed_size or self.resolved.resolutions[0]
        if real:
            bank = SyntheticBank(ctx.device)
            bank.add(torch.rand(max(512, hp.kd_batch), ctx.spec.in_chans, side, side, device=ctx.device),
                     torch.randint(0, ctx.spec.num_classes, (max(512, hp.kd_batch),), device=ctx.device))
            return lambda: distiller.train(bank, 1, hp.kd_batch)
        images = torch.empty(hp.kd_batch, ctx.spec.in_chans, side, side, device=ctx.device)
        labels = torch.zeros(hp.kd_batch, dtype=torch.long, device=ctx.device)
        return lambda: distiller.step([(images, labels)], hp.kd_batch)

    def point(self, seconds: float, with_overhead: bool = False) -> tuple[Point, float]:
        """The probe timed for about `seconds`, its work counted; `with_overhead`: also the FLOP counter's
        overhead per operator on it (one call under the counter against the plain calls), else 0."""
        real = self.work_fn(self.method, real=True)
        per_call = _timed(real, self.device, seconds)
        with meta_method(self.resolved) as meta:
            counted = self.work_fn(meta, real=False)
            counted()  # the state a later round starts from (BN momentum buffers, ...)
            work: Work = measure(counted)
        overhead = 0.0
        if with_overhead:
            synchronize(self.device)
            start = time.perf_counter()
            count_flops(real)
            synchronize(self.device)
            overhead = max(0.0, time.perf_counter() - start - per_call) / max(1, work.ops)
        self.method.close()
        return Point(self.probe.phase, self.probe.label, work.flops, work.ops, work.bytes, per_call), overhead


def calibrate(device: torch.device, amp: str, probes: Sequence[tuple[Probe, "ResolvedRun"]],
              seconds: float | None = None, on_probe: Callable[[Probe], None] | None = None) -> Calibration:
    """Time every probe (with its run resolved from `Probe.config`) on `device` in the precision `amp`
    gives there, each for about `seconds` (default SECONDS_PER_PROBE), and fit each phase's time model
    (the first probe also measures the FLOP counter's overhead per operator, which the first round of
    each work key pays in a real run); `on_probe` is called as each probe starts (a progress bar)."""
    seconds = SECONDS_PER_PROBE if seconds is None else seconds
    points, overhead = [], 0.0
    for index, (probe, resolved) in enumerate(probes):
        if on_probe:
            on_probe(probe)
        point, measured = _Bench(probe, resolved, device, amp).point(seconds, with_overhead=index == 0)
        points.append(point)
        overhead = overhead or measured
    phases = {phase: fit([p for p in points if p.phase == phase]) for phase in PHASES}
    return Calibration(device_name=device_name(device), device_type=device.type,
                       precision=precision_name(amp_dtype_for(amp, device)), threads=torch.get_num_threads(),
                       torch_version=torch.__version__,
                       created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                       phases=phases, counter_seconds_per_op=overhead, points=points)
