"""Shared fixtures: a private teacher cache with a quickly trained digits teacher, tiny budgets,
a clean method registry, and single-threaded torch (the test machine's cores are shared; with
several intra-op threads on a loaded machine a small forward pass is ~50x slower)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest
import torch

# Before anything spawns a subprocess or runs a forward: one thread for torch here and in children.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

# Per-method overrides that make a digits run take about a second on one CPU thread:
# 72 images (ratio 0.05) in 5 rounds of 16, a few KD steps each.
TINY: dict[str, dict[str, str]] = {
    "fast": {"synth_batch": "16", "g_steps": "2", "kd_steps": "4", "kd_batch": "32", "final_kd_steps": "0",
             "warmup_rounds": "1"},
    "deepinversion": {"synth_batch": "16", "iterations": "4", "kd_steps": "4", "kd_batch": "32",
                      "final_kd_steps": "0"},
    "teacher_noise": {"synth_batch": "16", "steps": "2", "kd_steps": "4", "kd_batch": "32"},
}


@pytest.fixture
def tiny() -> dict[str, dict[str, str]]:
    """The tiny per-method overrides (a fresh copy a test may change)."""
    return {method: dict(values) for method, values in TINY.items()}


@pytest.fixture(scope="session")
def tiny_args():
    """`tiny_args(*methods)`: `--set METHOD.PARAM=VALUE` arguments for the tiny budget of each method."""

    def make(*methods: str) -> list[str]:
        args: list[str] = []
        for method in methods:
            for key, value in TINY[method].items():
                args += ["--set", f"{method}.{key}={value}"]
        return args

    return make


@pytest.fixture(scope="session", autouse=True)
def dfkd_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test (and every subprocess it starts) uses a private, empty-at-start teacher cache."""
    path = tmp_path_factory.mktemp("dfkd_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DFKD_BENCH_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def digits_data():
    """The real digits splits (loaded once)."""
    from dfkd_bench.data import get_dataset

    spec = get_dataset("digits")
    return spec, spec.open()


@pytest.fixture(scope="session")
def digits_teacher(dfkd_cache: Path, digits_data):
    """The dataset's default teacher (digits_resnet8, seed 0), trained for 2 epochs (~98% test accuracy,
    a few seconds) into the cache path the runner reads, so runs load it instead of training 30 epochs.
    Returns (model, card)."""
    from dfkd_bench.teachers import get_teacher, recipe_for, teacher_path

    spec, data = digits_data
    model, card = get_teacher(spec, spec.default_teacher, data, torch.device("cpu"), seed=0,
                              recipe=recipe_for(spec, epochs=2))
    assert teacher_path(spec.name, spec.default_teacher, 0).is_file()
    return model, card


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CIFAR-10 in the official python-pickle format (2 train, 2 test images a class); read-only."""
    from formats import write_cifar10

    root = tmp_path_factory.mktemp("cifar10")
    write_cifar10(root, per_class=2, test_per_class=2)
    return root


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A teacher and split cache of the requesting module's own, so "newest teacher" lookups and the
    `teachers` listing see only what that module cached."""
    from cli_helpers import own_cache

    with own_cache(tmp_path_factory.mktemp("module_cache")) as path:
        yield path


@pytest.fixture
def clean_methods() -> Iterator[None]:
    """Restore the method registry after a test that registers methods (plugins, fakes)."""
    from dfkd_bench.plugins import METHODS

    with METHODS.snapshot():
        yield
