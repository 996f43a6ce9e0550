"""Figures like the MUSE paper's, from a results folder (matplotlib/seaborn with the Agg backend; no torch).

Every figure draws a method in the same colour (one palette over the folder's sorted method names) and a
resolution with the same line style, marker and hatch. Time-budgeted runs (a `time_budget` in runs.csv) are a
series of their own in the time-accuracy figure and a panel of their own in the curves figure; the ratio and
resolution figures leave them out, since their ratio is only a cap. Each `*_figure` function returns the open
matplotlib Figure; `write_one` and `write_all` save PNG files (and PDFs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.legend import Legend  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from ..errors import UserError  # noqa: E402
from .tables import find_run_file, read_runs_csv, require_runs_csv  # noqa: E402

KINDS: dict[str, str] = {
    "time-accuracy": "time_accuracy.png",
    "resolution": "resolution.png",
    "ratio-accuracy": "ratio_accuracy.png",
    "curves": "curves.png",
    "samples": "samples.png",
}
LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
HATCHES = ["", "//", "..", "xx", "\\\\", "++"]
BUBBLE_MAX = 900.0
BUDGET_BUBBLE = 160.0  # budgeted points share one size: their ratio is only a cap on the images
DODGE_DECADES = 0.006
RATIO_LABEL = "data ratio (synthetic / real training images)"
ACC_LABEL = "student accuracy (%)"


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
    """The finished (status ok, non-smoke) runs of one results folder."""

    folder: Path
    runs: pd.DataFrame

    @property
    def methods(self) -> list[str]:
        """Method names, sorted."""
        return sorted(self.runs["method"].unique())

    def color(self, method: str) -> tuple[float, float, float]:
        """The colour of `method` in every figure of these results."""
        return method_palette(self.methods)[method]

    def style(self, resolution: str) -> Style:
        """The line style, marker and hatch of `resolution` in every figure of these results."""
        i = sorted(self.runs["resolution"].unique(), key=resolution_key).index(resolution)
        return Style(LINESTYLES[i % len(LINESTYLES)], MARKERS[i % len(MARKERS)], HATCHES[i % len(HATCHES)])

    def unbudgeted(self) -> pd.DataFrame:
        """Runs without a time budget (their ratio is the number of images they made)."""
        return self.runs[self.runs["time_budget"] == ""]


def method_palette(methods: list[str]) -> dict[str, tuple[float, float, float]]:
    """A fixed method -> colour mapping from the sorted set of names (colorblind palette; husl past ten)."""
    names = sorted(set(methods))
    colors = sns.color_palette("colorblind" if len(names) <= 10 else "husl", len(names))
    return dict(zip(names, colors))


def resolution_key(resolution: str) -> tuple[int, tuple[int, ...]]:
    """Sort key for resolution strings: single sizes by size, then multi-resolution sets such as `16+32`."""
    sizes = tuple(int(float(p)) for p in str(resolution).split("+") if p.strip())
    return len(sizes), sizes


def load_results(folder: str | Path) -> Results:
    """The finished runs of `folder/runs.csv`; a UserError when it is missing or holds none."""
    folder = Path(folder)
    require_runs_csv(folder)
    df = read_runs_csv(folder)
    runs = df[df["status"] == "ok"].reset_index(drop=True)
    if runs.empty:
        raise UserError(f"no finished (status ok, non-smoke) runs in {folder / 'runs.csv'}")
    return Results(folder, runs.assign(resolution=runs["resolution"].astype(str),
                                       budget_s=pd.to_numeric(runs["time_budget"], errors="coerce")))


def config_stats(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean and std over seeds (ddof=1, 0 for one seed) of accuracy and total seconds per `keys` config."""
    out = runs.groupby(keys, sort=True).agg(
        acc=("student_acc", "mean"), acc_std=("student_acc", "std"),
        total=("total_s", "mean"), total_std=("total_s", "std"), seeds=("seed", "nunique")).reset_index()
    return out.fillna({"acc_std": 0.0, "total_std": 0.0})


