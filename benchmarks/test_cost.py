"""Cost of every method's synthesis round and KD step, in seconds and in FLOPs (pytest-benchmark; not
part of the test suite).

Run: `.venv/bin/python -m pytest benchmarks/test_cost.py -n 0 --benchmark-enable [--device cuda]`. Digits
runs everywhere; CIFAR (32 px) and ImageNet (112 and 224 px) settings run on CUDA only. Each benchmark
counts the FLOPs of one call (engine.flops.count_flops, which doubles as the warm-up), times the call
with the device synchronised, and records in extra_info: images per second, FLOPs per synthetic image,
the achieved TFLOP/s and its fraction of a matmul peak measured on the spot in the path's dtype.

A round is the method's preset for the setting with its optimisation steps capped at STEP_CAP (the
preset's count is recorded), on CPU_IMAGES images on the CPU or the preset's synth_batch on CUDA.
Online methods: one generator phase (`train_generator`: g_steps steps on kd_batch images each) and
one draw of kd_batch images, the images the student sees. Models are untrained: cost does not
depend on the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Callable

import pytest
import torch

from dfkd_bench.config import resolve_hparams
from dfkd_bench.data import get_dataset
from dfkd_bench.engine import Method, MethodContext, RoundInfo, SyntheticBank, SyntheticBatch
from dfkd_bench.engine.distill import Distiller
from dfkd_bench.engine.flops import achieved_rate, count_flops, measured_peak_tflops
from dfkd_bench.engine.timing import synchronize
from dfkd_bench.errors import UserError
from dfkd_bench.label_embeddings import load_label_embeddings
from dfkd_bench.models import create_model
from dfkd_bench.plugins import METHODS

STEP_CAP = 10
CPU_IMAGES = 64
ROUNDS = 3
PEAK_SIZE = {"cuda": 8192, "cpu": 1024}


@dataclass(frozen=True)
class Setting:
    """A dataset spec with its teacher/student pair; `resolution` None: each method's default."""

    dataset: str
    teacher: str
    student: str
    resolution: int | None = None
    cuda_only: bool = True


SETTINGS = {
    "digits": Setting("digits", "digits_resnet8", "digits_resnet8_slim", cuda_only=False),
    "cifar": Setting("cifar10", "resnet34", "resnet18"),
    "imagenet112": Setting("imagenet", "tv_resnet34", "tv_resnet18", 112),
    "imagenet224": Setting("imagenet", "tv_resnet34", "tv_resnet18", 224),
}

# MUSE at half resolution against NAYER at full: (setting, method, resolution, MUSE feed).
# feed=upsample (MUSE's default) shows teacher and student the full size; feed=native the half size.
HALF_VS_FULL = {
    "digits-muse16": ("digits", "muse", 16, "upsample"),
    "digits-muse16-native": ("digits", "muse", 16, "native"),
    "digits-nayer32": ("digits", "nayer", 32, None),
    "imagenet-muse112": ("imagenet224", "muse", 112, "upsample"),
    "imagenet-muse112-native": ("imagenet224", "muse", 112, "native"),
    "imagenet-nayer224": ("imagenet224", "nayer", 224, None),
}


@pytest.fixture(scope="module")
def peak_tflops(device: torch.device) -> Callable[[torch.dtype], float]:
    """The matmul peak in a dtype on the benchmark device, measured once per module and dtype."""
    return cache(lambda dtype: measured_peak_tflops(device, dtype, size=PEAK_SIZE.get(device.type, 1024)))


def _need(setting: Setting, device: torch.device) -> None:
    if setting.cuda_only and device.type != "cuda":
        pytest.skip(f"{setting.dataset} at {setting.resolution or 'default'} px runs on CUDA only (--device cuda)")


def _capped_overrides(cls: type[Method], presets: tuple[str, ...], name: str) -> dict[str, Any]:
    """The preset's step count capped at STEP_CAP (DeepInversion's low-resolution share scaled with it)."""
    hp = resolve_hparams(cls.Hparams, presets, {}, name)
    field = "iterations" if hasattr(hp, "iterations") else "g_steps"
    steps = getattr(hp, field)
    overrides: dict[str, Any] = {field: min(steps, STEP_CAP)}
    if getattr(hp, "lowres_iterations", 0):
        overrides["lowres_iterations"] = round(hp.lowres_iterations * overrides[field] / steps)
    return overrides


def build(setting: Setting, device: torch.device, name: str, resolution: int | None = None,
          **overrides: Any) -> Method:
    """The method on a fresh context (what the runner builds: channels_last and bf16 autocast on CUDA)."""
    spec = get_dataset(setting.dataset)
    cls = METHODS.get(name)
    resolution = resolution or setting.resolution or cls.default_resolutions(spec)[0]
    try:
        cls.check_resolutions((resolution,))
    except UserError as error:
        pytest.skip(str(error))
    torch.manual_seed(0)
    teacher = create_model(setting.teacher, spec.num_classes).eval().requires_grad_(False)
    student = create_model(setting.student, spec.num_classes)
    ctx = MethodContext.create(teacher, student, spec, 0, resolutions=(resolution,), device=device,
                               label_embeddings_loader=lambda: load_label_embeddings(setting.dataset).vectors)
    presets = (spec.name, *spec.presets)
    hp = resolve_hparams(cls.Hparams, presets, {**_capped_overrides(cls, presets, name), **overrides}, name)
    return cls(ctx, hp)


