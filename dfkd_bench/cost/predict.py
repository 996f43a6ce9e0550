"""Predicted seconds per phase from a run's counted work: with the device's calibration where there is
one (`dfkd-bench calibrate`), else at a stated share of the device's published peak, labelled as an
assumption. What `run --dry-run` and `sweep --dry-run` print, and the dry-run plan's "cost"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..engine.precision import amp_dtype_for, device_name, precision_name
from .count import PhaseCount, RunCount, count_run
from .peaks import ASSUMED_RANGE, ASSUMED_UTILISATION, Peak, device_peak, named_peak
from .rates import Calibration, load

if TYPE_CHECKING:
    from ..resolve import ResolvedRun


@dataclass(frozen=True)
class Basis:
    """What turns work into seconds: a calibration, or a share of a published (or estimated) peak."""

    device: str
    precision: str
    calibration: Calibration | None = None
    peak: Peak | None = None
    utilisation: float = ASSUMED_UTILISATION

    @property
    def assumption(self) -> bool:
        """True when the seconds rest on a share of a peak, not on a measurement of the device."""
        return self.calibration is None

    def label(self) -> str:
        """The basis in words, as the dry runs print it (an assumption says so and how to replace it)."""
        if self.calibration is not None:
            threads = torch.get_num_threads()
            other = self.calibration.device_type == "cpu" and self.calibration.threads != threads
            return self.calibration.label() + (f"; this process uses {threads} threads" if other else "")
        assert self.peak is not None
        return (f"assumed: {self.utilisation:.0%} of the {self.peak.name} {self.precision} peak "
                f"{self.peak.tflops(self.precision):g} TFLOP/s ({self.peak.source}); "
                f"`dfkd-bench calibrate` measures it")

    def phase_seconds(self, phase: str, count: PhaseCount, counter_ops: int = 0) -> float:
        """Seconds of a phase's work; under a calibration with the FLOP counter's overhead on the
        `counter_ops` operators a real run counts under it."""
        work = count.total
        if self.calibration is not None:
            return (self.calibration.phases[phase].seconds(work)
                    + counter_ops * self.calibration.counter_seconds_per_op)
        assert self.peak is not None
        return work.flops / (self.utilisation * self.peak.tflops(self.precision) * 1e12)


@dataclass(frozen=True)
class Prediction:
    """A run's predicted synthesis and KD seconds (what runs.csv's synth_s and kd_s will say), its
    counted TFLOP per phase, and the basis of the seconds."""

    run_id: str
    synth_s: float
    kd_s: float
    synth_tflop: float
    kd_tflop: float
    basis: Basis
    budget_s: float | None = None  # a time budget caps synthesis + KD

    @property
    def total_s(self) -> float:
        """Synthesis + KD seconds (what a time budget counts)."""
        return self.synth_s + self.kd_s

    def as_dict(self) -> dict[str, Any]:
        """The dry-run plan's "cost" entry."""
        out: dict[str, Any] = {
            "synth_tflop": self.synth_tflop, "kd_tflop": self.kd_tflop,
            "synth_s": round(self.synth_s, 3), "kd_s": round(self.kd_s, 3), "total_s": round(self.total_s, 3),
            "device": self.basis.device, "precision": self.basis.precision, "basis": self.basis.label(),
            "assumption": self.basis.assumption,
        }
        if self.basis.assumption:
            out["utilisation"] = self.basis.utilisation
            out["total_s_range"] = [round(self.total_s * self.basis.utilisation / u, 3) for u in reversed(ASSUMED_RANGE)]
        if self.budget_s is not None:
            out["time_budget_s"] = self.budget_s
        return out

    def line(self) -> str:
        """One line for a dry run."""
        capped = f" (capped by its {self.budget_s:g} s budget)" if self.budget_s is not None else ""
        return (f"predicted synth {_seconds(self.synth_s)} + KD {_seconds(self.kd_s)} = {_seconds(self.total_s)}"
                f"{capped}; {self.synth_tflop:.4g} + {self.kd_tflop:.4g} TFLOP")


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 3600 else f"{s / 3600:.2f} h"


