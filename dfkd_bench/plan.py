"""A run's whole plan as data (`run --dry-run --format json`): what it will synthesise, train and
evaluate, decided before any work, so schedules can be compared with the reference scripts' numbers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import hparams_dict
from .engine.precision import precision_label
from .schedule import Schedule

if TYPE_CHECKING:
    from .resolve import ResolvedRun


def schedule_plan(schedule: Schedule, lr: float, lr_min_ratio: float, eval_every: int) -> dict[str, Any]:
    """The schedule's numbers: images, rounds, warm-up, KD steps (in all and after each round), the
    student's learning rate at each post-warm-up epoch boundary, resets and evaluation points."""
    return {
        "protocol": schedule.protocol, "sample_source": schedule.source, "budget": schedule.budget,
        "reference": schedule.notes.get("source", ""), "notes": schedule.notes.get("note", ""),
        "images": schedule.images, "rounds": len(schedule.rounds),
        "epochs": len({r.epoch for r in schedule.rounds}), "warmup_rounds": schedule.warmup_rounds,
        "kd_steps": schedule.kd_steps, "kd_steps_after_round": [r.kd_steps for r in schedule.rounds],
        "final_kd_steps": schedule.final_kd_steps,
        "lr_schedule": "cosine per post-warm-up epoch" if schedule.lr_per_epoch else "cosine per KD step",
        "student_lr": schedule.student_lrs(lr, lr_min_ratio),
        "generator_resets": schedule.reset_rounds(), "reset_l0": schedule.reset_l0_rounds(),
        "eval_points": schedule.eval_points(eval_every),
    }


def generator_parameters(resolved: "ResolvedRun") -> int:
    """Parameters of the method's generator (0 for pixel-optimising methods), counted on the method built
    on the meta device with untrained models (`cost.meta`): no data, weights, accelerator or allocation."""
    from .cost.meta import meta_method
    from .engine import GeneratorMethod

    if not issubclass(resolved.method_cls, GeneratorMethod):
        return 0
    with meta_method(resolved) as method:
        return sum(p.numel() for p in method.generator.parameters())


def run_plan(resolved: "ResolvedRun") -> dict[str, Any]:
    """One run's plan: every run option as resolved (the header, generated from `RunConfig`'s schema), the
    student's recipe and loss, the generator's size, the schedule and its cost (counted TFLOP, predicted
    seconds and their basis: `cost.predict`)."""
    from .cost.predict import cost_plan

    hp, config = resolved.run_hparams, resolved.config
    return {
        "run_id": resolved.run_id, "method": resolved.method_cls.name, **resolved.option_values(),
        "precision": precision_label(config.amp, resolved.device, resolved.method_cls.auto_bf16_phases),
        "world_size": resolved.world_size,
        "student_recipe": {"batch": hp.kd_batch, "lr": hp.lr, "lr_min": hp.lr * hp.lr_min_ratio,
                           "momentum": hp.momentum, "weight_decay": hp.weight_decay,
                           "temperature": hp.temperature, "loss": hp.student_loss_label()},
        "generator_parameters": generator_parameters(resolved),
        "schedule": schedule_plan(resolved.schedule, hp.lr, hp.lr_min_ratio, hp.eval_every),
        "hparams": hparams_dict(hp),
        "cost": cost_plan(resolved),
    }
