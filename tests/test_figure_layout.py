"""Every figure kind stays readable on grids it was not tuned on: measured with matplotlib's own window extents,
no legend, title or axis label overlaps another, a tick label or a plotting area, every text lies inside the
figure, every legend entry is there, and no error bar crosses a physical bound (seconds below 0, accuracy over 100)."""

from __future__ import annotations

from itertools import combinations
from typing import Callable, Iterator

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backend_bases import RendererBase
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from figure_grids import ALL_METHODS, GRIDS
from dfkd_bench.report import plots
from dfkd_bench.report.plot_layout import legends

LAYOUT_DPI = 50
SLACK_PX = 1.0  # window extents are rounded to whole pixels when drawn
NO_DATA = {("two-methods", "time-budget"), ("one-method", "resolution")}


@pytest.fixture(scope="module")
def grids(tmp_path_factory: pytest.TempPathFactory) -> dict[str, plots.Results]:
    return {name: plots.load_results(write(tmp_path_factory.mktemp(name))) for name, write in GRIDS.items()}


@pytest.fixture(scope="module")
def figure(grids: dict[str, plots.Results]) -> Iterator[Callable[[str, str], Figure]]:
    """`figure(grid, kind)`: the figure of one kind on one grid, drawn once for the module's tests."""
    made: dict[tuple[str, str], Figure] = {}

    def make(grid: str, kind: str) -> Figure:
        if (grid, kind) not in made:
            made[grid, kind] = plots.make_figure(kind, grids[grid])
        return made[grid, kind]

    yield make
    plt.close("all")


def drawn(fig: Figure) -> RendererBase:
    """Lay the figure out and draw it at a small dpi; the renderer that measured it."""
    fig.set_dpi(LAYOUT_DPI)
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def shown(text: Text) -> bool:
    return text.get_visible() and bool(text.get_text().strip())


def labels(fig: Figure) -> list[tuple[str, Artist]]:
    """Titles (figure, subfigure, axes), axis labels and legends, named for the failure message."""
    found: list[tuple[str, Artist]] = []
    for f in [fig, *fig.subfigs]:
        if f._suptitle is not None and shown(f._suptitle):
            found.append((f"suptitle {f._suptitle.get_text()!r}", f._suptitle))
    for ax in fig.axes:
        texts = [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        found += [(f"axes text {t.get_text()!r}", t) for t in texts if shown(t)]
    return found + [(f"legend {leg.get_title().get_text()!r}", leg) for leg in legends(fig)]


def tick_labels(ax: Axes) -> list[Text]:
    """The tick labels drawn: shown, at ticks inside the view limits."""
    drawn_labels = []
    for axis in (ax.xaxis, ax.yaxis):
        low, high = sorted(axis.get_view_interval())
        drawn_labels += [label for loc, label in zip(axis.get_majorticklocs(), axis.get_majorticklabels())
                         if low <= loc <= high and shown(label)]
    return drawn_labels


def overlap(a: Bbox, b: Bbox) -> bool:
    """Whether two boxes share more than the rounding slack in both directions."""
    return min(a.x1, b.x1) - max(a.x0, b.x0) > SLACK_PX and min(a.y1, b.y1) - max(a.y0, b.y0) > SLACK_PX


def inside(box: Bbox, frame: Bbox) -> bool:
    return (box.x0 >= frame.x0 - SLACK_PX and box.y0 >= frame.y0 - SLACK_PX and box.x1 <= frame.x1 + SLACK_PX
            and box.y1 <= frame.y1 + SLACK_PX)


def layout_problems(fig: Figure) -> list[str]:
    """Every overlap or text outside the figure, one line each."""
    renderer = drawn(fig)
    boxes = [(name, artist.get_window_extent(renderer)) for name, artist in labels(fig)]
    plotting = [ax.get_window_extent(renderer) for ax in fig.axes if ax.axison or ax.images]
    ticks = [t.get_window_extent(renderer) for ax in fig.axes if ax.axison for t in tick_labels(ax)]
    problems = [f"{name} leaves the figure" for name, box in boxes if not inside(box, fig.bbox)]
    problems += ["a tick label leaves the figure" for box in ticks if not inside(box, fig.bbox)]
    problems += [f"{a} overlaps {b}" for (a, box_a), (b, box_b) in combinations(boxes, 2) if overlap(box_a, box_b)]
    problems += [f"{name} overlaps a plotting area" for name, box in boxes if any(overlap(box, p) for p in plotting)]
    problems += [f"{name} overlaps a tick label" for name, box in boxes if any(overlap(box, t) for t in ticks)]
    return problems


def error_bar_ranges(fig: Figure) -> list[tuple[str, float, float]]:
    """(y label, lowest, highest) of the error-bar segments of each axes."""
    found = []
    for ax in fig.axes:
        segments = [seg for c in ax.collections if isinstance(c, LineCollection) for seg in c.get_segments()]
        ys = np.concatenate([np.asarray(seg)[:, 1] for seg in segments]) if segments else np.array([])
        ys = ys[np.isfinite(ys)]
        if len(ys):
            found.append((ax.get_ylabel(), float(ys.min()), float(ys.max())))
    return found


@pytest.mark.parametrize("kind", list(plots.KINDS))
@pytest.mark.parametrize("grid", list(GRIDS))
def test_figure_layout(figure: Callable[[str, str], Figure], grid: str, kind: str) -> None:
    if (grid, kind) in NO_DATA:
        with pytest.raises(plots.NoData):
            figure(grid, kind)
        return
    fig = figure(grid, kind)
    assert layout_problems(fig) == []
    for label, low, high in error_bar_ranges(fig):
        assert low >= 0.0, f"{label}: error bar down to {low}"
        if "accuracy" in label:
            assert high <= 100.0, f"{label}: error bar up to {high}"


@pytest.mark.parametrize("kind", ["time-accuracy", "time-budget", "ratio-accuracy", "curves"])
def test_every_method_has_a_legend_entry(figure: Callable[[str, str], Figure], kind: str) -> None:
    fig = figure("nine-methods", kind)
    entries = {t.get_text() for leg in legends(fig) for t in leg.get_texts()}
    assert set(ALL_METHODS) <= entries


@pytest.mark.parametrize("kind", ["time-accuracy", "time-budget", "ratio-accuracy"])
def test_many_methods_are_split_by_kind(figure: Callable[[str, str], Figure], kind: str) -> None:
    fig = figure("nine-methods", kind)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["bank methods", "online methods"]
    few = figure("one-method", kind)
    assert [ax.get_title() for ax in few.axes if ax.get_title()] == []


def test_the_checker_sees_an_overlap(grids: dict[str, plots.Results]) -> None:
    """A legend put over the plot and a title pushed out of the figure are both reported."""
    fig = plots.make_figure("ratio-accuracy", grids["two-methods"])
    ax = fig.axes[0]
    ax.legend(loc="center")
    ax.set_title("x" * 400)
    problems = layout_problems(fig)
    plt.close(fig)
    assert any("legend" in p and "plotting area" in p for p in problems)
    assert any("leaves the figure" in p for p in problems)

