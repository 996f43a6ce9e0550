"""What the Fast, NAYER and MUSE parity tests share: our method on a parity file's models, each generator
step's terms and gradient norms read through the method's public hooks, and the student's KD steps."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from dfkd_bench.data import get_dataset
from dfkd_bench.engine import GeneratorMethod, GeneratorStep, MethodContext
from dfkd_bench.engine.distill import Distiller
from dfkd_bench.models import create_model


def parity_context(shared: dict[str, Any], resolutions: tuple[int, ...] | None = None) -> MethodContext:
    """A CPU fp32 context with the file's teacher (frozen, eval) and student, and its label embeddings if any."""
    teacher, student = (create_model(shared["arch"], shared["num_classes"]) for _ in range(2))
    teacher.load_state_dict(shared["teacher"])
    student.load_state_dict(shared["student"])
    teacher.eval().requires_grad_(False)
    embeddings = shared.get("embeddings")
    return MethodContext.create(teacher, student, get_dataset(shared["dataset"]), seed=0, device="cpu", amp="off",
                                resolutions=resolutions or (shared["resolution"],),
                                label_embeddings_loader=None if embeddings is None else lambda: embeddings)


def global_norm(tensors: Sequence[torch.Tensor | None]) -> float:
    """The L2 norm of all these tensors together (None entries skipped)."""
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in tensors if t is not None)))


def flattened(nested: Any, prefix: str = "") -> dict[str, float]:
    """Nested dicts and lists of numbers as one {"a/0/b": value} dict (what pytest.approx compares)."""
    if isinstance(nested, dict):
        items = nested.items()
    elif isinstance(nested, list):
        items = enumerate(nested)
    else:
        return {prefix: nested}
    return {k: v for key, value in items
            for k, v in flattened(value, f"{prefix}/{key}" if prefix else str(key)).items()}


class StepRecorder:
    """Keeps, for every generator step of a method, its weighted terms (`generator_terms`) and the global
    gradient norm over named groups of the round's parameters (`apply_gradients`), by wrapping the two
    public hooks on the instance."""

    def __init__(self, method: GeneratorMethod, norms: dict[str, tuple[str, ...]]) -> None:
        self.steps: list[dict[str, float]] = []
        terms, apply = method.generator_terms, method.apply_gradients

        def recorded_terms(step: GeneratorStep) -> dict[str, torch.Tensor]:
            values = terms(step)
            self.steps.append({name: float(value.detach()) for name, value in values.items()})
            return values

        def recorded_apply(groups: dict[str, list[torch.Tensor]], grads: dict[str, Sequence[torch.Tensor | None]],
                           optimizer: torch.optim.Optimizer) -> None:
            self.steps[-1].update({name: global_norm([g for group in parts for g in grads[group]])
                                   for name, parts in norms.items()})
            apply(groups, grads, optimizer)

        method.generator_terms = recorded_terms  # type: ignore[method-assign]
        method.apply_gradients = recorded_apply  # type: ignore[method-assign]

    def take(self) -> list[dict[str, float]]:
        """The steps recorded since the last call."""
        steps, self.steps = self.steps, []
        return steps


def student_losses(method: GeneratorMethod, shared: dict[str, Any], steps: int = 2) -> list[float]:
    """The loss of each of `steps` student steps on the file's uint8 batch (the same batch every step), with
    SGD at the method's lr, momentum and weight decay, as the engine's Distiller takes them."""
    ctx, hp = method.ctx, method.hp
    params = [*ctx.student.parameters(), *method.student_parameters()]
    optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
    distiller = Distiller(ctx, method, optimizer, None)
    batch = (shared["kd_images"].float() / 255, shared["kd_labels"])
    return [float(distiller.step([batch], batch[1].shape[0])) for _ in range(steps)]
