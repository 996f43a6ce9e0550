"""MUSE figure 3: per method run at two or more single resolutions, accuracy and total seconds against ratio,
one bar per resolution with min–max bars over seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .plot_layout import RATIO_LABEL, SPREAD_NOTE, config_stats, framed_figure, spread, title
from .plot_results import NoData, Results, resolution_key, setup_title

PLOTS_WIDTH_IN = 10.0
ROW_HEIGHT_IN = 3.0


def resolution_figure(res: Results) -> Figure:
    """A row per method: accuracy (left) and total seconds (right) by ratio, bars side by side per resolution."""
    runs = res.unbudgeted()
    runs = runs[~runs["resolution"].str.contains("+", regex=False)]
    counts = runs.groupby("method")["resolution"].nunique()
    methods = sorted(counts[counts >= 2].index)
    if not methods:
        raise NoData(f"no method was run at two or more single resolutions in {res.folder / 'runs.csv'}; "
                     f"`plot resolution` compares e.g. `dfkd-bench run --resolution 16,32`")
    stats = config_stats(runs[runs["method"].isin(methods)], ["method", "resolution", "ratio"])
    fig, sub = framed_figure(PLOTS_WIDTH_IN, ROW_HEIGHT_IN * len(methods) + 1.0)
    axes = sub.subplots(len(methods), 2, squeeze=False)
    for (acc_ax, time_ax), method in zip(axes, methods):
        part = stats[stats["method"] == method]
        _grouped_bars(acc_ax, res, part, "acc")
        _grouped_bars(time_ax, res, part, "total")
        acc_ax.set_ylabel("mean student\naccuracy (%)")
        time_ax.set_ylabel("mean total time\nper run (s)")
        acc_ax.set_title(f"{method}: accuracy by resolution", fontsize=10)
        time_ax.set_title(f"{method}: total time by resolution", fontsize=10)
    title(sub, f"Generation resolution — {setup_title(runs)}\n{SPREAD_NOTE}", PLOTS_WIDTH_IN)
    resolutions = sorted(stats["resolution"].unique(), key=resolution_key)
    handles = [Patch(facecolor="white", edgecolor="black", hatch=res.style(r).hatch, label=f"{r}px")
               for r in resolutions]
    fig.legend(handles=handles, title="resolution\n(bar hatch)", loc="outside right upper", fontsize=8,
               title_fontsize=9)
    return fig


def _grouped_bars(ax: Axes, res: Results, part: pd.DataFrame, value: str) -> None:
    """Bars of `value` (min–max bars over seeds) per ratio, side by side per resolution, in the method colour."""
    ratios = sorted(part["ratio"].unique())
    resolutions = sorted(part["resolution"].unique(), key=resolution_key)
    width = 0.8 / len(resolutions)
    x = np.arange(len(ratios))
    for i, resolution in enumerate(resolutions):
        rows = part[part["resolution"] == resolution].set_index("ratio").reindex(ratios)
        ax.bar(x + (i - (len(resolutions) - 1) / 2) * width, rows[value], width, yerr=spread(rows, value),
               capsize=3, color=res.color(part["method"].iloc[0]), hatch=res.style(resolution).hatch,
               edgecolor="black", linewidth=0.6, label=f"{resolution}px")
    ax.set_xticks(x, [f"{r:g}" for r in ratios])
    ax.set_xlabel(RATIO_LABEL, fontsize=9)
