"""Small digits contexts and tiny-budget methods shared by the method-level tests."""

from __future__ import annotations

import copy
from typing import Any

import torch

from dfkd_bench.config import resolve_hparams
from dfkd_bench.data import get_dataset
from dfkd_bench.engine import GeneratorStep, Method, MethodContext, RoundInfo
from dfkd_bench.label_embeddings import load_label_embeddings
from dfkd_bench.models import create_model
from dfkd_bench.schedule import plan_schedule

TINY = {"synth_batch": "16", "g_steps": "2", "kd_steps": "4", "kd_batch": "32", "final_kd_steps": "0",
        "warmup_rounds": "1", "noise_dim": "32"}


def make_ctx(resolutions: tuple[int, ...] = (32,), seed: int = 0) -> MethodContext:
    """A CPU digits context with small untrained zoo models (the teacher frozen in eval mode), seeded."""
    spec = get_dataset("digits")
    torch.manual_seed(seed)
    teacher = create_model("digits_resnet8_slim", spec.num_classes).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = create_model("digits_resnet8_slim", spec.num_classes)
    return MethodContext.create(teacher, student, spec, seed, resolutions=resolutions,
                                label_embeddings_loader=lambda: load_label_embeddings("digits").vectors)


def make_method(cls: type[Method], ctx: MethodContext, **overrides: Any) -> Any:
    """The method with the digits preset, the tiny budget and `overrides`."""
    hp = resolve_hparams(cls.Hparams, "digits", {**TINY, **{k: str(v) for k, v in overrides.items()}}, cls.name)
    return cls(ctx, hp)


ONLINE_QUICK = {"kd_batch": "8", "g_steps": "1", "s_steps": "1"}


def make_online(cls: type[Method], ctx: MethodContext, **overrides: Any) -> Any:
    """An online method with the digits preset, a tiny batch and one generator step per student step."""
    values = {**ONLINE_QUICK, **{k: str(v) for k, v in overrides.items()}}
    return cls(ctx, resolve_hparams(cls.Hparams, "digits", values, cls.name))


def fixed_step(method: Any, z: torch.Tensor) -> GeneratorStep:
    """A generator step on a fixed latent (generator in train mode, as the method trains it)."""
    method.generator.train()
    return GeneratorStep(method.generate(z, method.ctx.resolution), torch.zeros(z.shape[0], dtype=torch.long))


def assert_valid_draws(method: Any, resolution: int = 32) -> None:
    """After one generator phase, draws of 6 and 3 images: shape, detached, range [0,1], labels in range."""
    method.train_generator(RoundInfo.standalone())
    for n in (6, 3):
        batch = method.draw(n)
        assert batch.images.shape == (n, 3, resolution, resolution) and not batch.images.requires_grad
        assert batch.images.min() >= 0 and batch.images.max() <= 1
        assert batch.labels.shape == (n,) and batch.labels.dtype == torch.long
        assert batch.labels.min() >= 0 and batch.labels.max() < 10


def assert_same_next_draw(method: Any, other: Any) -> None:
    """With the run's RNG reseeded alike, both methods draw the same images and labels."""
    method.ctx.generator.manual_seed(11)
    other.ctx.generator.manual_seed(11)
    a, b = method.draw(4), other.draw(4)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def assert_state_round_trip(make: Any) -> None:
    """An online method restored from a deep copy of its state_dict (as from a checkpoint) into a fresh
    generator on the same teacher and student draws the same images, and trains on identically (the
    generator's optimiser state came along too)."""
    method = make(make_ctx(seed=0))
    method.train_generator(RoundInfo.standalone())
    other = make(make_ctx(seed=0))
    assert not all(torch.equal(p, q) for p, q in zip(method.generator.parameters(), other.generator.parameters()))
    other.load_state_dict(copy.deepcopy(method.state_dict()))
    assert_same_next_draw(method, other)
    method.train_generator(RoundInfo.standalone())
    other.train_generator(RoundInfo.standalone())
    for p, q in zip(method.generator.parameters(), other.generator.parameters()):
        assert torch.equal(p, q)


def assert_online_budgets(cls: type[Method], n_total: int = 144) -> None:
    """The digits preset's schedules: budget=steps runs paper_steps; budget=images draws the ratio's
    fresh images and takes the suite's student steps per image plus the final steps."""
    hp = resolve_hparams(cls.Hparams, "digits", {"budget": "steps"}, cls.name)
    assert sum(r.kd_steps for r in plan_schedule("equal", hp, n_total).rounds) == hp.paper_steps
    images = plan_schedule("equal", resolve_hparams(cls.Hparams, "digits", {}, cls.name), n_total)
    assert images.images == round(n_total / hp.kd_batch) * hp.kd_batch
    assert images.kd_steps == round(hp.kd_steps / hp.synth_batch * n_total) + hp.final_kd_steps
