"""Run configuration and method hyper-parameters: defaults, per-dataset presets, `--set` overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

from .schedule import ReferenceSchedule, protocol_recipe
from .errors import UserError


@dataclass
class MethodHparams:
    """The student recipe every method shares; a method's dataclass extends it with its own knobs.

    `PRESETS` maps a dataset name to overrides of the defaults (the papers' settings, and a quick
    `digits` one); `--set METHOD.PARAM=VALUE` overrides on top.
    """

    synth_batch: int = 64          # images synthesised per round
    kd_steps: int = 50             # student steps per full round: the run's KD budget is kd_steps per
                                   # synth_batch synthetic images, spread over the post-warm-up rounds
    kd_batch: int = 128            # student batch drawn from the bank
    lr: float = 0.1                # student SGD learning rate (cosine to lr * lr_min_ratio)
    lr_min_ratio: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    temperature: float = 20.0      # KD temperature
    warmup_rounds: int = 0         # rounds that synthesise without KD (equal protocol: the cap)
    warmup_fraction: float = 1.0   # equal protocol: warm-up is at most this fraction of the rounds
    kd_per_image: float = 0.0      # equal protocol: student steps per synthetic image (0: kd_steps / synth_batch)
    final_kd_steps: int = 0        # extra student steps on the final bank
    eval_every: int = 1            # rounds between test-set evaluations (for the curve only)
    synth_aug: str = ""            # augmentation of new images in the generator loss ("": the dataset's)
    kd_aug: str = ""               # augmentation of bank images for the student ("": the dataset's)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    # Where the student's images come from, for the schedule policy (`schedule.plan_schedule`): "bank"
    # (rounds of synthesis, banked) or "online" (fresh generator batches; `OnlineHparams`).
    SAMPLE_SOURCE: ClassVar[str] = "bank"
    # The reference code's schedule per preset name, for `--protocol paper`.
    PAPER: ClassVar[dict[str, ReferenceSchedule]] = {}
    # Per-teacher settings the papers publish (e.g. Fast's adv 1.0 for VGG-11), keyed by teacher arch.
    TEACHER_PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    # What `--smoke` shrinks a preset to: a handful of steps per phase (subclasses add their own loops).
    SMOKE: ClassVar[dict[str, Any]] = dict(synth_batch=8, kd_batch=16, kd_steps=4, warmup_rounds=1,
                                           final_kd_steps=2, eval_every=1)
    SMOKE_ROUNDS: ClassVar[int] = 3

    def validate(self, method: str = "method") -> None:
        """Raise a UserError for out-of-range values, before any run starts; subclasses extend it."""
        positive = ("synth_batch", "kd_batch", "eval_every", "temperature", "lr")
        non_negative = ("kd_steps", "warmup_rounds", "final_kd_steps", "weight_decay", "momentum", "kd_per_image",
                        "warmup_fraction")
        for name in positive:
            if not getattr(self, name) > 0:
                raise UserError(f"{method}.{name}={getattr(self, name)}: it must be > 0")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise UserError(f"{method}.{name}={getattr(self, name)}: it must be >= 0")
        from .engine.augment import Augment

        for text in (self.synth_aug, self.kd_aug):
            if text:
                Augment(text, 32, True)  # a malformed augmentation is refused before the run

    def halved(self) -> "MethodHparams":
        """The same run at half the synthesis and student batch sizes (`--auto-batch` after running out
        of memory): rounds of half the images, so twice the rounds, warm-up rounds and student steps;
        the images made and the images the student sees stay the same."""
        return dataclasses.replace(self, synth_batch=max(1, self.synth_batch // 2), kd_batch=max(1, self.kd_batch // 2),
                                   kd_per_image=2 * self.kd_per_image, final_kd_steps=2 * self.final_kd_steps,
                                   warmup_rounds=2 * self.warmup_rounds)

    def student_loss_label(self) -> str:
        """The student's loss as the run's plan names it; methods with another criterion override it."""
        return f"KL at T={self.temperature:g} (x T^2)"

    def generator_resets(self) -> tuple[int, bool]:
        """Hook for the schedule policy: (g_life in rounds, reset_l0 on) under the equal protocol;
        generator methods that reset override it."""
        return 0, False

    @staticmethod
    def check_choice(method: str, name: str, value: str, choices: tuple[str, ...]) -> None:
        """A string knob must be one of `choices`."""
        if value not in choices:
            raise UserError(f"{method}.{name}={value!r}; choose from: {', '.join(choices)}")


H = TypeVar("H", bound=MethodHparams)


def _cast(value: str, target: Any, name: str) -> Any:
    """Convert a `--set` string to the type of the field's default."""
    try:
        if isinstance(target, bool):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(target, int):
            return int(value)
        if isinstance(target, float):
            return float(value)
        if isinstance(target, tuple):
            items = [v for v in value.replace(";", ",").split(",") if v.strip()]
            kind = type(target[0]) if target else str
            return tuple(kind(v.strip()) for v in items)
        return value
    except ValueError:
        kind = {bool: "boolean (true/false)", int: "integer", float: "number", tuple: "comma-separated list"}
        raise UserError(f"--set {name}={value}: expected {kind.get(type(target), type(target).__name__)}") from None


