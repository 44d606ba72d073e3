"""The terminal summary: one table per model, a row per variant, within a fixed width.

Numbers keep fixed columns so that a reader can scan a column down the variants; the
variant name takes whatever width is left and is elided in its middle when too long.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_coreml_quality import catalogue
from pytest_coreml_quality.report.figures import (
    MISSING,
    elide,
    fmt_fixed,
    fmt_size_mb,
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
    drop_rank: int | None = None  # narrow terminals drop low ranks first; None: kept
    kinds: tuple[str, ...] | None = None  # output kinds that show it; None: every kind


def _figure_column(figure: catalogue.Figure) -> Column:
    spec = figure.column
    assert spec is not None

    def cell(v: VariantResult) -> str:
        value = figure.value(v)
        if spec.style == "megabytes":
            return fmt_size_mb(value, spec.width)
        text = fmt_fixed(value, spec.width - 1 if figure.family == "load" else spec.width, spec.decimals)
        # A '*' marks load times from the plain timer (pytest-benchmark disabled), see the legend.
        if figure.family == "load" and text != MISSING and v.load.timer != "pytest-benchmark":
            text += "*"
        return text

    return Column(spec.title, spec.width, cell, spec.drop_rank, spec.kinds)


RESULT_COLUMN = Column("result", 6, verdict)


def columns(kind: str = "mask") -> tuple[Column, ...]:
    """Every column of the full table for models whose output is read as ``kind``: figures, then the verdict."""
    shown = (_figure_column(f) for f in catalogue.columns())
    return (*(c for c in shown if c.kinds is None or kind in c.kinds), RESULT_COLUMN)


def legend(kinds: Collection[str] = ("mask",), titles: Collection[str] | None = None) -> str:
    """What the columns mean for models of these output ``kinds``, from the catalogue's legend phrases.

    With ``titles``, only the columns a narrow table kept are explained.
    """
    by_family: dict[str, list[str]] = {}
    for figure in catalogue.columns():
        shown = figure.column is not None and (figure.column.kinds is None or set(kinds) & set(figure.column.kinds))
        if titles is not None and figure.column is not None and figure.column.title not in titles:
            shown = False
        if shown and figure.column is not None and figure.column.legend:
            by_family.setdefault(figure.family, []).append(figure.column.legend)
    parts = list(by_family.get("size", []))
    if by_family.get("quality"):
        parts.append(", ".join(by_family["quality"]) + " against the ground truth")
    parts += by_family.get("drift", [])
    if by_family.get("load"):
        parts.append(", ".join(by_family["load"]) + " (* = plain timer, pytest-benchmark disabled)")
    parts.append("result against the configured thresholds, '-' where none is set.")
    return "; ".join(parts)


def render_table(run: RunResults, width: int = 100, with_legend: bool = True) -> list[str]:
    """Summary lines for every model of ``run``, none longer than ``width`` characters."""
    lines: list[str] = []
    for model in run.models.values():
        if lines:
            lines.append("")
        lines += render_model(model, width)
    if lines and with_legend:
        kinds = {m.output_kind for m in run.models.values()}
        titles = {c.title for kind in kinds for c in fitting_columns(width, kind)[0]}
        lines += textwrap.wrap(legend(kinds, titles), width=width)
    return lines


def fitting_columns(width: int, kind: str = "mask") -> tuple[tuple[Column, ...], int]:
    """The columns that fit ``width`` with a readable variant name, and that name's width.

    Narrow terminals lose the secondary figures first (the catalogue's ``drop_rank``:
    E, S, F, ratio, warm load, drift), never the size, MAE, IoU, cold load or the verdict.
    """
    shown = columns(kind)
    for title in [c.title for c in sorted((c for c in shown if c.drop_rank is not None), key=lambda c: c.drop_rank)]:  # type: ignore[arg-type, return-value]
        if width - sum(c.width + 1 for c in shown) >= MIN_NAME_WIDTH:
            break
        shown = tuple(c for c in shown if c.title != title)
    return shown, max(MIN_NAME_WIDTH, width - sum(c.width + 1 for c in shown))


def render_model(model: ModelResults, width: int = 100) -> list[str]:
    """The header line and one row per variant ('base' first) for one model."""
    columns, name_width = fitting_columns(width, model.output_kind)
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
    return lines + note_lines(model, width)


def note_lines(model: ModelResults, width: int = 100) -> list[str]:
    """One wrapped 'note: ...' line per variant whose build found something to say.

    A recipe that compressed nothing shows a ratio of 1.000; the note says why, so the
    row is never read as a compression that kept the size.
    """
    lines: list[str] = []
    for result in ordered_variants(model.variants):
        if result.note:
            lines += textwrap.wrap(f"note: {result.note}", width=width, subsequent_indent="      ", break_on_hyphens=False)
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


def recommendation_lines(
    recommendations: Mapping[str, Any], is_swept: Callable[[str, str], bool], width: int = 100, name_models: bool = False
) -> list[str]:
    """Per model: the recommendation (or Pareto front), and the swept variants that break a threshold.

    ``is_swept(model, recipe)`` says whether only the sweep asked for a variant (its broken
    bounds are reported, not failed); ``name_models`` starts each line with the model's name.
    """
    lines: list[str] = []
    for key, rec in recommendations.items():
        if not rec.has_thresholds and not rec.pareto:
            continue  # no quality measured (no golden set) and nothing to judge: nothing to say
        prefix = f"{key}: " if name_models else ""
        lines += textwrap.wrap(prefix + rec.line, width=width, subsequent_indent="    ", break_on_hyphens=False)
        swept = [f"{recipe} ({'; '.join(broken)})" for recipe, broken in rec.failing.items() if is_swept(key, recipe)]
        if swept:
            text = "swept variants that break a threshold (reported, not failed): " + ", ".join(swept)
            lines += textwrap.wrap(text, width=width, subsequent_indent="    ", break_on_hyphens=False)
    return lines
