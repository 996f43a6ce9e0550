"""What a calibration measured on a device: per phase, seconds per operator plus a FLOP rate, fitted to
timed probes; stored as JSON under $DFKD_BENCH_CACHE/calibration/<device-name>.json, one entry per
precision."""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import UserError
from .work import Work

PHASES = ("synth", "kd")


@dataclass(frozen=True)
class PhaseRate:
    """A phase's time model: seconds = operators x seconds_per_op + FLOPs / flops_per_second + bytes
    written / bytes_per_second. The first term is what every operator pays (Python, dispatch, autograd,
    kernel launches), the second the arithmetic of matrix products and convolutions, the third the
    memory traffic of element-wise work (norms, activations, the BN-statistics losses)."""

    seconds_per_op: float
    flops_per_second: float
    bytes_per_second: float

    def seconds(self, work: Work) -> float:
        """The model's seconds for `work`."""
        return (work.ops * self.seconds_per_op + work.flops / self.flops_per_second
                + work.bytes / self.bytes_per_second)


@dataclass(frozen=True)
class Point:
    """One timed probe: its phase, what it ran, its counted work and its measured seconds per call."""

    phase: str
    label: str
    flops: int
    ops: int
    bytes: int
    seconds: float

    @property
    def work(self) -> Work:
        """The probe's counted work."""
        return Work(self.flops, self.ops, self.bytes)


@dataclass
class Calibration:
    """A device's measured rates in one precision, with what they were measured on."""

    device_name: str
    device_type: str
    precision: str
    threads: int
    torch_version: str
    created: str
    phases: dict[str, PhaseRate]
    counter_seconds_per_op: float = 0.0  # what FLOP counting adds per operator (the first round of a key)
    points: list[Point] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The calibration as JSON-ready data (what `save` stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Calibration":
        """A calibration back from `as_dict`'s data."""
        return cls(**{**data, "phases": {k: PhaseRate(**v) for k, v in data["phases"].items()},
                      "points": [Point(**p) for p in data.get("points", [])]})

    def label(self) -> str:
        """How a prediction names its basis."""
        threads = f", {self.threads} thread{'s' if self.threads != 1 else ''}" if self.device_type == "cpu" else ""
        return f"calibrated on {self.device_name} ({self.precision}{threads}, {self.created[:10]})"


def fit(points: Sequence[Point]) -> PhaseRate:
    """The time model that best fits the points in relative error with no negative term: least squares
    over every subset of the three terms, the best fit whose coefficients are all positive (a term the
    points cannot separate from the others drops out, its rate infinite)."""
    if not points:
        raise ValueError("no points to fit")
    a = np.array([[p.ops / p.seconds, p.flops / p.seconds, p.bytes / p.seconds] for p in points], dtype=np.float64)
    ones = np.ones(len(points))
    best, best_residual = np.zeros(3), math.inf
    for size in (3, 2, 1):
        for columns in itertools.combinations(range(3), size):
            coef = np.zeros(3)
            coef[list(columns)] = np.linalg.lstsq(a[:, columns], ones, rcond=None)[0]
            residual = float(np.sum((a @ coef - ones) ** 2))
            if all(coef[c] > 0 for c in columns) and residual < best_residual:
                best, best_residual = coef, residual
    return PhaseRate(float(best[0]), _rate(best[1]), _rate(best[2]))


def _rate(per_unit: float) -> float:
    """Units per second from seconds per unit (a dropped term: infinitely fast)."""
    return float(1.0 / per_unit) if per_unit > 0 else math.inf


def calibration_dir() -> Path:
    """$DFKD_BENCH_CACHE/calibration."""
    from ..data.source import cache_dir

    return cache_dir() / "calibration"


def calibration_path(device_name: str) -> Path:
    """The file of a device: its name with every run of other characters than letters, digits, '.', '-'
    made one '_' ("NVIDIA H100 80GB HBM3" -> NVIDIA_H100_80GB_HBM3.json)."""
    return calibration_dir() / (re.sub(r"[^A-Za-z0-9.\-]+", "_", device_name).strip("_") + ".json")


def save(calibration: Calibration) -> Path:
    """Write (or replace) the calibration's precision entry in its device's file; returns the file."""
    path = calibration_path(calibration.device_name)
    entries = _read(path)
    entries[calibration.precision] = calibration.as_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"device_name": calibration.device_name, "entries": entries}, indent=1))
    tmp.replace(path)
    return path


def load(device_name: str, precision: str) -> Calibration | None:
    """The stored calibration of a device in a precision, or None."""
    entry = _read(calibration_path(device_name)).get(precision)
    return Calibration.from_dict(entry) if entry else None


def _read(path: Path) -> dict[str, Any]:
    """A device file's entries by precision ({} when there is none); a damaged file is a one-line error."""
    if not path.exists():
        return {}
    try:
        return dict(json.loads(path.read_text())["entries"])
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path} is not a calibration file; delete it and run `dfkd-bench calibrate` again") from None
