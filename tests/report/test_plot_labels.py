"""Labels of the size-vs-quality plot never sit on top of each other (a sweep crowds one spot)."""

from __future__ import annotations

import itertools

import pytest

from pytest_coreml_quality.report.plot import place_labels


def _boxes(anchors, sizes, offsets):
    return [(x + dx, y + dy, x + dx + w, y + dy + h) for (x, y), (w, h), (dx, dy) in zip(anchors, sizes, offsets)]


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize(
    "anchors",
    [
        [(300.0, 400.0)] * 6,  # six variants of one size and one quality
        [(300.0 + i, 400.0 - i) for i in range(10)],  # a tight diagonal cluster
        [(100.0, 100.0), (400.0, 300.0), (700.0, 50.0)],  # far apart: nothing needs moving
    ],
)
def test_no_two_label_boxes_overlap(anchors: list[tuple[float, float]]) -> None:
    sizes = [(60.0, 14.0)] * len(anchors)
    boxes = _boxes(anchors, sizes, place_labels(anchors, sizes))
    for a, b in itertools.combinations(boxes, 2):
        assert not _overlaps(a, b), (a, b)


def test_labels_stay_inside_the_axes_when_they_can() -> None:
    anchors = [(300.0, 390.0)] * 5  # at the top edge: the free slots are below
    sizes = [(60.0, 14.0)] * 5
    within = (0.0, 0.0, 800.0, 400.0)
    for box in _boxes(anchors, sizes, place_labels(anchors, sizes, within=within)):
        assert within[0] <= box[0] and within[1] <= box[1] and box[2] <= within[2] and box[3] <= within[3], box


def test_labels_that_do_not_collide_keep_the_default_spot() -> None:
    anchors = [(100.0, 100.0), (400.0, 300.0)]
    assert place_labels(anchors, [(60.0, 14.0)] * 2) == [(4.0, 4.0), (4.0, 4.0)]


def test_rendered_plot_labels_do_not_overlap() -> None:
    """The real figure: a crowded sweep's annotation boxes, measured by matplotlib's renderer."""
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    from pytest_coreml_quality.report import plot

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = Figure(figsize=plot.PANEL_INCHES, dpi=plot.DPI)
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    names = ["q8", "q8-lut", "q8-kmeans", "q7", "q7-kmeans", "q6", "q6-lut", "q6-kmeans", "base"]
    points = [(name, 30.0 + (i % 3) * 0.5, 0.82 - 0.001 * i) for i, name in enumerate(names)]
    ax.scatter([x for _, x, _ in points], [y for _, _, y in points])
    ax.set_xscale("log")
    figure.tight_layout()
    plot._label_points(ax, points)
    renderer = figure.canvas.get_renderer()
    extents = [t.get_window_extent(renderer) for t in ax.texts]
    assert len(extents) == len(names)
    for a, b in itertools.combinations(extents, 2):
        assert not a.overlaps(b), (a, b)
    frame = ax.get_window_extent(renderer)
    for e in extents:
        assert frame.x0 <= e.x0 and e.x1 <= frame.x1 + 1 and frame.y0 <= e.y0 and e.y1 <= frame.y1 + 1, (e, frame)
