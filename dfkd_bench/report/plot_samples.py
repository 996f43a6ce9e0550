"""Synthetic samples: a row of images per method, each titled with its class name."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .plot_layout import wrapped
from .plot_results import NoData, Results, setup_title
from .tables import find_run_file

TITLE_SIZE = 10
IMAGE_IN = 1.0  # width of one image in the figure
ROW_IN = 1.35  # height of a method's row, its class names included


def pick_sample_run(runs: pd.DataFrame) -> pd.Series:
    """The run whose samples represent a method: unbudgeted first (a budgeted run's ratio is only a cap), then the
    largest ratio, seed 0 if present."""
    order = runs.assign(neg_ratio=-runs["ratio"], budgeted=runs["time_budget"] != "", not_seed0=runs["seed"] != 0)
    return order.sort_values(["budgeted", "neg_ratio", "not_seed0", "seed", "run_id"]).iloc[0]


def pick_images(labels: np.ndarray, count: int) -> list[int]:
    """Indices of up to `count` images: the first of each class (in label order), then the rest in order."""
    first = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)]
    taken = set(first)
    return (first + [i for i in range(len(labels)) if i not in taken])[:count]


def read_samples(path: str | Path) -> dict[str, np.ndarray]:
    """A samples.npz as arrays: images (uint8 N,C,H,W), labels and class_names (the file is closed again)."""
    with np.load(path) as data:
        return {key: data[key] for key in ("images", "labels", "class_names")}


def samples_figure(res: Results, per_method: int = 10) -> Figure:
    """A row per method from `pick_sample_run`'s samples: one strip of images, framed in the method colour, with
    each image's class name under it."""
    paths = [find_run_file(res.folder, run_id, "samples.npz") for run_id in res.runs["run_id"]]
    runs = res.runs.assign(path=paths).dropna(subset=["path"])
    if runs.empty:
        raise NoData(f"no synthetic samples (runs/<run_id>/samples.npz) in {res.folder}")
    picks = [pick_sample_run(part) for _, part in runs.groupby("method")]
    arrays = [read_samples(run["path"]) for run in picks]
    chosen = [pick_images(a["labels"], per_method) for a in arrays]
    width = IMAGE_IN * max(len(c) for c in chosen) + 1.6
    fig, axes = plt.subplots(len(picks), 1, figsize=(width, ROW_IN * len(picks) + 0.8), squeeze=False,
                             layout="constrained")
    for ax, run, data, indices in zip(axes[:, 0], picks, arrays, chosen):
        _sample_row(ax, res, run, data, indices)
    text = f"Synthetic samples (largest-ratio run per method) — {setup_title(runs)}"
    fig.suptitle(wrapped(text, width, TITLE_SIZE), fontsize=TITLE_SIZE)
    return fig


def image_strip(images: np.ndarray, gap: int = 1) -> np.ndarray:
    """uint8 images (N, C, H, W) side by side with `gap` white columns between them, as (H, W') or (H, W', 3)."""
    padded = np.pad(images, ((0, 0), (0, 0), (0, 0), (0, gap)), constant_values=255)
    strip = np.concatenate(list(padded), axis=2)[:, :, :-gap]
    return strip[0] if strip.shape[0] == 1 else strip.transpose(1, 2, 0)


def _sample_row(ax: Axes, res: Results, run: pd.Series, data: dict[str, np.ndarray], indices: list[int]) -> None:
    """One method's images in a strip framed in the method colour, each named by its class under it."""
    names = [str(n) for n in data["class_names"]]
    images = data["images"][indices]
    strip = image_strip(images)
    ax.imshow(strip, cmap="gray" if strip.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    step = images.shape[-1] + 1
    labels = [int(data["labels"][i]) for i in indices]
    ax.set_xticks([step * k + (step - 2) / 2 for k in range(len(indices))],
                  [names[label] if 0 <= label < len(names) else str(label) for label in labels], fontsize=7)
    ax.set_yticks([])
    ax.grid(False)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_edgecolor(res.color(run["method"]))
        spine.set_linewidth(2)
    ax.set_ylabel(f"{run['method']}\nratio {run['ratio']:g}, {run['resolution']}px", fontsize=8, rotation=0,
                  ha="right", va="center")
