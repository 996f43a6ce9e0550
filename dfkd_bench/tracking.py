"""Opt-in live tracking of runs (`--log tensorboard|wandb`), so long runs can be watched in a viewer.

Each run logs under its run_id: every curve point (student accuracy, elapsed synthesis + KD seconds,
images banked), per-phase seconds and the latest value of every loss term after each round, and a
grid of the newest synthetic images at each evaluation. The step is the round; the evaluation
after the final KD phase is logged one step after the last round. The run folder stays the source
of truth: trackers only mirror it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch

from .errors import UserError

TRACKERS = ("tensorboard", "wandb")
SAMPLES_SHOWN = 64


class Backend(Protocol):
    """What a viewer library must offer: scalars and an image at a step, and closing."""

    def scalars(self, values: dict[str, float], step: int) -> None: ...

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None: ...

    def close(self) -> None: ...


class TensorBoardBackend:
    """torch.utils.tensorboard under OUT/tensorboard/<run_id> (`tensorboard --logdir OUT/tensorboard`)."""

    def __init__(self, out_dir: Path, run_id: str, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(out_dir / "tensorboard" / run_id))
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in sorted(config.items())), 0)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        self.writer.add_image(tag, grid, step)

    def close(self) -> None:
        self.writer.close()


class WandbBackend:
    """A wandb run named by run_id (project $WANDB_PROJECT or dfkd-bench; WANDB_MODE=offline honoured)."""

    def __init__(self, out_dir: Path, run_id: str, config: dict[str, Any]) -> None:
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "dfkd-bench"), name=run_id, id=run_id,
                              group=run_id.rsplit("-", 2)[0], config=config, dir=str(out_dir), resume="allow",
                              reinit="finish_previous")

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        self.run.log({tag: self.wandb.Image(grid.permute(1, 2, 0).numpy())}, step=step)

    def close(self) -> None:
        self.run.finish()


BACKENDS = {"tensorboard": TensorBoardBackend, "wandb": WandbBackend}


def check_trackers(names: Sequence[str]) -> list[str]:
    """Validate `--log` names and that their packages import, before any run starts."""
    import importlib.util

    chosen = [n.strip().lower() for n in names if n.strip()]
    for name in chosen:
        if name not in TRACKERS:
            raise UserError(f"unknown --log {name!r}; choose from: {', '.join(TRACKERS)}")
        if importlib.util.find_spec(name) is None:  # each tracker's package and extra share its name
            raise UserError(f"--log {name} needs the {name} package: pip install 'dfkd-bench[{name}]'")
    return chosen


class RunTracker:
    """Mirrors one run into every chosen backend: called after each round and once at the end."""

    def __init__(self, names: Sequence[str], out_dir: Path, run_id: str, config: dict[str, Any]) -> None:
        flat = {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in config.items()}
        self.backends: list[Backend] = [BACKENDS[name](out_dir, run_id, flat) for name in names]
        self.points_logged = 0

    def round(self, rounds_done: int, state: Any, bank: Any, loss_terms: dict[str, torch.Tensor]) -> None:
        """After round `rounds_done`: phase seconds, loss terms and any new curve point (with samples)."""
        values = {f"seconds/{phase}": s for phase, s in state.seconds.items()}
        values.update({f"loss/{name}": float(v) for name, v in loss_terms.items()})
        values["images"] = float(len(bank))
        self._emit(values, rounds_done)
        self._new_points(state.curve, bank, rounds_done)

    def finish(self, curve: Sequence[Any], bank: Any, rounds_done: int, row: dict[str, Any]) -> None:
        """The evaluation after the final KD phase (one step after the last round), the run's phase
        seconds, and close."""
        self._new_points(curve, bank, rounds_done + 1)
        totals = {f"final/{k}": float(row[k]) for k in ("student_acc", "synth_s", "kd_s", "eval_s", "total_s")
                  if row.get(k) not in (None, "")}
        if totals:
            self._emit(totals, rounds_done + 1)
        self.close()

    def close(self) -> None:
        for backend in self.backends:
            backend.close()
        self.backends = []

    def _new_points(self, curve: Sequence[Any], bank: Any, step: int) -> None:
        for point in curve[self.points_logged:]:
            self._emit({"eval/student_acc": point.student_acc, "eval/elapsed_s": point.elapsed_s,
                        "eval/images": float(point.images)}, step)
            grid = sample_grid(bank)
            if grid is not None:
                for backend in self.backends:
                    backend.image("samples", grid, step)
        self.points_logged = len(curve)

    def _emit(self, values: dict[str, float], step: int) -> None:
        for backend in self.backends:
            backend.scalars(values, step)


def sample_grid(bank: Any) -> torch.Tensor | None:
    """The newest synthetic images of the bank (largest resolution) as one uint8 CHW grid on the CPU."""
    from torchvision.utils import make_grid

    if bank is None or not len(bank):
        return None
    images = bank.images(bank.resolutions[-1])[-SAMPLES_SHOWN:].cpu()
    return make_grid(images, nrow=16, padding=1)
