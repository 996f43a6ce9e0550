"""The equal-time figure: student accuracy against time budget, one line per method and resolution; a config
with a seed over its budget is an × in a strip under the plot, never an accuracy."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.lines import Line2D

from .plot_layout import SPREAD_NOTE, config_stats, framed_figure, method_groups, method_legend, resolution_handles
from .plot_layout import spread, style_key, title
from .plot_results import NoData, Results, series_label, setup_title

PANEL_WIDTH_IN = 5.0
MAIN_HEIGHT_IN = 3.8
STRIP_ROW_IN = 0.22  # a row of the over-budget strip: one method's × marks
DODGE_DECADES = 0.012  # series are nudged sideways on the log axis so that their error bars do not hide each other
KEYS = ["method", "resolution", "ratio", "budget_s"]  # a budgeted run's ratio caps its images
OVER_LABEL = "over budget (no accuracy)"


def time_budget_figure(res: Results) -> Figure:
    """Mean accuracy against budget seconds (log x) with min–max bars over seeds; a panel per method kind when
    there are more than six methods; over-budget configs as × on their method's row of a strip under the panel."""
    budgeted = res.runs[res.runs["budget_s"].notna()]
    if budgeted.empty and res.over.empty:
        raise NoData(f"no time-budgeted runs in {res.folder / 'runs.csv'}; `plot time-budget` draws runs made with "
                     f"e.g. `dfkd-bench run --time-budget 5,20,60`")
    over = res.over.groupby(KEYS).size().rename("over").reset_index()
    stats = config_stats(budgeted, KEYS).merge(over, on=KEYS, how="outer").fillna({"over": 0})
    groups = [(name, methods) for name, methods in method_groups(res) if stats["method"].isin(methods).any()]
    over_methods = {name: sorted(set(over["method"]) & set(methods)) for name, methods in groups}
    strip_rows = max(len(m) for m in over_methods.values())
    fig, sub = framed_figure(PANEL_WIDTH_IN * len(groups) + 0.6, 5.0 + STRIP_ROW_IN * strip_rows)
    axes = _panels(sub, len(groups), strip_rows)
    budgets = sorted(stats["budget_s"].unique())
    for (ax, strip), (name, methods) in zip(axes, groups):
        _panel(ax, strip, res, stats[stats["method"].isin(methods)], over_methods[name], strip_rows)
        ax.set_title(name, fontsize=10)
        _budget_axis(strip if strip is not None else ax, budgets)
    axes[0][0].set_ylabel("mean student accuracy (%)")
    marks = "; ×: a seed went over its budget, no accuracy shown" if strip_rows else ""
    title(sub, f"Accuracy at equal time — {setup_title(pd.concat([res.runs, res.over]))}\n{SPREAD_NOTE}{marks}",
          PANEL_WIDTH_IN * len(groups))
    method_legend(fig, res, sorted(stats["method"].unique()))
    key = resolution_handles(res, list(stats["resolution"]))
    if strip_rows:
        key.append(Line2D([], [], linestyle="", marker="x", color="grey", label=OVER_LABEL))
    style_key(sub, key, "resolution")
    return fig


def _panel(ax: Axes, strip: Axes | None, res: Results, stats: pd.DataFrame, marked: list[str], rows: int) -> None:
    """One panel: a line per method, resolution and ratio cap, and its over-budget marks on the `marked` methods'
    rows of the strip."""
    shown = sorted(stats.groupby(KEYS[:3]).groups)
    for i, (method, resolution, ratio) in enumerate(shown):
        dodge = 10 ** ((i - (len(shown) - 1) / 2) * DODGE_DECADES)
        part = stats[(stats["method"] == method) & (stats["resolution"] == resolution)
                     & (stats["ratio"] == ratio)].sort_values("budget_s")
        _accuracy_line(ax, res, part, method, resolution, dodge)
        if strip is not None:
            _over_marks(strip, res, part, method, dodge, marked.index(method) if method in marked else -1)
    if not ((stats["over"] == 0) & stats["acc"].notna()).any():
        ax.set_ylim(0, 100)  # no accuracy to draw: the full scale, rather than matplotlib's 0 to 1
    if strip is not None:
        _strip_axis(strip, marked, rows)


def _panels(sub: SubFigure, count: int, strip_rows: int) -> list[tuple[Axes, Axes | None]]:
    """`count` accuracy panels sharing their y axis, each over a strip of `strip_rows` rows (none for 0)."""
    grid = sub.add_gridspec(2 if strip_rows else 1, count,
                            height_ratios=[MAIN_HEIGHT_IN, STRIP_ROW_IN * strip_rows + 0.3] if strip_rows else None)
    panels: list[tuple[Axes, Axes | None]] = []
    for col in range(count):
        ax = sub.add_subplot(grid[0, col], sharey=panels[0][0] if panels else None)
        strip = sub.add_subplot(grid[1, col], sharex=ax) if strip_rows else None
        if strip is not None:
            ax.tick_params(labelbottom=False)
        if col:
            ax.tick_params(labelleft=False)
        panels.append((ax, strip))
    return panels


def _accuracy_line(ax: Axes, res: Results, part: pd.DataFrame, method: str, resolution: str, dodge: float) -> None:
    """The mean accuracy at each budget all of whose seeds kept it, with min–max bars; the line breaks elsewhere."""
    kept = part[(part["over"] == 0) & part["acc"].notna()]
    acc = part["acc"].where((part["over"] == 0), np.nan)
    style = res.style(resolution)
    ax.plot(part["budget_s"] * dodge, acc, color=res.color(method), linestyle=style.linestyle, linewidth=1.2)
    ax.errorbar(kept["budget_s"] * dodge, kept["acc"], yerr=spread(kept, "acc"), color=res.color(method),
                linestyle="", marker=style.marker, capsize=3, label=series_label(method, resolution))


def _over_marks(ax: Axes, res: Results, part: pd.DataFrame, method: str, dodge: float, row: int) -> None:
    """× at each budget that a seed of the series went over, on its method's row of the strip."""
    over = part[part["over"] > 0]
    ax.plot(over["budget_s"] * dodge, [row] * len(over), linestyle="", marker="x", markersize=7,
            markeredgewidth=1.5, color=res.color(method))


def _budget_axis(ax: Axes, budgets: list[float]) -> None:
    """Log x axis with a tick at each budget."""
    ax.set_xscale("log")
    ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
    ax.minorticks_off()
    ax.set_xlim(min(budgets) / 1.4, max(budgets) * 1.4)
    ax.set_xlabel("time budget (s): synthesis + KD, log scale")


def _strip_axis(ax: Axes, methods: list[str], rows: int) -> None:
    """The over-budget strip: a row per method with an over-budget config, named on the y axis."""
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_yticks(range(len(methods)), methods, fontsize=8)
    ax.grid(False, axis="y")
    ax.set_ylabel("over budget" if methods else "", fontsize=8)