def series_label(method: str, resolution: str, budgeted: bool = False) -> str:
    """Legend text of one method at one resolution (and whether under a time budget)."""
    return f"{method} {resolution}px" + (", time budget" if budgeted else "")


def setup_title(runs: pd.DataFrame) -> str:
    """`dataset: teacher → student` of the runs (normally one setup per results folder)."""
    setups = runs[["dataset", "teacher", "student"]].drop_duplicates().itertuples(index=False)
    return "; ".join(f"{d}: {t} → {s}" for d, t, s in setups)


def time_accuracy_figure(res: Results) -> Figure:
    """MUSE figure 1: mean total seconds against mean accuracy per config, bubble area proportional to ratio,
    one line per method and resolution in ratio order; time-budgeted configs hollow, in budget order."""
    stats = config_stats(res.runs, ["method", "resolution", "time_budget", "ratio"])
    stats["budget_s"] = pd.to_numeric(stats["time_budget"], errors="coerce")
    plain = stats[stats["time_budget"] == ""]
    sized = plain if len(plain) else stats
    scale = BUBBLE_MAX / sized["ratio"].max()
    fig, ax = plt.subplots(figsize=(8, 5.5), layout="constrained")
    handles = []
    for (method, resolution, budgeted), part in stats.groupby(["method", "resolution", stats["time_budget"] != ""]):
        part = part.sort_values(["budget_s", "ratio"] if budgeted else "ratio")
        handles.append(_bubble_series(ax, res, part, method, resolution, budgeted, scale))
    ax.margins(0.1)
    ax.set_xlabel("mean total time per run (s): synthesis + KD + eval")
    ax.set_ylabel(f"mean {ACC_LABEL}")
    ax.set_title(f"Accuracy against time — {setup_title(res.runs)}")
    series = ax.legend(handles=handles, title="method, resolution", loc="upper left", bbox_to_anchor=(1.02, 1),
                       fontsize=8)
    ax.add_artist(series)
    ax.legend(handles=_ratio_handles(sorted(sized["ratio"].unique()), scale), title="data ratio (bubble area)",
              loc="lower left", bbox_to_anchor=(1.02, 0), fontsize=8, labelspacing=1.5, borderpad=1)
    return fig


def _bubble_series(ax: Axes, res: Results, part: pd.DataFrame, method: str, resolution: str, budgeted: bool,
                   scale: float) -> Line2D:
    """One joined series of bubbles; budgeted points are hollow, of one size and labelled with their budget."""
    color, style = res.color(method), res.style(resolution)
    face = "none" if budgeted else color
    sizes = pd.Series(BUDGET_BUBBLE, index=part.index) if budgeted else part["ratio"] * scale
    ax.plot(part["total"], part["acc"], color=color, linestyle=style.linestyle, linewidth=1.2, zorder=1)
    ax.scatter(part["total"], part["acc"], s=sizes, marker=style.marker, facecolors=face,
               edgecolors=color, alpha=0.75, linewidths=1.5, zorder=2)
    if budgeted:
        for row in part.itertuples(index=False):
            ax.annotate(f"{row.budget_s:g} s", (row.total, row.acc), textcoords="offset points", ha="center",
                        va="top", xytext=(0, -math.sqrt(BUDGET_BUBBLE) / 2 - 3), fontsize=7, color=color)
    return Line2D([], [], color=color, linestyle=style.linestyle, marker=style.marker, markerfacecolor=face,
                  label=series_label(method, resolution, budgeted))


def _ratio_handles(ratios: list[float], scale: float, most: int = 5) -> list[Line2D]:
    """Grey legend bubbles for a few ratios (at most `most`, spread over the range) at their plotted areas."""
    shown = [ratios[i] for i in sorted({round(j) for j in np.linspace(0, len(ratios) - 1, min(most, len(ratios)))})]
    return [Line2D([], [], linestyle="", marker="o", markersize=math.sqrt(r * scale), color="grey", alpha=0.5,
                   label=f"{r:g}") for r in shown]


