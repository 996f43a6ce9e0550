"""MUSE figure 1: mean total seconds against mean accuracy per config, bubble area by data ratio."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .plot_layout import config_stats, framed_figure, method_groups, method_legend, resolution_handles, style_key
from .plot_layout import title
from .plot_results import NoData, Results, series_label, setup_title

BUBBLE_MAX = 900.0  # points², the area of the largest ratio's bubble
PANEL_WIDTH_IN = 5.0
ACC_LABEL = "mean student accuracy (%)"
TIME_LABEL = "mean total time per run (s):\nsynthesis + KD + eval"


def time_accuracy_figure(res: Results) -> Figure:
    """One line of bubbles per method and resolution in ratio order (runs without a time budget; budgeted runs
    are in the time-budget figure); a panel per method kind when there are more than six methods."""
    runs = res.unbudgeted()
    if runs.empty:
        raise NoData(f"only time-budgeted runs in {res.folder / 'runs.csv'}; `plot time-accuracy` needs runs without "
                     f"a time budget (`plot time-budget` draws budgeted ones)")
    stats = config_stats(runs, ["method", "resolution", "ratio"])
    scale = BUBBLE_MAX / stats["ratio"].max()
    groups = [(name, methods) for name, methods in method_groups(res) if stats["method"].isin(methods).any()]
    fig, sub = framed_figure(PANEL_WIDTH_IN * len(groups) + 0.6, 6.0)
    axes = sub.subplots(1, len(groups), sharey=True, squeeze=False)[0]
    for ax, (name, methods) in zip(axes, groups):
        for (method, resolution), part in stats[stats["method"].isin(methods)].groupby(["method", "resolution"]):
            _bubble_series(ax, res, part.sort_values("ratio"), method, resolution, scale)
        ax.margins(0.12)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(TIME_LABEL)
    axes[0].set_ylabel(ACC_LABEL)
    budgeted = "; time-budgeted runs: `plot time-budget`" if (res.runs["time_budget"] != "").any() else ""
    title(sub, f"Accuracy against time — {setup_title(runs)}\nruns without a time budget{budgeted}",
          PANEL_WIDTH_IN * len(groups))
    method_legend(fig, res, sorted(stats["method"].unique()))
    bubbles = _ratio_handles(sorted(stats["ratio"].unique()), scale)
    diameter = math.sqrt(BUBBLE_MAX)
    style_key(sub, resolution_handles(res, list(stats["resolution"])) + bubbles,
              "resolution (line, marker) and data ratio (bubble area)", most_per_row=8,
              borderpad=diameter / 16, handlelength=diameter / 8, columnspacing=1.5)
    return fig


def _bubble_series(ax: Axes, res: Results, part: pd.DataFrame, method: str, resolution: str, scale: float) -> None:
    """One joined series of bubbles, their areas proportional to the ratio."""
    color, style = res.color(method), res.style(resolution)
    ax.plot(part["total"], part["acc"], color=color, linestyle=style.linestyle, linewidth=1.2, zorder=1,
            label=series_label(method, resolution))
    ax.scatter(part["total"], part["acc"], s=part["ratio"] * scale, marker=style.marker, facecolors=color,
               edgecolors=color, alpha=0.7, linewidths=1.5, zorder=2)


def _ratio_handles(ratios: list[float], scale: float, most: int = 5) -> list[Line2D]:
    """Grey legend bubbles for a few ratios (at most `most`, spread over the range) at their plotted areas."""
    shown = [ratios[i] for i in sorted({round(j) for j in np.linspace(0, len(ratios) - 1, min(most, len(ratios)))})]
    return [Line2D([], [], linestyle="", marker="o", markersize=math.sqrt(r * scale), color="grey", alpha=0.5,
                   label=f"ratio {r:g}") for r in shown]
