"""Which variant to ship: the smallest one that passes every threshold.

A pure function of one model's results and the bounds in force. Every configured bound
is judged (quality, drift, size, download size, load: :func:`thresholds.judge` over all
generated checks); a variant qualifies when it passes all of them and has every bounded
figure measured. The smallest qualifying variant (size on disk) wins; equal sizes break
on the chosen quality metric, then on the name. Without thresholds there is no single
answer, so the Pareto front of size against the metric is given instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_coreml_quality import catalogue
from pytest_coreml_quality.results import BASE_VARIANT, ModelResults, VariantResult
from pytest_coreml_quality.thresholds import Bound, judge

DEFAULT_METRIC = "iou"


@dataclass
class Recommendation:
    """The answer for one model. ``recipe`` is None when no thresholds are set or none passes."""

    model: str
    metric: str
    recipe: str | None = None
    thresholds: list[str] = field(default_factory=list)  # "iou >= 0.9", in force
    passing: list[str] = field(default_factory=list)  # recipes that pass every threshold, smallest first
    failing: dict[str, list[str]] = field(default_factory=dict)  # recipe -> the bounds it breaks
    unmeasured: dict[str, list[str]] = field(default_factory=dict)  # recipe -> bounded figures not measured
    pareto: list[str] = field(default_factory=list)  # size-vs-metric front, smallest first
    line: str = ""

    @property
    def has_thresholds(self) -> bool:
        return bool(self.thresholds)

    @property
    def failed(self) -> bool:
        """True when thresholds are set and no variant passes them all."""
        return self.has_thresholds and self.recipe is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recommend(model: ModelResults, bounds: Iterable[Bound], metric: str = DEFAULT_METRIC) -> Recommendation:
    """The recommendation for ``model`` under ``bounds`` (see the module docstring)."""
    bounds = list(bounds)
    rec = Recommendation(model=model.model, metric=metric, thresholds=[f"{b.metric} {b.op} {b.value:g}" for b in bounds])
    sized = [v for v in model.variants.values() if v.size_mb is not None]
    rec.pareto = [v.recipe for v in pareto_front(sized, metric)]
    if bounds:
        for v in sized:
            broken, missing = _verdict(v, bounds)
            if broken:
                rec.failing[v.recipe] = broken
            elif missing:
                rec.unmeasured[v.recipe] = missing
            else:
                rec.passing.append(v.recipe)
        order = sorted((model.variants[r] for r in rec.passing), key=lambda v: _rank(v, metric))
        rec.passing = [v.recipe for v in order]
        rec.recipe = rec.passing[0] if rec.passing else None
    rec.line = describe(rec, model)
    return rec


def _verdict(v: VariantResult, bounds: list[Bound]) -> tuple[list[str], list[str]]:
    """(bounds broken, bounded figures not measured) for one variant."""
    broken = []
    for check in dict.fromkeys(b.check for b in bounds):  # in the order the bounds came
        broken += [f"{o.metric} {o.value:.4g} (bound {o.op} {o.bound:g})" for o in judge(v, v.recipe, check, bounds) if not o.passed]
    missing = []
    for b in bounds:
        figure = catalogue.get(b.metric)
        exempt = figure is not None and figure.base_exempt and v.recipe == BASE_VARIANT
        if figure is not None and not exempt and figure.value(v) is None and b.metric not in missing:
            missing.append(b.metric)
    return broken, missing


def _quality(v: VariantResult, metric: str) -> float | None:
    figure = catalogue.get(metric)
    value = None if figure is None else figure.value(v)
    return None if value is None or math.isnan(value) else value


def _better_first(v: VariantResult, metric: str) -> float:
    """A sort key that puts the better metric first; unmeasured last."""
    value = _quality(v, metric)
    if value is None:
        return math.inf
    return -value if catalogue.higher_is_better(metric) is not False else value


def _rank(v: VariantResult, metric: str) -> tuple[float, float, str]:
    return (float(v.size_bytes or 0), _better_first(v, metric), v.recipe)


def pareto_front(variants: Iterable[VariantResult], metric: str = DEFAULT_METRIC) -> list[VariantResult]:
    """Variants no other variant beats on both size and ``metric`` (smallest first).

    A variant is beaten when another is no larger and no worse, and strictly better in
    one of the two. Variants without the metric are left out.
    """
    measured = [v for v in variants if v.size_bytes is not None and _quality(v, metric) is not None]
    front: list[VariantResult] = []
    best = math.inf  # best (smallest) metric key seen among smaller variants
    for v in sorted(measured, key=lambda v: _rank(v, metric)):
        key = _better_first(v, metric)
        if key < best:
            front.append(v)
            best = key
    return front


def _label(metric: str) -> str:
    figure = catalogue.get(metric)
    if figure is not None and figure.column is not None:
        return figure.column.title
    return metric


def _value(v: VariantResult, metric: str) -> str:
    value = _quality(v, metric)
    return "-" if value is None else f"{value:.3f}"


def describe(rec: Recommendation, model: ModelResults) -> str:
    """The one line under the table.

    ``recommended: q6 - 66.1 MB (0.375x), IoU 0.789 (base 0.790), drift 0.004``
    """
    label = _label(rec.metric)
    base = model.variants.get(BASE_VARIANT)
    if rec.recipe is not None:
        v = model.variants[rec.recipe]
        text = f"recommended: {v.recipe} - {v.size_mb:.3g} MB"
        if v.ratio is not None and v.recipe != BASE_VARIANT:
            text += f" ({v.ratio:.3f}x)"
        if _quality(v, rec.metric) is not None:
            text += f", {label} {_value(v, rec.metric)}"
            if base is not None and base is not v and _quality(base, rec.metric) is not None:
                text += f" (base {_value(base, rec.metric)})"
        drift = v.drift.get("mae")
        if v.recipe != BASE_VARIANT and isinstance(drift, (int, float)):
            text += f", drift {drift:.3f}"
        return text
    if rec.has_thresholds:
        return f"recommended: none - no variant passes {', '.join(rec.thresholds)}"
    front = ", ".join(f"{r} ({model.variants[r].size_mb:.3g} MB, {label} {_value(model.variants[r], rec.metric)})" for r in rec.pareto)
    return (
        f"no thresholds set: the size/{label} Pareto front is {front or 'empty (nothing measured)'}; "
        "set thresholds (e.g. --coreml-min-iou) to have one recommended"
    )