def resolution_figure(res: Results) -> Figure:
    """MUSE figure 3: per method run at two or more single resolutions, accuracy (left) and total seconds
    (right) against ratio, one bar per resolution with std-over-seeds error bars."""
    runs = res.unbudgeted()
    runs = runs[~runs["resolution"].str.contains("+", regex=False)]
    counts = runs.groupby("method")["resolution"].nunique()
    methods = sorted(counts[counts >= 2].index)
    if not methods:
        raise NoData(f"no method was run at two or more single resolutions in {res.folder / 'runs.csv'}; "
                     f"`plot resolution` compares e.g. `dfkd-bench run --resolution 16,32`")
    stats = config_stats(runs[runs["method"].isin(methods)], ["method", "resolution", "ratio"])
    fig, axes = plt.subplots(len(methods), 2, figsize=(11, 3.4 * len(methods)), squeeze=False, layout="constrained")
    for (acc_ax, time_ax), method in zip(axes, methods):
        part = stats[stats["method"] == method]
        _grouped_bars(acc_ax, res, part, "acc")
        _grouped_bars(time_ax, res, part, "total")
        acc_ax.set_ylabel(f"mean {ACC_LABEL}")
        time_ax.set_ylabel("mean total time per run (s)")
        acc_ax.set_title(f"{method}: accuracy by resolution", color=res.color(method))
        time_ax.set_title(f"{method}: total time by resolution", color=res.color(method))
        acc_ax.legend(title="resolution", fontsize=8)
    fig.suptitle(f"Generation resolution — {setup_title(runs)}; error bars: std over seeds")
    return fig


def _grouped_bars(ax: Axes, res: Results, part: pd.DataFrame, value: str) -> None:
    """Bars of `value` (with `value`_std error bars) per ratio, side by side per resolution, in the method colour."""
    ratios = sorted(part["ratio"].unique())
    resolutions = sorted(part["resolution"].unique(), key=resolution_key)
    width = 0.8 / len(resolutions)
    x = np.arange(len(ratios))
    for i, resolution in enumerate(resolutions):
        rows = part[part["resolution"] == resolution].set_index("ratio").reindex(ratios)
        ax.bar(x + (i - (len(resolutions) - 1) / 2) * width, rows[value], width, yerr=rows[f"{value}_std"],
               capsize=3, color=res.color(part["method"].iloc[0]), hatch=res.style(resolution).hatch,
               edgecolor="black", linewidth=0.6, label=f"{resolution}px")
    ax.set_xticks(x, [f"{r:g}" for r in ratios])
    ax.set_xlabel(RATIO_LABEL)


