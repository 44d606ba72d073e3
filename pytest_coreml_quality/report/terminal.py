"""The terminal summary: one table per model, a row per variant, within a fixed width.

Numbers keep fixed columns so that a reader can scan a column down the variants; the
variant name takes whatever width is left and is elided in its middle when too long.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass

from pytest_coreml_quality.report.figures import (
    MISSING,
    elide,
    fmt_fixed,
    fmt_size_mb,
    lookup,
    ordered_variants,
    verdict,
)
from pytest_coreml_quality.results import CheckOutcome, ModelResults, RunResults, VariantResult

HASH_PREFIX = 12
MIN_NAME_WIDTH = 12


@dataclass(frozen=True)
class Column:
    """A right-aligned numeric column: its title, width and how to read one row's cell."""

    title: str
    width: int
    cell: Callable[[VariantResult], str]


def _metric(name: str, decimals: int = 4) -> Callable[[VariantResult], str]:
    return lambda v: fmt_fixed(lookup(v.metrics, name), 6, decimals)


def _load(attr: str) -> Callable[[VariantResult], str]:
    def cell(v: VariantResult) -> str:
        text = fmt_fixed(getattr(v.load, attr), 6, 3)
        # A '*' marks figures from the plain timer (pytest-benchmark disabled), see the legend.
        return text + "*" if text != MISSING and v.load.timer != "pytest-benchmark" else text

    return cell


COLUMNS: tuple[Column, ...] = (
    Column("size MB", 8, lambda v: fmt_size_mb(v.size_mb)),
    Column("ratio", 5, lambda v: fmt_fixed(v.ratio, 5, 3)),
    Column("MAE", 6, _metric("mae")),
    Column("IoU", 6, _metric("iou")),
    Column("F", 6, _metric("max_f")),
    Column("S", 6, _metric("s")),
    Column("E", 6, _metric("mean_e")),
    Column("drift", 6, lambda v: fmt_fixed(lookup(v.drift, "mae"), 6, 4)),
    Column("cold s", 7, _load("cold_s")),
    Column("warm s", 7, _load("warm_s")),
    Column("result", 6, verdict),
)

# Columns given up, in this order, when the terminal is narrower than the full table.
DROP_ORDER = ("E", "S", "F", "ratio", "warm s", "drift")

LEGEND = (
    "size in MB (10^6 bytes); ratio = size / base size; MAE, IoU, F (max F-measure), S (S-measure), "
    "E (mean E-measure) against the ground truth; drift = MAE against the base model's predictions; "
    "cold load with the compile/translation cache evicted, warm with it primed, in seconds "
    "(* = plain timer, pytest-benchmark disabled); result against the configured thresholds, "
    "'-' where none is set."
)


def render_table(run: RunResults, width: int = 100, legend: bool = True) -> list[str]:
    """Summary lines for every model of ``run``, none longer than ``width`` characters."""
    lines: list[str] = []
    for model in run.models.values():
        if lines:
            lines.append("")
        lines += render_model(model, width)
    if lines and legend:
        lines += textwrap.wrap(LEGEND, width=width)
    return lines


def fitting_columns(width: int) -> tuple[tuple[Column, ...], int]:
    """The columns that fit ``width`` with a readable variant name, and that name's width.

    Narrow terminals lose the secondary figures first (E, S, F, ratio, warm load, drift),
    never the size, MAE, IoU, cold load or the verdict.
    """
    columns = COLUMNS
    for title in DROP_ORDER:
        if width - sum(c.width + 1 for c in columns) >= MIN_NAME_WIDTH:
            break
        columns = tuple(c for c in columns if c.title != title)
    return columns, max(MIN_NAME_WIDTH, width - sum(c.width + 1 for c in columns))


def render_model(model: ModelResults, width: int = 100) -> list[str]:
    """The header line and one row per variant ('base' first) for one model."""
    columns, name_width = fitting_columns(width)
    fixed = sum(c.width + 1 for c in columns)
    lines = header_lines(model, width)
    titles = ["variant".ljust(name_width)] + [c.title.rjust(c.width) for c in columns]
    lines.append(" ".join(titles)[:width])
    lines.append("-" * min(width, name_width + fixed))
    for result in ordered_variants(model.variants):
        cells = [elide(result.recipe, name_width).ljust(name_width)]
        cells += [elide(c.cell(result), c.width).rjust(c.width) for c in columns]
        lines.append(" ".join(cells)[:width])
    if not model.variants:
        lines.append("(no variant was measured)")
    return lines


def model_header(model: ModelResults) -> str:
    """'ISNet.mlmodel (neuralNetwork, 1a2b3c4d5e6f) backend onnx, dataset golden'."""
    details = ", ".join(x for x in (model.kind, model.content_hash[:HASH_PREFIX]) if x)
    text = model.model + (f" ({details})" if details else "")
    if model.backend:
        text += f" backend {model.backend}"
    if model.dataset:
        text += f", dataset {model.dataset}"
    return text


def header_lines(model: ModelResults, width: int = 100) -> list[str]:
    """The model header in one line, or two when the dataset path would not fit.

    A long path loses its start, never its end: the folder name is what tells sets apart.
    """
    whole = model_header(model)
    if len(whole) <= width or not model.dataset:
        return [elide(whole, width)]
    first = model_header(ModelResults(model=model.model, content_hash=model.content_hash, kind=model.kind, backend=model.backend))
    path = str(model.dataset)
    room = width - len("  dataset ")
    if len(path) > room:
        path = "…" + path[-(room - 1):]
    return [elide(first, width), f"  dataset {path}"]


def failed_check_lines(run: RunResults, width: int = 100, limit: int = 5) -> list[str]:
    """For every failed check of every variant: what failed and its worst images."""
    lines: list[str] = []
    for model in run.models.values():
        for result in ordered_variants(model.variants):
            for check in result.checks:
                if not check.passed:
                    lines += worst_image_lines(check, f"{model.model}[{result.recipe}]", width, limit)
    return lines


def worst_image_lines(check: CheckOutcome, label: str = "", width: int = 100, limit: int = 5) -> list[str]:
    """'label: check metric = value (bound <= x) FAILED' then one indented line per worst image."""
    head = f"{label}: {check.check} {check.describe()}" if label else f"{check.check} {check.describe()}"
    # Wrap rather than elide: the variant, the value and the bound are all needed.
    lines = textwrap.wrap(head, width=width, subsequent_indent="    ", break_on_hyphens=False) or [head[:width]]
    if check.worst:
        lines.append(elide(f"  worst images by {check.metric}:", width))
        shown = check.worst[:limit]
        numbers = [fmt_fixed(v, 12, 4) for _, v in shown]
        value_width = max(len(n) for n in numbers)
        name_width = max(1, min(max(len(str(name)) for name, _ in shown), width - 6 - value_width))
        for (name, _), number in zip(shown, numbers):
            lines.append(f"    {elide(str(name), name_width).ljust(name_width)}  {number.rjust(value_width)}")
        if len(check.worst) > limit:
            lines.append(f"    ... and {len(check.worst) - limit} more")
    return [line.rstrip() for line in lines]
