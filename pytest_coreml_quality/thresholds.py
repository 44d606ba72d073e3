"""Bounds on figures and how a variant is judged against them.

A :class:`Bound` comes from a threshold option or ini key, or from a marker; either way
it names a catalogue figure, and the figure decides the comparison, which generated item
judges it and whether the base variant is exempt.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pytest_coreml_quality import catalogue
from pytest_coreml_quality.results import BASE_VARIANT, CheckOutcome, VariantResult


@dataclass(frozen=True)
class Bound:
    """A threshold: figure ``metric`` (a catalogue key), judged by the ``check`` item, must be ``op`` ``value``."""

    check: str
    metric: str
    op: str
    value: float

    @classmethod
    def on(cls, figure: catalogue.Figure, value: float, op: str | None = None) -> "Bound":
        return cls(figure.check, figure.key, op or figure.op, value)


def configured_bounds(thresholds: Mapping[str, float]) -> list[Bound]:
    """Bounds from threshold settings (option dest -> value)."""
    return [Bound.on(catalogue.by_option(dest), value) for dest, value in thresholds.items()]


def judge(result: VariantResult, recipe: str, check: str, bounds: Iterable[Bound]) -> list[CheckOutcome]:
    """Outcomes of the ``check`` item's bounds for one variant.

    A figure that was not measured, or that means nothing for the base model (its drift
    and ratio), is not judged. A failed quality check lists the worst images.
    """
    outcomes = []
    for bound in bounds:
        if bound.check != check:
            continue
        figure = catalogue.get(bound.metric)
        if figure is None:
            continue
        value = figure.value(result)
        if value is None or (recipe == BASE_VARIANT and figure.base_exempt):
            continue
        # NaN never passes: a figure that could not be computed must not look fine.
        passed = not math.isnan(value) and (value <= bound.value if bound.op == "<=" else value >= bound.value)
        outcome = CheckOutcome(check=check, metric=figure.key, value=value, bound=bound.value, op=bound.op, passed=passed)
        if not passed:
            outcome.worst = worst_images(result.per_image, figure.key)
        outcomes.append(outcome)
    return outcomes


def worst_images(per_image: Mapping[str, Mapping[str, float]], metric: str, n: int = 5) -> list[tuple[str, float]]:
    """The ``n`` images with the worst per-image ``metric`` (its direction from the catalogue)."""
    found = []
    for name, values in per_image.items():
        value = values.get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
            found.append((name, float(value)))
    # Unknown direction: treat larger as worse, the safer reading for errors.
    best_high = catalogue.higher_is_better(metric) is True
    found.sort(key=lambda item: (item[1] if best_high else -item[1], item[0]))
    return found[:n]