def smoke_overrides(cls: type[MethodHparams]) -> dict[str, Any]:
    """The smoke settings of a hyper-parameter class and all its bases (subclasses win)."""
    merged: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        merged.update(vars(klass).get("SMOKE", {}))
    return merged


def resolve_hparams(cls: type[H], dataset: str | tuple[str, ...], overrides: dict[str, Any] | None = None,
                    method: str = "method", teacher: str | None = None, smoke: bool = False,
                    protocol: str = "equal") -> H:
    """Defaults, then the first preset found among the dataset's preset names (an ImageNet subset
    falls back to ImageNet's), the teacher's published settings, the equal protocol's shared student
    recipe, the smoke shrink, then the user's overrides (strings are cast)."""
    names = (dataset,) if isinstance(dataset, str) else dataset
    preset = next((cls.PRESETS[n] for n in names if n in cls.PRESETS), {})
    recipe = protocol_recipe(protocol, names)
    hp = cls(**{**preset, **cls.TEACHER_PRESETS.get(teacher or "", {}), **recipe,
                **({k: v for k, v in smoke_overrides(cls).items() if k in {f.name for f in fields(cls)}}
                   if smoke else {})})
    known = {f.name: f for f in fields(cls)}
    for key, value in (overrides or {}).items():
        if key not in known:
            raise UserError(f"--set {method}.{key}: {method} has no parameter {key!r}; "
                            f"choose from: {', '.join(sorted(known))}")
        current = getattr(hp, key)
        setattr(hp, key, _cast(value, current, f"{method}.{key}") if isinstance(value, str) else value)
    hp.validate(method)
    return hp


def parse_set_options(items: list[str] | tuple[str, ...], methods: list[str]) -> dict[str, dict[str, str]]:
    """Parse `METHOD.PARAM=VALUE` strings into {method: {param: value}}; malformed ones are errors."""
    parsed: dict[str, dict[str, str]] = {m: {} for m in methods}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, param = key.strip().partition(".")
        if not sep or not dot or not method or not param or not value.strip():
            raise UserError(f"--set {item!r} is malformed; expected METHOD.PARAM=VALUE, e.g. fast.g_steps=5")
        method = method.lower()
        if method not in parsed:
            raise UserError(f"--set {item!r} names method {method!r}, which is not in this run; "
                            f"choose from: {', '.join(methods)}")
        parsed[method][param.strip()] = value.strip()
    return parsed


def hparams_dict(hp: MethodHparams) -> dict[str, Any]:
    """A hyper-parameter dataclass as a plain dict."""
    return dataclasses.asdict(hp)