def round_images(method: Method) -> int:
    """Images one synthesis round yields: the online draw, or the bank round's batch."""
    if method.sample_source == "online":
        return method.hp.kd_batch
    return method.hp.synth_batch if method.ctx.device.type == "cuda" else CPU_IMAGES


def synthesis_round(method: Method) -> Callable[[], SyntheticBatch]:
    """One synthesis round: `synthesize(n)` for a bank method, a generator phase and a draw online."""
    n = round_images(method)
    if method.sample_source == "online":
        def online() -> SyntheticBatch:
            method.train_generator(RoundInfo.standalone(images=n))
            return method.draw(n)
        return online
    return lambda: method.synthesize(n, RoundInfo.standalone(images=n))


def kd_step(method: Method) -> Callable[[], torch.Tensor]:
    """One student step (Distiller, SGD) on a kd_batch drawn from a bank of random images."""
    ctx, batch = method.ctx, method.hp.kd_batch
    bank = SyntheticBank(ctx.device)
    bank.add(torch.rand(2 * batch, ctx.spec.in_chans, ctx.resolution, ctx.resolution, device=ctx.device),
             torch.randint(0, ctx.spec.num_classes, (2 * batch,), device=ctx.device))
    params = list(ctx.student.parameters()) + method.student_parameters()
    distiller = Distiller(ctx, method, torch.optim.SGD(params, lr=0.01, momentum=0.9), None)
    return lambda: distiller.step(bank.sample(batch, ctx.generator, size=method.feed_size), batch)


def run(benchmark, method: Method, fn: Callable[[], Any], images: int, peak: Callable[[torch.dtype], float]) -> Any:
    """Count one call's FLOPs (also the warm-up), time ROUNDS synchronised calls, record the rates."""
    device = method.ctx.device
    flops = count_flops(fn)
    result: list[Any] = []

    def timed() -> None:
        result[:] = [fn()]
        synchronize(device)

    benchmark.pedantic(timed, rounds=ROUNDS, iterations=1)
    dtype = method.ctx.amp_dtype or torch.float32
    info = benchmark.extra_info
    info.update(images=images, flops_per_image=flops / images, dtype=str(dtype).removeprefix("torch."))
    if benchmark.stats is not None:
        seconds = benchmark.stats.stats.mean
        tflops = achieved_rate(flops / 1e12, seconds)
        info.update(images_per_s=images / seconds, achieved_tflops=tflops, peak_tflops=peak(dtype),
                    peak_fraction=tflops / peak(dtype))
    return result[0] if result else None


def describe(benchmark, method: Method) -> None:
    """What ran: the method, its resolution and feed size, the steps of a round and its preset's."""
    hp, ctx = method.hp, method.ctx
    steps = "iterations" if hasattr(hp, "iterations") else "g_steps"
    presets = (ctx.spec.name, *ctx.spec.presets)
    benchmark.extra_info.update(method=method.name, resolution=ctx.resolution, feed_size=method.feed_size,
                                steps=getattr(hp, steps),
                                preset_steps=getattr(resolve_hparams(type(hp), presets, {}, method.name), steps))


PHASES = {  # what one benchmark of a phase runs, and how many images it covers
    "synthesis": lambda method: (synthesis_round(method), round_images(method)),
    "kd": lambda method: (kd_step(method), method.hp.kd_batch),
}


@pytest.mark.parametrize("phase", list(PHASES))
@pytest.mark.parametrize("name", METHODS.names())
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_phase_cost(benchmark, device: torch.device, peak_tflops, setting: str, name: str, phase: str) -> None:
    """One synthesis round, or one student step on a kd_batch from the bank: images/s, FLOPs per image,
    achieved TFLOP/s and share of the peak."""
    _need(SETTINGS[setting], device)
    method = build(SETTINGS[setting], device, name)
    describe(benchmark, method)
    work, images = PHASES[phase](method)
    run(benchmark, method, work, images, peak_tflops)


@pytest.mark.parametrize("side", list(HALF_VS_FULL))
def test_muse_half_vs_nayer_full(benchmark, device: torch.device, peak_tflops, side: str) -> None:
    """One side of MUSE at half resolution against NAYER at full: round time and FLOPs per image, the
    generator's forward FLOPs per image, and the bank's uint8 bytes per image."""
    setting, name, resolution, feed = HALF_VS_FULL[side]
    _need(SETTINGS[setting], device)
    method = build(SETTINGS[setting], device, name, resolution, **({"feed": feed} if feed else {}))
    describe(benchmark, method)
    images = round_images(method)
    batch = run(benchmark, method, synthesis_round(method), images, peak_tflops)
    bank = SyntheticBank(device)
    bank.add(batch.images, batch.labels)
    labels = method.round_labels(images)
    latent = method.round_latent(labels)
    with torch.no_grad():
        generator = count_flops(lambda: method.generate(latent, resolution))
    benchmark.extra_info.update(bank_bytes_per_image=bank.nbytes() / len(bank), generator_forward_flops_per_image=
                                generator / images)
