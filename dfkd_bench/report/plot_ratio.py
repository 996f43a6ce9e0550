"""MUSE figure 5: mean accuracy against data ratio, one line per method and resolution."""

from __future__ import annotations

from matplotlib.figure import Figure

from .plot_layout import RATIO_LABEL, SPREAD_NOTE, config_stats, framed_figure, method_groups, method_legend
from .plot_layout import resolution_handles, spread, style_key, title
from .plot_results import NoData, Results, series_label, setup_title

DODGE_DECADES = 0.006  # series are nudged sideways on the log axis so that their error bars do not hide each other
PANEL_WIDTH_IN = 5.0


def ratio_accuracy_figure(res: Results) -> Figure:
    """Log x at the run ratios; colour = method, line style and marker = resolution; min–max bars over seeds; a
    panel per method kind when there are more than six methods."""
    runs = res.unbudgeted()
    if runs.empty:
        raise NoData(f"only time-budgeted runs in {res.folder / 'runs.csv'}; `plot ratio-accuracy` needs runs "
                     f"without a time budget")
    stats = config_stats(runs, ["method", "resolution", "ratio"])
    ratios = sorted(stats["ratio"].unique())
    groups = [(name, methods) for name, methods in method_groups(res) if stats["method"].isin(methods).any()]
    fig, sub = framed_figure(PANEL_WIDTH_IN * len(groups) + 0.6, 5.0)
    axes = sub.subplots(1, len(groups), sharey=True, squeeze=False)[0]
    for ax, (name, methods) in zip(axes, groups):
        series = list(stats[stats["method"].isin(methods)].groupby(["method", "resolution"]))
        for i, ((method, resolution), part) in enumerate(series):
            style, dodge = res.style(resolution), 10 ** ((i - (len(series) - 1) / 2) * DODGE_DECADES)
            ax.errorbar(part["ratio"] * dodge, part["acc"], yerr=spread(part, "acc"), color=res.color(method),
                        linestyle=style.linestyle, marker=style.marker, capsize=3,
                        label=series_label(method, resolution))
        ax.set_xscale("log")
        ax.set_xticks(ratios, [f"{r:g}" for r in ratios])
        ax.minorticks_off()
        ax.set_xlabel(f"{RATIO_LABEL},\nlog scale")
        ax.set_title(name, fontsize=10)
    axes[0].set_ylabel("mean student accuracy (%)")
    title(sub, f"Accuracy against data ratio — {setup_title(runs)}\n{SPREAD_NOTE}", PANEL_WIDTH_IN * len(groups))
    method_legend(fig, res, sorted(stats["method"].unique()))
    style_key(sub, resolution_handles(res, list(stats["resolution"])), "resolution")
    return fig
