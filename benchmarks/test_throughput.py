"""Throughput of the hot paths (pytest-benchmark; not part of the test suite).

Run: `.venv/bin/python -m pytest benchmarks -n 0 --benchmark-enable [--device cuda]`. Each benchmark
synchronises the device inside the timed call, so GPU figures are wall-clock.
"""

from __future__ import annotations

import pytest
import torch

from dfkd_bench.config import resolve_hparams
from dfkd_bench.data.spec import DatasetSpec
from dfkd_bench.engine import SyntheticBank, student_augment
from dfkd_bench.engine.method import MethodContext
from dfkd_bench.engine.timing import synchronize
from dfkd_bench.models import create_model
from dfkd_bench.plugins import METHODS

SIZES = {"digits": (32, "digits_resnet8", "digits_resnet8_slim", 10), "cifar": (32, "resnet8", "resnet8", 100)}


def _spec(size: int, classes: int) -> DatasetSpec:
    return DatasetSpec("bench", classes, tuple(str(i) for i in range(classes)), size, 3, (0.5,) * 3, (0.25,) * 3,
                       50000, "resnet8", "resnet8")


def _ctx(device: torch.device, size: int, teacher: str, student: str, classes: int) -> MethodContext:
    """What the runner builds: models on the device (channels_last and bf16 autocast on CUDA), seed 0."""
    t = create_model(teacher, classes).eval()
    for p in t.parameters():
        p.requires_grad_(False)
    s = create_model(student, classes)
    return MethodContext.create(t, s, _spec(size, classes), 0, resolutions=(size,), device=device)


@pytest.mark.parametrize("method", ["fast", "deepinversion"])
@pytest.mark.parametrize("setting", sorted(SIZES))
def test_synthesis_round(benchmark, device: torch.device, method: str, setting: str) -> None:
    """One synthesis round of 64 images (images per second = 64 / mean)."""
    size, teacher, student, classes = SIZES[setting]
    ctx = _ctx(device, size, teacher, student, classes)
    cls = METHODS.get(method)
    overrides = {"iterations": 20} if method == "deepinversion" else {"g_steps": 5}
    m = cls(ctx, resolve_hparams(cls.Hparams, "cifar10", overrides, method))

    def round_() -> None:
        m.synthesize(64)
        synchronize(device)

    benchmark(round_)


def test_bank_sample_augment(benchmark, device: torch.device) -> None:
    """Drawing and augmenting a 256-image student batch from a 50k-image uint8 bank."""
    bank = SyntheticBank(device)
    bank.add(torch.rand(50_000, 3, 32, 32), torch.randint(0, 10, (50_000,)))
    gen = torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        (x, _), = bank.sample(256, gen, size=32)
        student_augment(x, True, gen)
        synchronize(device)

    benchmark(step)
