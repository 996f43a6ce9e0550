"""Cell marks and the footnotes that explain them, from the runs' own record (pandas; no torch).

† marks a student accuracy within `CHANCE_MARGIN` points of chance, and its footnote gives the images and
student steps the runs had against the reference's step count; ‡ marks an equal-time cell that a run did not
keep (status over_budget, or seconds beyond its budget plus tolerance), with the time it needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

CHANCE_MARK = "†"
OVER_BUDGET_MARK = "‡"
CHANCE_MARGIN = 2.0        # accuracy points from chance that read as "learnt nothing"
OVER_BUDGET = "over_budget"
TOLERANCE_FRACTION = 0.05  # the budget's tolerance when a run recorded none: 5% of the budget
ROUNDING_S = 0.02          # runs.csv keeps seconds to 2 decimals: synth_s + kd_s and tolerance_s may be off this much

ClassCount = Callable[[str], "int | None"]  # a dataset's number of classes by name, for files without num_classes


def numbers(runs: pd.DataFrame, column: str) -> pd.Series:
    """A runs.csv column as floats: NaN where empty, all NaN where the file has no such column (older files)."""
    if column not in runs:
        return pd.Series(float("nan"), index=runs.index, dtype=float)
    return pd.to_numeric(runs[column], errors="coerce").astype(float)


def chance_level(runs: pd.DataFrame, classes_of: ClassCount | None = None) -> float | None:
    """100 / the runs' number of classes (`num_classes`, else `classes_of(dataset)`); None when unknown or mixed."""
    recorded = numbers(runs, "num_classes")
    datasets = runs["dataset"].astype(str) if "dataset" in runs else pd.Series("", index=runs.index)
    counts = {float(n) if pd.notna(n) else (classes_of(name) if classes_of else None)
              for n, name in zip(recorded, datasets)}
    count = counts.pop() if len(counts) == 1 else None
    return 100.0 / float(count) if count else None


def near_chance(mean: float, chance: float | None) -> bool:
    """True when an accuracy `mean` lies within CHANCE_MARGIN points of `chance`."""
    return chance is not None and pd.notna(mean) and abs(mean - chance) <= CHANCE_MARGIN


def _statuses(runs: pd.DataFrame) -> pd.Series:
    """Each run's status, stripped ("ok" for files without the column)."""
    return runs["status"].fillna("").astype(str).str.strip() if "status" in runs else pd.Series("ok", index=runs.index)


def tolerances(runs: pd.DataFrame) -> pd.Series:
    """Each run's tolerance in seconds: `tolerance_s`, or 5% of its time budget when it recorded none."""
    recorded = numbers(runs, "tolerance_s")
    return recorded.fillna(TOLERANCE_FRACTION * numbers(runs, "time_budget"))


def spent_seconds(runs: pd.DataFrame) -> pd.Series:
    """Synthesis + KD seconds of each run (what a time budget counts)."""
    return numbers(runs, "synth_s") + numbers(runs, "kd_s")


def overran(runs: pd.DataFrame) -> pd.Series:
    """Runs that did not keep their time budget: status over_budget, or a finished time-budgeted run whose
    synthesis + KD seconds went past budget + tolerance (runs made before budgets were enforced)."""
    beyond = spent_seconds(runs) > numbers(runs, "time_budget") + tolerances(runs) + ROUNDING_S
    return (_statuses(runs) == OVER_BUDGET) | beyond.fillna(False)


def _span(values: pd.Series, fmt: str = "{:.0f}") -> str:
    """`lo–hi` (or one value) of the known values; "" when none is known."""
    known = values.dropna()
    if known.empty:
        return ""
    lo, hi = fmt.format(known.min()), fmt.format(known.max())
    return lo if lo == hi else f"{lo}–{hi}"


def chance_reason(runs: pd.DataFrame) -> str:
    """What the runs had under their budget: images and student steps, against the reference's step count."""
    images = _span(numbers(runs, "n_synthetic"))
    steps = _span(numbers(runs, "kd_steps"))
    paper = _span(numbers(runs, "paper_kd_steps"))
    budgets = sorted({b or "images" for b in runs.get("budget", pd.Series("", index=runs.index))
                     .fillna("").astype(str).str.strip()})
    setting = ", ".join(f"budget={b}" for b in budgets)
    seconds = _span(numbers(runs, "time_budget"), "{:g}")
    if seconds:
        setting += f", time budget {seconds} s"
    had = f"its runs had {images or 'an unrecorded number of'} images"
    had += f" and {steps} student steps ({setting})" if steps else f" ({setting})"
    if paper:
        had += f"; its reference trains {paper} student steps (budget=steps)"
    if not steps:
        had += "; their student steps " + ("were" if paper else "and the reference's step count were") + " not recorded"
    return had