def ratio_accuracy_figure(res: Results) -> Figure:
    """MUSE figure 5: mean accuracy against ratio (log x at the run ratios), one line per method and
    resolution (colour = method, line style and marker = resolution), std over seeds as error bars; series
    are nudged sideways a little so that their error bars do not hide each other."""
    runs = res.unbudgeted()
    if runs.empty:
        raise NoData(f"only time-budgeted runs in {res.folder / 'runs.csv'}; `plot ratio-accuracy` needs runs "
                     f"without a time budget")
    stats = config_stats(runs, ["method", "resolution", "ratio"])
    fig, ax = plt.subplots(figsize=(7.5, 5), layout="constrained")
    series = list(stats.groupby(["method", "resolution"]))
    for i, ((method, resolution), part) in enumerate(series):
        style, dodge = res.style(resolution), 10 ** ((i - (len(series) - 1) / 2) * DODGE_DECADES)
        ax.errorbar(part["ratio"] * dodge, part["acc"], yerr=part["acc_std"], color=res.color(method),
                    linestyle=style.linestyle, marker=style.marker, capsize=3,
                    label=series_label(method, resolution))
    ratios = sorted(stats["ratio"].unique())
    ax.set_xscale("log")
    ax.set_xticks(ratios, [f"{r:g}" for r in ratios])
    ax.minorticks_off()
    ax.set_xlabel(f"{RATIO_LABEL}, log scale")
    ax.set_ylabel(f"mean {ACC_LABEL}")
    ax.set_title(f"Accuracy against data ratio — {setup_title(runs)}\nerror bars: std over seeds", fontsize=10)
    ax.legend(title="method, resolution", loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
    return fig


def read_curves(res: Results) -> pd.DataFrame:
    """Runs that have a curve (runs/<run_id>/curve.csv or curves/<run_id>.csv), with the curve in `curve`."""
    paths = [find_run_file(res.folder, run_id, "curve.csv") for run_id in res.runs["run_id"]]
    found = res.runs.assign(path=paths).dropna(subset=["path"])
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
    """Accuracy against elapsed synthesis+KD seconds, one panel per ratio (and time budget), one mean line per
    method and resolution with a min-max band over seeds."""
    runs = read_curves(res)
    if runs.empty:
        raise NoData(f"no per-run curves (runs/<run_id>/curve.csv) in {res.folder}")
    runs = runs.assign(budget_key=runs["budget_s"].fillna(-1.0))
    panels = list(runs.groupby(["budget_key", "ratio"], sort=True))
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), sharey=True, squeeze=False,
                             layout="constrained")
    handles: dict[str, Line2D] = {}
    for ax, ((_, ratio), part) in zip(axes.flat, panels):
        for (method, resolution), group in part.groupby(["method", "resolution"]):
            handles.update(_mean_line(ax, res, method, resolution, list(group["curve"])))
        ax.set_title(curve_panel_title(ratio, part["time_budget"].iloc[0]), fontsize=10)
        ax.set_xlabel("elapsed synthesis + KD time (s)")
    for ax in axes.flat[len(panels):]:
        fig.delaxes(ax)
    for ax in axes[:, 0]:
        ax.set_ylabel(ACC_LABEL)
    fig.suptitle(f"Training curves — {setup_title(runs)}")
    fig.legend(handles=list(handles.values()), title="mean over seeds\n(band: min–max; marker: end)",
               loc="outside right upper", fontsize=8)
    return fig


def _mean_line(ax: Axes, res: Results, method: str, resolution: str, curves: list[pd.DataFrame]) -> dict[str, Line2D]:
    """Draw the seeds' mean curve (marker at its end: the final mean accuracy) and its band; the legend entry of
    the series, keyed by its label."""
    color, label, style = res.color(method), series_label(method, resolution), res.style(resolution)
    mean = mean_curve(curves)
    ax.fill_between(mean["elapsed_s"], mean["min"], mean["max"], color=color, alpha=0.2, linewidth=0)
    (line,) = ax.plot(mean["elapsed_s"], mean["mean"], color=color, linestyle=style.linestyle, marker=style.marker,
                      markevery=[len(mean) - 1], label=label)
    return {label: line}


def pick_sample_run(runs: pd.DataFrame) -> pd.Series:
    """The run whose samples represent a method: largest ratio, unbudgeted first, seed 0 if present."""
    order = runs.assign(neg_ratio=-runs["ratio"], budgeted=runs["time_budget"] != "", not_seed0=runs["seed"] != 0)
    return order.sort_values(["neg_ratio", "budgeted", "not_seed0", "seed", "run_id"]).iloc[0]


def pick_images(labels: np.ndarray, count: int) -> list[int]:
    """Indices of up to `count` images: the first of each class (in label order), then the rest in order."""
    first = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)]
    taken = set(first)
    return (first + [i for i in range(len(labels)) if i not in taken])[:count]


