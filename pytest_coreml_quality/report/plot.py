"""``--coreml-plot=FILE``: the size-vs-quality trade-off as a PNG (matplotlib, optional).

One panel per model: x is the size on disk in MB (log scale), y the recommendation's
metric (default IoU); every variant is a labelled point, the Pareto front a line, each
threshold on those two figures a dashed line, and the recommended variant a ring.
matplotlib comes with the ``plot`` extra; without it the user is told how to get it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_coreml_quality import catalogue
from pytest_coreml_quality.cachefs import atomic_write_bytes
from pytest_coreml_quality.errors import CoreMLQualityError
from pytest_coreml_quality.results import RunResults
from pytest_coreml_quality.thresholds import Bound

if TYPE_CHECKING:
    from pytest_coreml_quality.recommend import Recommendation

PANEL_INCHES = (8.0, 5.0)
DPI = 100  # one panel is 800 x 500 pixels
INSTALL_HINT = "pip install pytest-coreml-quality[plot]"


def plot_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def render_png(run: RunResults, recommendations: Mapping[str, "Recommendation"], bounds: Sequence[Bound]) -> bytes:
    """The plot as PNG bytes: one 800 x 500 panel per model that has a recommendation, stacked."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)  # no display: CI machines and headless runs
        from matplotlib.figure import Figure
    except ImportError:
        raise CoreMLQualityError(
            "the size-vs-quality plot needs matplotlib", field="--coreml-plot", expected=f"matplotlib installed: {INSTALL_HINT}"
        ) from None
    keys = [k for k in run.models if k in recommendations]
    if not keys:
        raise CoreMLQualityError("nothing was measured to plot", field="--coreml-plot", expected="a run that measured variants")
    figure = Figure(figsize=(PANEL_INCHES[0], PANEL_INCHES[1] * len(keys)), dpi=DPI)
    axes = figure.subplots(len(keys), 1, squeeze=False)[:, 0]
    labelled = [(ax, _panel(ax, key, run, recommendations[key], bounds)) for ax, key in zip(axes, keys)]
    figure.tight_layout()
    for ax, points in labelled:
        _label_points(ax, points)  # after the layout: label placement works in final pixels
    buffer = io.BytesIO()
    # No bbox="tight": the pixel size stays what PANEL_INCHES and DPI say.
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def write_plot(
    path: str | os.PathLike[str], run: RunResults, recommendations: Mapping[str, "Recommendation"], bounds: Sequence[Bound]
) -> Path:
    """Write the PNG atomically; return the path."""
    return atomic_write_bytes(path, render_png(run, recommendations, bounds))


def _panel(
    ax: Any, key: str, run: RunResults, rec: "Recommendation", bounds: Sequence[Bound]
) -> list[tuple[str, float, float]]:
    """Draw one model's panel; return its (recipe, size MB, metric) points, labelled later."""
    metric = catalogue.get(rec.metric)
    label = metric.column.title if metric is not None and metric.column is not None else rec.metric
    points = []
    for v in run.models[key].variants.values():
        y = None if metric is None else metric.value(v)
        if v.size_mb is not None and y is not None and y == y:  # y == y: not NaN
            points.append((v.recipe, v.size_mb, y))
    for recipe, x, y in points:
        failed = recipe in rec.failing or recipe in rec.unmeasured
        ax.scatter([x], [y], s=28, color="#b0b0b0" if failed else "#0a64c8", zorder=3)
    front = [(x, y) for recipe in rec.pareto for r, x, y in points if r == recipe]
    if len(front) > 1:
        ax.plot([x for x, _ in front], [y for _, y in front], color="#0a64c8", linewidth=1, label="Pareto front", zorder=2)
    for bound in bounds:
        if bound.metric == rec.metric:
            ax.axhline(bound.value, color="#c83232", linestyle="--", linewidth=1, label=f"{bound.metric} {bound.op} {bound.value:g}")
        elif bound.metric == "size_mb":
            ax.axvline(bound.value, color="#c87832", linestyle="--", linewidth=1, label=f"size {bound.op} {bound.value:g} MB")
    chosen = [(x, y) for r, x, y in points if r == rec.recipe]
    if chosen:
        ax.scatter(*zip(*chosen), s=220, facecolors="none", edgecolors="#1e9632", linewidths=2, label=f"recommended: {rec.recipe}", zorder=4)
    if points:
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")
        plain = FuncFormatter(lambda value, _: f"{value:g}")  # 0.2, not 2x10^-1
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
    ax.set_xlabel("size on disk (MB, log scale)")
    ax.set_ylabel(label)
    ax.set_title(key, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right")
    return points


LABEL_FONT = 8
_CHAR_PX = LABEL_FONT * 0.62 * DPI / 72  # an average glyph of the default sans-serif font
_LINE_PX = LABEL_FONT * 1.25 * DPI / 72


def _label_points(ax: Any, points: Sequence[tuple[str, float, float]]) -> None:
    """Label every point without two labels on top of each other (variants of one size and
    nearly one quality, q6 and q6-kmeans say, crowd one spot); a moved label gets a leader."""
    anchors = [tuple(ax.transData.transform((x, y))) for _, x, y in points]
    sizes = [(len(recipe) * _CHAR_PX, _LINE_PX) for recipe, _, _ in points]
    offsets = place_labels(anchors, sizes, within=tuple(ax.bbox.extents))
    for (recipe, x, y), (dx, dy) in zip(points, offsets):
        moved = abs(dy) > _LINE_PX or dx < 0
        ax.annotate(
            recipe, (x, y), xytext=(dx, dy), textcoords="offset pixels", fontsize=LABEL_FONT,
            arrowprops={"arrowstyle": "-", "linewidth": 0.5, "color": "#909090"} if moved else None,
        )


def place_labels(
    anchors: Sequence[tuple[float, float]],
    sizes: Sequence[tuple[float, float]],
    gap: float = 2.0,
    within: tuple[float, float, float, float] | None = None,
) -> list[tuple[float, float]]:
    """Offsets (pixels, y up) for labels of ``sizes`` at ``anchors`` so that no two label
    boxes overlap and each stays ``within`` (x0, y0, x1, y1) when it can: each label takes the
    first free slot right of its point, stepping up and down in line heights, then left of
    it; greedy, points in order of height."""
    placed: list[tuple[float, float, float, float]] = []
    offsets: list[tuple[float, float]] = [(0.0, 0.0)] * len(anchors)
    order = sorted(range(len(anchors)), key=lambda i: (-anchors[i][1], anchors[i][0]))
    for i in order:
        (ax_, ay), (w, h) = anchors[i], sizes[i]
        steps = [0] + [s for k in range(1, 12) for s in (k, -k)]
        candidates = [(4.0, 4.0 + s * (h + gap)) for s in steps] + [(-4.0 - w, 4.0 + s * (h + gap)) for s in steps]
        chosen = candidates[0]
        for dx, dy in candidates:
            box = (ax_ + dx, ay + dy, ax_ + dx + w, ay + dy + h)
            inside = within is None or (
                box[0] >= within[0] and box[1] >= within[1] and box[2] <= within[2] and box[3] <= within[3]
            )
            if inside and not any(_overlap(box, other) for other in placed):
                chosen = (dx, dy)
                break
        dx, dy = chosen
        placed.append((ax_ + dx, ay + dy, ax_ + dx + w, ay + dy + h))
        offsets[i] = chosen
    return offsets


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
