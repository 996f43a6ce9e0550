"""Small digits contexts and tiny-budget methods shared by the method-level tests."""

from __future__ import annotations

from typing import Any

import torch

from dfkd_bench.config import resolve_hparams
from dfkd_bench.data import get_dataset
from dfkd_bench.engine import Method, MethodContext
from dfkd_bench.label_embeddings import load_label_embeddings
from dfkd_bench.models import create_model

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
