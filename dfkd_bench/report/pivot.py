"""Pivot tables of runs.csv: one metric as `mean ± std (n)` cells over any row and column keys (pandas; no torch).

Only non-smoke rows with `status` ok (or over_budget, see below) count; what was left out (and why) is
returned with the table. The best own-result cell of each column is marked (highest mean accuracy,
lowest seconds); published reference numbers (`assets/reference/published_results.csv`) can be added
as extra rows, for accuracy only. A cell with a run that overran its time budget shows `—‡`, never a
number; an accuracy near chance is marked `†`; footnotes say why. Results that mix precisions get `amp`
added to the row keys (unless it is a key already), so no cell averages bf16 and fp32 runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..errors import UserError
from . import latex
from .footnotes import OVER_BUDGET, OVER_BUDGET_MARK, ClassCount, Footnotes, markdown_lines
from .tables import add_time_to_accuracy, chosen_methods, is_smoke, mixed_precision, read_runs_csv

PUBLISHED_CSV = Path(__file__).resolve().parent.parent / "assets" / "reference" / "published_results.csv"
PUBLISHED_KEYS = ("method", "dataset", "teacher", "student")
ACCURACY_METRICS = ("student_acc", "teacher_acc")
SECONDS_METRICS = ("total_s", "synth_s", "kd_s", "eval_s")
COUNT_METRICS = ("n_synthetic",)  # images made: under a time budget, how many a method gets done (more is better)
CHANCE_METRICS = ("student_acc",)  # the metrics whose cells are marked near chance
_TTA = re.compile(r"^t(\d+(?:\.\d+)?)_s$")


@dataclass
class Cell:
    """One table cell: mean, std over seeds (ddof=1; shown as — for one run) and how many runs; or a published
    number. `mark` is a footnote mark: † after a mean near chance, ‡ after the — of a cell over its budget."""

    mean: float = float("nan")
    std: float = 0.0
    n: int = 0
    published: list[float] = field(default_factory=list)
    best: bool = False
    mark: str = ""

    def text(self) -> str:
        if self.published:
            return " / ".join(f"{v:.1f}" for v in self.published)
        if self.n == 0:
            return "—" + self.mark
        spread = f"{self.std:.1f}" if self.n > 1 else "—"  # one run has no spread to report
        return f"{self.mean:.1f}{self.mark} ± {spread} ({self.n})"


@dataclass
class Pivot:
    """A pivoted table: row keys, column keys, one label tuple per row/column, cells[row][col]."""

    rows: list[str]
    cols: list[str]
    metric: str
    row_labels: list[tuple[str, ...]]
    col_labels: list[tuple[str, ...]]
    cells: list[list[Cell]]
    left_out: dict[str, int]
    note: str = ""
    footnotes: list[str] = field(default_factory=list)

    def column_titles(self) -> list[str]:
        return [_title(self.cols, label) for label in self.col_labels]

    def left_out_line(self) -> str:
        parts = [f"{n} {why}" for why, n in self.left_out.items() if n]
        return "left out: " + (", ".join(parts) if parts else "none")


def _title(keys: list[str], label: tuple[str, ...]) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(keys, label))


def _row_name(keys: list[str], label: tuple[str, ...]) -> str:
    """A table row as a footnote names it: `dfad` or `dfad, resolution=16`."""
    return ", ".join(v if k == "method" else f"{k}={v}" for k, v in zip(keys, label))


def _label(value: Any) -> str:
    if isinstance(value, float):
        return "" if pd.isna(value) else format(value, "g")
    return str(value)


def metric_column(metric: str, threshold: float | None) -> tuple[str, float | None]:
    """The column a `--metric` reads and, for `t<threshold>_s`, the threshold it needs."""
    if metric in ACCURACY_METRICS + SECONDS_METRICS + COUNT_METRICS:
        if threshold is not None:
            raise UserError(f"--threshold {threshold:g} is for --metric t<threshold>_s (e.g. t{threshold:g}_s), "
                            f"not {metric}")
        return metric, None
    m = _TTA.match(metric)
    if not m:
        raise UserError(f"unknown metric {metric!r}; choose from "
                        f"{', '.join(ACCURACY_METRICS + SECONDS_METRICS + COUNT_METRICS)} "
                        f"or t<threshold>_s (e.g. t95_s)")
    named = float(m.group(1))
    if threshold is not None and threshold != named:
        raise UserError(f"--metric {metric} asks for {named:g}% but --threshold is {threshold:g}; give one of them")
    return f"t{named:g}_s", named


def split_keys(value: str | Sequence[str], option: str) -> list[str]:
    keys = [k.strip() for k in (value.split(",") if isinstance(value, str) else value) if k.strip()]
    if not keys:
        raise UserError(f"{option} needs at least one runs.csv column")
    return keys


def load_published(path: Path = PUBLISHED_CSV) -> pd.DataFrame:
    df = pd.read_csv(path, dtype=str)
    df["accuracy"] = pd.to_numeric(df["accuracy"], errors="coerce")
    return df


def only_methods(runs: pd.DataFrame, methods: str | None) -> pd.DataFrame:
    """The runs of the comma-separated `methods` (all when None); a name with no runs is refused."""
    if methods is None:
        return runs
    wanted = chosen_methods(methods, runs["method"].astype(str) if "method" in runs else [])
    return runs[runs["method"].isin(wanted)].reset_index(drop=True)


def build_pivot(out_dir: str | Path, rows: str | Sequence[str] = "method", cols: str | Sequence[str] = "ratio",
                metric: str = "student_acc", threshold: float | None = None, published: bool = False,
                classes_of: ClassCount | None = None, methods: str | None = None) -> Pivot:
    """Pivot `out_dir/runs.csv` (status ok, non-smoke rows; over_budget ones as `—‡` cells) of `metric` over
    `rows` x `cols`, of `methods` only when given. `classes_of` gives a dataset's class count for files that
    did not record `num_classes`."""
    row_keys, col_keys = split_keys(rows, "--rows"), split_keys(cols, "--cols")
    both = [k for k in row_keys if k in col_keys]
    if both:
        raise UserError(f"{', '.join(both)} is in both --rows and --cols")
    column, tta = metric_column(metric, threshold)

    every = only_methods(read_runs_csv(out_dir, include_smoke=True), methods)
    unknown = [k for k in row_keys + col_keys if k not in every.columns]
    if unknown:
        raise UserError(f"unknown runs.csv column(s) {', '.join(unknown)}; choose from {', '.join(every.columns)}")
    smoke = is_smoke(every)
    status = every.get("status", pd.Series("ok", index=every.index)).fillna("").astype(str).str.strip()
    counted = status.isin(["ok", OVER_BUDGET])
    left_out: dict[str, int] = {"smoke": int(smoke.sum())}
    for why, n in status[~smoke & ~counted].replace("", "no status").value_counts(sort=False).items():
        left_out[str(why)] = int(n)
    df = every[~smoke & counted].assign(status=status).reset_index(drop=True)
    df = _budget_rows(df, row_keys + col_keys, left_out)
    df = _image_budget_rows(df, row_keys + col_keys, left_out)
    if "amp" not in row_keys + col_keys and mixed_precision(df):
        row_keys = row_keys + ["amp"]  # a cell never averages bf16 and fp32 runs: the rows name the precision
    if df.empty:
        raise UserError(f"no finished (status ok, non-smoke) runs in {Path(out_dir) / 'runs.csv'}; "
                        f"{Pivot([], [], metric, [], [], [], left_out).left_out_line()}")
    if tta is not None:
        df = add_time_to_accuracy(df, out_dir, tta)
    elif column not in df.columns:
        raise UserError(f"runs.csv has no {column} column")
    df = df.assign(**{column: pd.to_numeric(df[column], errors="coerce")})

    groups = _groups(df, row_keys + col_keys)
    row_labels = sorted({k[: len(row_keys)] for k in groups}, key=_sort_key)
    col_labels = sorted({k[len(row_keys):] for k in groups}, key=_sort_key)
    marker = _Marker(column, classes_of)
    cells = [[marker.cell(groups.get(r + c), _row_name(row_keys, r), _title(col_keys, c)) for c in col_labels]
             for r in row_labels]
    _mark_best(cells, lower_is_better=column not in ACCURACY_METRICS + COUNT_METRICS)

    note = ""
    if published:
        if column == "student_acc":
            row_labels, cells = _add_published(df, row_keys, col_keys, row_labels, col_labels, cells)
        else:
            note = f"published numbers are accuracy only; none shown for {column}"
    return Pivot(row_keys, col_keys, column, row_labels, col_labels, cells, left_out, note, marker.footnotes.lines())


def _groups(df: pd.DataFrame, keys: list[str]) -> dict[tuple[str, ...], pd.DataFrame]:
    """The runs of each cell, keyed by their row + column labels."""
    positions: dict[tuple[str, ...], list[int]] = {}
    for i, values in enumerate(df[keys].itertuples(index=False, name=None)):
        positions.setdefault(tuple(_label(v) for v in values), []).append(i)
    return {label: df.iloc[rows] for label, rows in positions.items()}


@dataclass
class _Marker:
    """Makes the cells of one table from their runs, marking (and footnoting) cells near chance or over budget."""

    column: str
    classes_of: ClassCount | None
    footnotes: Footnotes = field(default_factory=Footnotes)

    def cell(self, runs: pd.DataFrame | None, row: str, where: str) -> Cell:
        if runs is None:
            return Cell()
        values = runs[self.column].dropna()
        mean = float(values.mean()) if not values.empty else float("nan")
        mark = self.footnotes.mark(row, where, runs, mean if self.column in CHANCE_METRICS else float("nan"),
                                   self.classes_of)
        if mark == OVER_BUDGET_MARK or values.empty:
            return Cell(mark=mark)
        return Cell(mean=mean, std=float(values.std(ddof=1)) if len(values) > 1 else 0.0, n=len(values), mark=mark)


def _budget_rows(df: pd.DataFrame, keys: list[str], left_out: dict[str, int]) -> pd.DataFrame:
    """Time-budgeted runs when time_budget is a row or column key, otherwise the unbudgeted ones: a cell
    never averages runs stopped by different budgets (or by none)."""
    budget = df["time_budget"] if "time_budget" in df else pd.Series("", index=df.index)
    budgeted = budget.fillna("").astype(str).str.strip() != ""
    if "time_budget" in keys:
        left_out["without a time budget"] = int((~budgeted).sum())
        return df[budgeted].reset_index(drop=True)
    left_out["time-budgeted (add time_budget to --rows or --cols)"] = int(budgeted.sum())
    return df[~budgeted].reset_index(drop=True)


def _image_budget_rows(df: pd.DataFrame, keys: list[str], left_out: dict[str, int]) -> pd.DataFrame:
    """Online runs on another budget than the default (budget=fresh or steps) stay apart from the rest
    unless `budget` is a row or column key, so a cell never averages two budgets."""
    if "budget" in keys or "budget" not in df:
        return df
    other = ~df["budget"].fillna("").astype(str).str.strip().isin(["", "images"])
    if other.any():
        left_out["on another budget (add budget to --rows or --cols)"] = int(other.sum())
    return df[~other].reset_index(drop=True)


def _sort_key(label: tuple[str, ...]) -> tuple:
    def one(v: str) -> tuple:
        try:
            return (0, float(v), "")
        except ValueError:
            return (1, 0.0, v)
    return tuple(one(v) for v in label)


def _mark_best(cells: list[list[Cell]], lower_is_better: bool) -> None:
    for j in range(len(cells[0]) if cells else 0):
        column = [row[j] for row in cells if row[j].n]
        if not column:
            continue
        best = (min if lower_is_better else max)(c.mean for c in column)
        for c in column:
            c.best = round(c.mean, 1) == round(best, 1)


def _add_published(df: pd.DataFrame, row_keys: list[str], col_keys: list[str], row_labels: list[tuple[str, ...]],
                   col_labels: list[tuple[str, ...]], cells: list[list[Cell]]
                   ) -> tuple[list[tuple[str, ...]], list[list[Cell]]]:
    """Rows of published accuracy for the dataset and teacher/student pairs that the results hold."""
    pub = load_published()
    setups = {tuple(str(v) for v in t) for t in df[["dataset", "teacher", "student"]].drop_duplicates().itertuples(
        index=False)} if {"dataset", "teacher", "student"} <= set(df.columns) else set()
    pub = pub[[(d, t, s) in setups for d, t, s in zip(pub["dataset"], pub["teacher"], pub["student"])]]
    pub = pub[pub["accuracy"].notna()]
    extra: dict[tuple[str, ...], list[Cell]] = {}
    for entry in pub.to_dict("records"):
        label = [str(entry[k]) if k in PUBLISHED_KEYS else "" for k in row_keys]
        label[0] = f"{label[0]} (published)".strip()
        row = extra.setdefault(tuple(label), [Cell() for _ in col_labels])
        for j, col in enumerate(col_labels):
            if all(str(entry[k]) == v for k, v in zip(col_keys, col) if k in PUBLISHED_KEYS):
                if float(entry["accuracy"]) not in row[j].published:
                    row[j].published.append(float(entry["accuracy"]))
    ordered = sorted(extra, key=_sort_key)
    return row_labels + ordered, cells + [extra[k] for k in ordered]


def render_markdown(p: Pivot) -> str:
    header = p.rows + p.column_titles()
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for label, row in zip(p.row_labels, p.cells):
        texts = [f"**{c.text()}**" if c.best else c.text() for c in row]
        lines.append("| " + " | ".join(list(label) + texts) + " |")
    tail = [p.note] if p.note else []
    return "\n".join(lines + [""] + markdown_lines(p.footnotes) + tail + [p.left_out_line()])


def render_latex(p: Pivot) -> str:
    header = [latex.escape(h) for h in p.rows + p.column_titles()]
    lines = [r"\begin{tabular}{" + "l" * len(p.rows) + "r" * len(p.col_labels) + "}", r"\toprule",
             " & ".join(header) + r" \\", r"\midrule"]
    for label, row in zip(p.row_labels, p.cells):
        texts = [rf"\textbf{{{latex.typeset(c.text())}}}" if c.best else latex.typeset(c.text()) for c in row]
        lines.append(" & ".join([latex.escape(v) for v in label] + texts) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", *latex.footnote_lines(p.footnotes)]
    tail = [f"% {p.note}"] if p.note else []
    return "\n".join(lines + tail + [f"% {p.left_out_line()}"])


def render_csv(p: Pivot) -> str:
    """Pivot as CSV (cell text, no bold); the left-out line is not part of it."""
    frame = pd.DataFrame([list(label) + [c.text() for c in row] for label, row in zip(p.row_labels, p.cells)],
                         columns=p.rows + p.column_titles())
    return frame.to_csv(index=False)
