"""The runs a figure draws: one results folder's finished runs, split into those that kept their time budget
and those that went over it, with one colour per method and one style per resolution (no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import seaborn as sns

from ..errors import UserError
from .footnotes import overran
from .tables import chosen_methods, mixed_precision, read_runs_csv, require_runs_csv

LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
HATCHES = ["", "//", "..", "xx", "\\\\", "++"]
DEFAULT_BUDGETS = ("", "images")  # the `budget` column of runs on the default image budget (empty in old files)
# Sample source "online" of the built-in methods (methods/*.py declare it on the class, but the report
# layer imports no torch, so it cannot ask them); a run with paper_kd_steps is online too.
ONLINE_METHODS = frozenset({"dafl", "dfad", "dfq", "zskt"})
CONFIG = ["method", "resolution", "ratio", "time_budget"]  # the seeds of one config share all of these
Color = tuple[float, float, float]


class NoData(UserError):
    """A figure kind with nothing to draw in these results (e.g. no method run at two resolutions)."""


@dataclass(frozen=True)
class Style:
    """How one resolution is drawn in every figure."""

    linestyle: str
    marker: str
    hatch: str


@dataclass(frozen=True)
class Results:
    """A results folder's finished (non-smoke, default image budget) runs: `runs` kept their time budget (or had
    none) and hold an accuracy; `over` went over their time budget and hold none. `palette` is fixed over the
    folder's methods, so a `--methods` selection keeps each method's colour."""

    folder: Path
    runs: pd.DataFrame
    over: pd.DataFrame
    palette: dict[str, Color]

    @property
    def methods(self) -> list[str]:
        """Method names, sorted."""
        return sorted(set(self.runs["method"]) | set(self.over["method"]))

    def color(self, method: str) -> Color:
        """The colour of `method` in every figure of these results."""
        return self.palette[method]

    def style(self, resolution: str) -> Style:
        """The line style, marker and hatch of `resolution` in every figure of these results."""
        resolutions = sorted(set(self.runs["resolution"]) | set(self.over["resolution"]), key=resolution_key)
        i = resolutions.index(resolution)
        return Style(LINESTYLES[i % len(LINESTYLES)], MARKERS[i % len(MARKERS)], HATCHES[i % len(HATCHES)])

    def unbudgeted(self) -> pd.DataFrame:
        """Runs without a time budget (their ratio is the number of images they made)."""
        return self.runs[self.runs["time_budget"] == ""]

    def within_budget(self) -> pd.DataFrame:
        """Runs of the configs none of whose seeds went over the time budget (a mean over the seeds that kept
        it would flatter the config)."""
        over = pd.MultiIndex.from_frame(self.over[CONFIG])
        return self.runs[~pd.MultiIndex.from_frame(self.runs[CONFIG]).isin(over)]

    def online_methods(self) -> set[str]:
        """The methods that train on fresh generator output (the rest synthesise into a bank)."""
        every = pd.concat([self.runs, self.over])
        declared = every["paper_kd_steps"].fillna("").astype(str).str.strip() != ""
        return {m for m in self.methods if m in ONLINE_METHODS} | set(every.loc[declared, "method"])


def method_palette(methods: list[str]) -> dict[str, Color]:
    """A fixed method -> colour mapping from the sorted set of names (colorblind palette; husl past ten)."""
    names = sorted(set(methods))
    colors = sns.color_palette("colorblind" if len(names) <= 10 else "husl", len(names))
    return dict(zip(names, colors))


def resolution_key(resolution: str) -> tuple[int, tuple[int, ...]]:
    """Sort key for resolution strings: single sizes by size, then multi-resolution sets such as `16+32`."""
    sizes = tuple(int(float(p)) for p in str(resolution).split("+") if p.strip())
    return len(sizes), sizes


def text_column(df: pd.DataFrame, name: str) -> pd.Series:
    """Column `name` as stripped text, empty where missing (older runs.csv files lack the newer columns)."""
    if name not in df:
        return pd.Series("", index=df.index, dtype=object)
    return df[name].map(lambda v: "" if pd.isna(v) else str(v).strip())


def load_results(folder: str | Path) -> Results:
    """The finished runs of `folder/runs.csv`; a UserError when it is missing or holds none."""
    folder = Path(folder)
    require_runs_csv(folder)
    df = read_runs_csv(folder)
    df = df.assign(status=text_column(df, "status"), paper_kd_steps=text_column(df, "paper_kd_steps"),
                   resolution=text_column(df, "resolution"),
                   budget_s=pd.to_numeric(df["time_budget"], errors="coerce"))
    df = df[text_column(df, "budget").isin(DEFAULT_BUDGETS) & df["status"].isin(["ok", "over_budget"])]
    over = overran(df)
    if df.empty:
        raise UserError(f"no finished (status ok or over_budget, non-smoke) runs in {folder / 'runs.csv'}")
    if mixed_precision(df):  # a figure's means over seeds would average bf16 and fp32 runs
        raise UserError(f"{folder / 'runs.csv'} mixes precisions ({', '.join(sorted(set(df['amp'])))}); "
                        f"figures need runs of one: put each precision's runs in its own folder")
    return Results(folder, df[~over].reset_index(drop=True), df[over].reset_index(drop=True),
                   method_palette(list(df["method"])))


def select_methods(res: Results, names: str) -> Results:
    """Only the comma-separated methods `names` (colours unchanged); a UserError naming the choices otherwise."""
    wanted = chosen_methods(names, res.methods)
    return Results(res.folder, res.runs[res.runs["method"].isin(wanted)].reset_index(drop=True),
                   res.over[res.over["method"].isin(wanted)].reset_index(drop=True), res.palette)


def setup_title(runs: pd.DataFrame) -> str:
    """`dataset: teacher → student` of the runs (normally one setup per results folder)."""
    setups = runs[["dataset", "teacher", "student"]].drop_duplicates().itertuples(index=False)
    return "; ".join(f"{d}: {t} → {s}" for d, t, s in setups)


def series_label(method: str, resolution: str) -> str:
    """Legend text of one method at one resolution."""
    return f"{method} {resolution}px"