def run_precision(resolved: "ResolvedRun", device: torch.device | None = None) -> str:
    """The precision the run's forwards use on `device` (default: its own): "bf16" or "fp32" (bf16 when
    any phase runs in it: calibrations are stored per precision, not per phase)."""
    return precision_name(amp_dtype_for(resolved.config.amp, device or resolved.device,
                                        resolved.method_cls.auto_bf16_phases))


def basis_for(resolved: "ResolvedRun", device: str | None = None, utilisation: float | None = None) -> Basis:
    """The basis of a run's prediction. `device` None: the run's own device, its calibration if stored
    (and no `utilisation` is asked for), else its peak; a table name ("H100"): that GPU's peak, in the
    precision the run's `--amp` picks on a bf16 GPU."""
    share = utilisation or ASSUMED_UTILISATION
    if device is None:
        precision = run_precision(resolved)
        name = device_name(resolved.device)
        calibration = load(name, precision) if utilisation is None else None
        if calibration is not None:
            return Basis(name, precision, calibration=calibration)
        return Basis(name, precision, peak=device_peak(resolved.device), utilisation=share)
    peak = named_peak(device)
    precision = "fp32" if resolved.config.amp == "off" else "bf16"
    return Basis(peak.name, precision, peak=peak, utilisation=share)


def predict(resolved: "ResolvedRun", basis: Basis, count: RunCount | None = None) -> Prediction:
    """A run's prediction on `basis` from its counted work."""
    count = count or count_run(resolved)
    counter_ops = _counted_ops(count)
    synth_s = basis.phase_seconds("synth", count.synth, counter_ops["synth"])
    kd_s = basis.phase_seconds("kd", count.kd, counter_ops["kd"])
    budget = resolved.config.time_budget
    if budget and synth_s + kd_s > budget:
        scale = budget / (synth_s + kd_s)
        synth_s, kd_s = synth_s * scale, kd_s * scale
    return Prediction(resolved.run_id, synth_s, kd_s, count.synth.tflop, count.kd.tflop, basis,
                      float(budget) if budget else None)


def _counted_ops(count: RunCount) -> dict[str, int]:
    """Operators a real run executes under the FLOP counter and keeps the overhead of: one KD step per
    batch shape, and each synthesis piece done once (a piece done again gives its overhead back,
    `engine.flop_overhead`), or once for an online method's generator phase and draw; none for
    synthesis under a time budget (not counted there)."""
    synth = 0
    if count.synth_recorded:
        synth = sum(work.ops for key, (work, times) in count.synth.pieces.items()
                    if times <= 1 or key[0] in ("train_generator", "draw"))
    return {"synth": synth, "kd": sum(work.ops for work, _ in count.kd.pieces.values())}


def predict_runs(runs: Sequence["ResolvedRun"], device: str | None = None,
                 utilisation: float | None = None) -> list[Prediction]:
    """Each run's prediction (see `basis_for` for `device` and `utilisation`)."""
    return [predict(r, basis_for(r, device, utilisation)) for r in runs]


def cost_plan(resolved: "ResolvedRun", device: str | None = None) -> dict[str, Any]:
    """The dry-run plan's "cost" of one run: counted TFLOP, predicted seconds and their basis."""
    return predict(resolved, basis_for(resolved, device)).as_dict()


def device_hours(predictions: Sequence[Prediction]) -> float:
    """The predicted synthesis + KD device-hours of a grid."""
    return sum(p.total_s for p in predictions) / 3600


def summary_line(predictions: Sequence[Prediction]) -> str:
    """The grid's predicted device-hours, and every basis they rest on (an assumption said as one)."""
    if not predictions:
        return "predicted: no runs"
    bases = list(dict.fromkeys(p.basis.label() for p in predictions))
    return (f"predicted {device_hours(predictions):.3g} device-hours of synthesis + KD for {len(predictions)} runs "
            f"({sum(p.total_s for p in predictions):.0f} s); " + "; ".join(bases))
