"""The layout every figure shares, so that none hides a legend entry or cuts a title: plots in one subfigure
with the title above them and the style key below them, the method colours in the figure's right margin, panels
split by method kind when there are many methods, and spreads that stay inside physical bounds."""

from __future__ import annotations

import math
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.artist import Artist  # noqa: E402
from matplotlib.figure import Figure, SubFigure  # noqa: E402
from matplotlib.legend import Legend  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from .plot_results import Results, resolution_key  # noqa: E402

MAX_METHODS_PER_PANEL = 6
LEGEND_WIDTH_IN = 1.9  # the method legend's share of a figure's width
SPREAD_NOTE = "error bars: min–max over seeds"
RATIO_LABEL = "data ratio (synthetic / real training images)"
TITLE_SIZE = 11
CHAR_WIDTH_EM = 0.62  # a wide average character of the default sans-serif font, in ems (for wrapping titles)


def config_stats(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per `keys` config, mean, min and max over seeds of accuracy (`acc`) and total seconds (`total`), and the
    seed count: min–max spreads never cross a physical bound (no negative seconds, no accuracy over 100)."""
    return runs.groupby(keys, sort=True).agg(
        acc=("student_acc", "mean"), acc_min=("student_acc", "min"), acc_max=("student_acc", "max"),
        total=("total_s", "mean"), total_min=("total_s", "min"), total_max=("total_s", "max"),
        seeds=("seed", "nunique")).reset_index()


def spread(stats: pd.DataFrame, value: str) -> np.ndarray:
    """Error-bar lengths below and above the mean of `value`: down to its min and up to its max over seeds."""
    return np.vstack([stats[value] - stats[f"{value}_min"], stats[f"{value}_max"] - stats[value]]).clip(min=0.0)


def method_groups(res: Results) -> list[tuple[str, list[str]]]:
    """Methods per panel, with the panel's title: all in one when there are few; otherwise bank and online
    methods apart, each in panels of at most MAX_METHODS_PER_PANEL."""
    if len(res.methods) <= MAX_METHODS_PER_PANEL:
        return [("", res.methods)]
    online = res.online_methods()
    groups = []
    for kind, methods in (("bank methods", [m for m in res.methods if m not in online]),
                          ("online methods", [m for m in res.methods if m in online])):
        parts = math.ceil(len(methods) / MAX_METHODS_PER_PANEL)
        for i, chunk in enumerate(np.array_split(np.array(methods, dtype=object), parts) if parts else []):
            groups.append((kind if parts == 1 else f"{kind} ({i + 1}/{parts})", list(chunk)))
    return groups


def framed_figure(plots_width: float, height: float) -> tuple[Figure, SubFigure]:
    """A figure whose plots (and their title and key) go in one subfigure, leaving the figure's right margin to
    the method legend, so that the legend can never cover the title."""
    fig = plt.figure(figsize=(plots_width + LEGEND_WIDTH_IN, height), layout="constrained")
    return fig, fig.subfigures(1, 1)


def wrapped(text: str, width_in: float, fontsize: float = TITLE_SIZE) -> str:
    """`text` broken into lines that fit `width_in` inches at `fontsize` points (existing line breaks kept)."""
    chars = max(20, int(width_in * 72 / (fontsize * CHAR_WIDTH_EM)))
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


def title(target: Figure | SubFigure, text: str, width_in: float) -> None:
    """The title over a (sub)figure's plots, wrapped to its width."""
    target.suptitle(wrapped(text, width_in), fontsize=TITLE_SIZE)


def method_legend(fig: Figure, res: Results, methods: list[str]) -> Legend:
    """The colour of each method, in the figure's right margin."""
    handles = [Line2D([], [], color=res.color(m), linewidth=4, label=m) for m in methods]
    return fig.legend(handles=handles, title="method", loc="outside right upper", fontsize=8, title_fontsize=9)


def resolution_handles(res: Results, resolutions: list[str], marker: bool = True) -> list[Artist]:
    """Black proxies of each resolution's line style (and marker) for a style key."""
    ordered = sorted(set(resolutions), key=resolution_key)
    return [Line2D([], [], color="black", linestyle=res.style(r).linestyle, marker=res.style(r).marker if marker
                   else "", label=f"{r}px") for r in ordered]


def style_key(sub: SubFigure, handles: list[Artist], title_text: str, most_per_row: int = 6, **kwargs: float) -> Legend:
    """The style key (resolutions, markers) in a row under a subfigure's plots."""
    return sub.legend(handles=handles, title=title_text, loc="outside lower center", fontsize=8, title_fontsize=9,
                      ncol=min(most_per_row, len(handles)), **kwargs)


def hide_unused(fig: Figure | SubFigure, axes: np.ndarray, used: int) -> None:
    """Remove the grid's axes past the first `used`."""
    for ax in axes.flat[used:]:
        fig.delaxes(ax)


def legends(fig: Figure) -> list[Legend]:
    """Every legend of a figure: its own, its subfigures' and its axes'."""
    figures = [fig, *fig.subfigs]
    return [leg for f in figures for leg in f.legends] + [
        child for ax in fig.axes for child in ax.get_children() if isinstance(child, Legend)]
