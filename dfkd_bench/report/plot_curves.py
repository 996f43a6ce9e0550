"""Training curves: accuracy against elapsed synthesis+KD seconds, one panel per ratio (and time budget), a mean
line per method and resolution with a min–max band over seeds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .plot_layout import framed_figure, hide_unused, method_legend, resolution_handles, style_key, title
from .plot_results import NoData, Results, series_label, setup_title
from .tables import find_run_file

PANEL_WIDTH_IN = 4.2
PANEL_HEIGHT_IN = 3.4
MIN_PLOTS_WIDTH_IN = 6.5  # room for the title and the key under a single panel


def read_curves(res: Results) -> pd.DataFrame:
    """Runs that have a curve (runs/<run_id>/curve.csv or curves/<run_id>.csv), with the curve in `curve`;
    none of a config with a seed over its time budget."""
    runs = res.within_budget()
    paths = [find_run_file(res.folder, run_id, "curve.csv") for run_id in runs["run_id"]]
    found = runs.assign(path=paths).dropna(subset=["path"])
    curves = [pd.read_csv(p).dropna(subset=["elapsed_s", "student_acc"]).sort_values("elapsed_s")
              for p in found["path"]]
    return found.assign(curve=curves).loc[[len(c) > 0 for c in curves]]


def mean_curve(curves: list[pd.DataFrame], points: int = 200) -> pd.DataFrame:
    """Seeds' accuracy curves on one elapsed-seconds grid: mean, min and max over all seeds. The grid starts at
    the latest first evaluation (so every seed counts everywhere) and a finished seed keeps its final accuracy."""
    grid = np.linspace(max(c["elapsed_s"].iloc[0] for c in curves), max(c["elapsed_s"].iloc[-1] for c in curves),
                       points)
    values = np.vstack([np.interp(grid, c["elapsed_s"], c["student_acc"]) for c in curves])
    return pd.DataFrame({"elapsed_s": grid, "mean": values.mean(axis=0), "min": values.min(axis=0),
                         "max": values.max(axis=0)})


def curve_panel_title(ratio: float, budget: str) -> str:
    """Title of the curves panel of one ratio (a cap, for time-budgeted runs)."""
    return f"ratio {ratio:g}" if not budget else f"ratio ≤ {ratio:g}, {budget} s budget"


def curves_figure(res: Results) -> Figure:
    """Panels in rows of at most four, sharing the accuracy axis; the method colours beside them."""
    runs = read_curves(res)
    if runs.empty:
        raise NoData(f"no per-run curves (runs/<run_id>/curve.csv) in {res.folder}")
    runs = runs.assign(budget_key=runs["budget_s"].fillna(-1.0))
    panels = list(runs.groupby(["budget_key", "ratio"], sort=True))
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    width = max(MIN_PLOTS_WIDTH_IN, PANEL_WIDTH_IN * ncols)
    fig, sub = framed_figure(width, PANEL_HEIGHT_IN * nrows + 1.2)
    axes = sub.subplots(nrows, ncols, sharey=True, squeeze=False)
    for ax, ((_, ratio), part) in zip(axes.flat, panels):
        for (method, resolution), group in part.groupby(["method", "resolution"]):
            _mean_line(ax, res, method, resolution, list(group["curve"]))
        ax.set_title(curve_panel_title(ratio, part["time_budget"].iloc[0]), fontsize=10)
        ax.set_xlabel("elapsed synthesis + KD time (s)")
    hide_unused(sub, axes, len(panels))
    for ax in axes[:, 0]:
        ax.set_ylabel("student accuracy (%)")
    title(sub, f"Training curves — {setup_title(runs)}\nmean over seeds; band: min–max over seeds; marker: end",
          width)
    method_legend(fig, res, sorted(runs["method"].unique()))
    style_key(sub, resolution_handles(res, list(runs["resolution"])), "resolution")
    return fig


def _mean_line(ax: Axes, res: Results, method: str, resolution: str, curves: list[pd.DataFrame]) -> None:
    """Draw the seeds' mean curve (marker at its end: the final mean accuracy) and its band."""
    color, style = res.color(method), res.style(resolution)
    mean = mean_curve(curves)
    ax.fill_between(mean["elapsed_s"], mean["min"], mean["max"], color=color, alpha=0.2, linewidth=0)
    ax.plot(mean["elapsed_s"], mean["mean"], color=color, linestyle=style.linestyle, marker=style.marker,
            markevery=[len(mean) - 1], label=series_label(method, resolution))