def samples_figure(res: Results, per_method: int = 10) -> Figure:
    """A row of synthetic images per method (from `pick_sample_run`), each titled with its class name."""
    paths = [find_run_file(res.folder, run_id, "samples.npz") for run_id in res.runs["run_id"]]
    runs = res.runs.assign(path=paths).dropna(subset=["path"])
    if runs.empty:
        raise NoData(f"no synthetic samples (runs/<run_id>/samples.npz) in {res.folder}")
    picks = [pick_sample_run(part) for _, part in runs.groupby("method")]
    arrays = [read_samples(run["path"]) for run in picks]
    chosen = [pick_images(a["labels"], per_method) for a in arrays]
    ncols = max(len(c) for c in chosen)
    fig, axes = plt.subplots(len(picks), ncols, figsize=(1.25 * ncols + 1.2, 1.5 * len(picks) + 0.6), squeeze=False,
                             layout="constrained")
    for row_axes, run, data, indices in zip(axes, picks, arrays, chosen):
        _sample_row(row_axes, res, run, data, indices)
    fig.suptitle(f"Synthetic samples (largest-ratio run per method) — {setup_title(runs)}", fontsize=10)
    return fig


def read_samples(path: str | Path) -> dict[str, np.ndarray]:
    """A samples.npz as arrays: images (uint8 N,C,H,W), labels and class_names (the file is closed again)."""
    with np.load(path) as data:
        return {key: data[key] for key in ("images", "labels", "class_names")}


def _sample_row(axes: np.ndarray, res: Results, run: pd.Series, data: dict[str, np.ndarray],
                indices: list[int]) -> None:
    """One method's images in a row, framed in the method colour, titled with class names."""
    color, names = res.color(run["method"]), [str(n) for n in data["class_names"]]
    for ax, i in zip(axes, indices):
        image, label = data["images"][i], int(data["labels"][i])
        gray = image.shape[0] == 1
        ax.imshow(image[0] if gray else image.transpose(1, 2, 0), cmap="gray" if gray else None, vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_title(names[label] if 0 <= label < len(names) else str(label), fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor(color)
            spine.set_linewidth(2)
    axes[0].set_ylabel(f"{run['method']}\nratio {run['ratio']:g}, {run['resolution']}px", color=color, fontsize=8)
    for ax in axes[len(indices):]:
        ax.axis("off")


BUILDERS: dict[str, Callable[[Results], Figure]] = {
    "time-accuracy": time_accuracy_figure,
    "resolution": resolution_figure,
    "ratio-accuracy": ratio_accuracy_figure,
    "curves": curves_figure,
    "samples": samples_figure,
}


def make_figure(kind: str, res: Results) -> Figure:
    """The open figure of one kind (a key of KINDS), drawn in seaborn's whitegrid style."""
    with sns.axes_style("whitegrid"):
        return BUILDERS[kind](res)


def save_figure(fig: Figure, path: str | Path, pdf: bool = False) -> list[Path]:
    """Write `fig` as PNG at `path` (and a PDF next to it) and close it; the paths written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = [path] + ([path.with_suffix(".pdf")] if pdf else [])
    legends = [child for ax in fig.axes for child in ax.get_children() if isinstance(child, Legend)]
    for target in written:  # every legend inside the image, including those placed beside the axes
        fig.savefig(target, dpi=150, bbox_inches="tight", bbox_extra_artists=legends + fig.legends)
    plt.close(fig)
    return written


def write_one(res: Results, kind: str, path: str | Path, pdf: bool = False) -> list[Path]:
    """One figure to `path` (PNG, plus PDF if asked); NoData (a UserError) when the kind has nothing to draw."""
    return save_figure(make_figure(kind, res), path, pdf)


def write_all(res: Results, folder: str | Path, pdf: bool = False) -> tuple[list[Path], list[str]]:
    """Every kind into `folder` under its KINDS file name; the paths written and a note per kind skipped."""
    written: list[Path] = []
    skipped: list[str] = []
    for kind, name in KINDS.items():
        try:
            written += write_one(res, kind, Path(folder) / name, pdf)
        except NoData as exc:
            skipped.append(f"skipped {kind}: {exc}")
    return written, skipped
