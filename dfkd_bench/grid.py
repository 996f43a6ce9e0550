"""Grids of runs: expansion of lists into run configurations, the method list and output folder checks,
and what a grid would do without running it (`sweep --dry-run`)."""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from .options import OPTIONS, RunConfig
from .errors import UserError
from .outputs import FINISHED, read_runs
from .plugins import METHODS
from .resolve import ResolvedRun, resolve_all


def expand(methods: Sequence[str], base: RunConfig, axes: dict[str, list[Any]] | None = None,
           pairs: Sequence[tuple[str | None, str | None]] = ((None, None),),
           overrides: dict[str, dict[str, str]] | None = None) -> list[RunConfig]:
    """The grid of run configurations: methods x pairs x the values of each option that sweeps (`axes`,
    in `RunConfig`'s order: ratios, resolutions, time budgets, seeds). A multi-resolution set makes a run
    only for the methods that generate at several resolutions, next to their single resolutions."""
    axes = axes or {}
    multi_sets = axes.get("multi_resolution", [])
    if multi_sets and not any(METHODS.get(m).multi_resolution for m in methods):
        several = [m for m in METHODS.names() if METHODS.get(m).multi_resolution]
        given = ";".join(",".join(str(r) for r in m) for m in multi_sets)
        raise UserError(f"--multi-resolution {given}: {', '.join(methods)} generates at one resolution; the "
                        f"methods that generate at several: {', '.join(several)}")
    configs = []
    for method, (teacher, student) in itertools.product(methods, pairs):
        generation = [{"resolution": r} for r in axes.get("resolution", [])]
        if METHODS.get(method).multi_resolution:
            generation += [{"multi_resolution": m} for m in multi_sets]
        choices = [generation or [{}] if name == "resolution" else [{name: v} for v in axes.get(name, [])] or [{}]
                   for name, opt in OPTIONS.items() if opt.sweeps and name != "multi_resolution"]
        for combination in itertools.product(*choices):
            chosen = {key: value for part in combination for key, value in part.items()}
            configs.append(replace(base, method=method, teacher=teacher or base.teacher,
                                   student=student or base.student,
                                   overrides=dict((overrides or {}).get(method, base.overrides)), **chosen))
    return configs


def method_names(methods: Sequence[str] | str) -> list[str]:
    """The methods of a run list, each known; an empty or repeated name is dropped with one warning."""
    given = [m.strip().lower() for m in (methods.split(",") if isinstance(methods, str) else methods)]
    names = list(dict.fromkeys(m for m in given if m))
    if not names:
        raise UserError(f"no methods given; choose from: {', '.join(METHODS.names())}")
    for name in names:
        METHODS.get(name)
    if len(names) != len(given):
        repeated = sorted({m for m in given if m and given.count(m) > 1})
        what = [f"repeated {', '.join(repeated)}" if repeated else "", "empty names" if "" in given else ""]
        warnings.warn(f"--methods: dropped {' and '.join(w for w in what if w)}; running {','.join(names)}")
    return names


def check_out_dir(out: str | Path) -> None:
    """Refuse an output folder that cannot be one (an existing file, or under one) before any work."""
    path = Path(out)
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            raise UserError(f"--out {out}: {part} is a file, not a folder; choose a folder for the results")


@dataclass
class PlannedRun:
    """A run of a grid as `sweep --dry-run` shows it: its id, status, images and estimated seconds."""

    resolved: ResolvedRun
    status: str                # done, partial (a checkpoint to resume) or to do
    estimate_s: float | None   # from finished runs of the same method and dataset, when there are any


def plan(configs: Sequence[RunConfig], out_dir: str | Path = "results") -> list[PlannedRun]:
    """What a grid would do, without running anything: each run's status in `out_dir` and, for runs
    still to do, seconds estimated as images x the seconds per image of finished runs of the same
    method and dataset (at most its time budget)."""
    out_dir = Path(out_dir)
    finished = read_runs(out_dir)
    per_image: dict[tuple[str, str], tuple[float, int]] = {}
    for row in finished.values():
        try:
            seconds, images = float(row.get("total_s") or "nan"), int(float(row.get("n_synthetic") or 0))
        except ValueError:
            continue
        if row.get("status") == "ok" and math.isfinite(seconds) and images > 0:
            total, count = per_image.get((row["method"], row["dataset"]), (0.0, 0))
            per_image[(row["method"], row["dataset"])] = (total + seconds, count + images)
    planned = []
    for res in resolve_all(configs, need_data=False):
        prior = finished.get(res.run_id)
        if prior and prior.get("status") in FINISHED:
            status = "done"
        elif (out_dir / "runs" / res.run_id / "checkpoint.pt").exists():
            status = "partial"
        else:
            status = "to do"
        rate = per_image.get((res.method_cls.name, res.spec.name))
        estimate = rate[0] / rate[1] * res.n_synthetic if rate and status != "done" else None
        budget = res.config.time_budget
        if budget and status != "done":  # a budgeted run stops at its budget (within about a round)
            estimate = min(estimate, budget) if estimate is not None else float(budget)
        planned.append(PlannedRun(res, status, estimate))
    return planned