def over_budget_reason(runs: pd.DataFrame) -> str:
    """How many of a cell's runs overran and the time they needed: the smallest unit of work (`unit_s`) when
    that did not fit, else the synthesis + KD seconds against budget + tolerance."""
    over = runs[overran(runs)]
    budget = _span(numbers(over, "time_budget"), "{:g}")
    unit = numbers(over, "unit_s")
    parts = []
    if unit.notna().any():
        parts.append(f"{unit.notna().sum()} of {len(runs)} runs needed {_span(unit, '{:.2f}')} s for their smallest "
                     f"unit of work")
    rest = over[unit.isna()]
    if not rest.empty:
        spent = _span(spent_seconds(rest), "{:.1f}")
        parts.append(f"{len(rest)} of {len(runs)} runs " + (
            f"ran {spent} s against {budget} s + {_span(tolerances(rest), '{:.2f}')} s" if spent
            else "recorded no seconds"))
    return "; ".join(parts)


@dataclass
class Footnotes:
    """The footnotes under one table: one line per table row and kind of mark, chance lines first."""

    chance: dict[str, list[tuple[str, pd.DataFrame, float]]] = field(default_factory=dict)
    over_budget: dict[str, list[tuple[str, pd.DataFrame]]] = field(default_factory=dict)

    def mark(self, row: str, where: str, runs: pd.DataFrame, accuracy: float, classes_of: ClassCount | None) -> str:
        """The mark of cell `where` of row `row` (its `runs`, their mean `accuracy`, NaN for other metrics),
        its footnote added: ‡ when a run overran its budget, † when the accuracy is near chance, else ""."""
        if overran(runs).any():  # an equal-time cell holds only if every run kept the budget
            self.add_over_budget(row, where, runs)
            return OVER_BUDGET_MARK
        chance = chance_level(runs, classes_of)
        if near_chance(accuracy, chance):
            self.add_chance(row, where, runs, chance)  # type: ignore[arg-type]
            return CHANCE_MARK
        return ""

    def add_chance(self, row: str, where: str, runs: pd.DataFrame, chance: float) -> None:
        """Cell `where` of table row `row` is within CHANCE_MARGIN points of `chance`; `runs` are its runs."""
        self.chance.setdefault(row, []).append((where, runs, chance))

    def add_over_budget(self, row: str, where: str, runs: pd.DataFrame) -> None:
        """Cell `where` of table row `row` has runs that overran; `runs` are all of its runs."""
        self.over_budget.setdefault(row, []).append((where, runs))

    def lines(self) -> list[str]:
        """The footnote lines, each starting with its mark and naming the row and the cells it explains."""
        out = []
        for row, marked in self.chance.items():
            levels = ", ".join(sorted({f"{c:g}%" for _, _, c in marked}))
            runs = pd.concat([r for _, r, _ in marked])
            out.append(f"{CHANCE_MARK} {row} at {_places([w for w, _, _ in marked])}: within {CHANCE_MARGIN:g} "
                       f"points of chance ({levels}); {chance_reason(runs)}.")
        for row, marked in self.over_budget.items():
            cells = "; ".join(f"{where}: {over_budget_reason(runs)}" for where, runs in marked)
            out.append(f"{OVER_BUDGET_MARK} {row}, over its time budget at {cells}.")
        if self.over_budget:
            out.append(self._over_budget_rule())
        return out

    def _over_budget_rule(self) -> str:
        """What every ‡ line shares: the rule for a time-budgeted cell, and the tolerance assumed for old runs."""
        runs = pd.concat([r for marked in self.over_budget.values() for _, r in marked])
        rule = (f"{OVER_BUDGET_MARK} A time-budgeted cell shows a value only when every run kept its budget "
                f"(synthesis + KD seconds within budget + tolerance) and its smallest unit of work fitted")
        if numbers(runs[overran(runs)], "tolerance_s").isna().any():
            rule += f"; runs that recorded no tolerance are given {TOLERANCE_FRACTION:.0%} of the budget"
        return rule + "."


def _places(wheres: list[str]) -> str:
    """Cells named together: `ratio=0.02, 0.05` when they differ in one key, else `a=1, b=2; a=1, b=3`."""
    pairs = [w.split("=", 1) for w in wheres]
    if all(len(p) == 2 and "=" not in p[1] and p[0] == pairs[0][0] for p in pairs):
        return f"{pairs[0][0]}=" + ", ".join(p[1] for p in pairs)
    return "; ".join(wheres)


def markdown_lines(footnotes: list[str]) -> list[str]:
    """Footnote lines for markdown, each followed by a blank line so that they stay apart when rendered."""
    return [part for line in footnotes for part in (line, "")]
