"""The threshold markers: their keyword arguments, validation at collection, and checks.

    @pytest.mark.coreml_quality(max_mae=0.05, min_iou=0.9, max_drift=0.01,
                                metric={"s": ">=0.85"}, variants=["q8", "q4"])
    @pytest.mark.coreml_size(max_mb=50, max_ratio=0.3)
    @pytest.mark.coreml_load(max_cold_s=5, max_warm_s=1, min_speedup=2)
"""

from __future__ import annotations

import math
import re
from typing import Any

from pytest_coreml_quality import catalogue
from pytest_coreml_quality.errors import MarkerError
from pytest_coreml_quality.thresholds import Bound

#: Marker name -> the generated item kind whose figures it bounds.
MARKERS: dict[str, str] = {"coreml_quality": "quality", "coreml_size": "size", "coreml_load": "load"}
_BOUND_TEXT = re.compile(r"^\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


def marker_help(marker_name: str) -> str:
    """The ``markers`` ini line of one marker, listing every keyword the catalogue gives it."""
    check = MARKERS[marker_name]
    params = [f"{kw}=None" for kw in catalogue.keywords(check)]
    if check == "quality":
        params.append("metric=None")
    params.append("variants=None")
    what = {"quality": "quality and drift", "size": "size", "load": "load-time"}[check]
    extra = " metric={'<figure>': '>=X'} bounds any quality or drift figure." if check == "quality" else ""
    return (
        f"{marker_name}({', '.join(params)}): after the test, assert {what} thresholds of the Core ML model "
        f"variants (all selected ones, or variants=[...]).{extra}"
    )


def marker_bounds(marker_name: str, args: tuple[Any, ...], kwargs: dict[str, Any], where: str) -> tuple[list[Bound], list[str] | None]:
    """Validate one marker and turn it into bounds plus its ``variants`` list (None: all)."""
    check = MARKERS[marker_name]
    table = catalogue.keywords(check)
    if args:
        raise MarkerError(f"{where}: @pytest.mark.{marker_name} takes keyword arguments only, got {len(args)} positional")
    allowed = sorted([*table, "variants", *(["metric"] if check == "quality" else [])])
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise MarkerError(
            f"{where}: @pytest.mark.{marker_name} got unknown keyword(s) {', '.join(unknown)}; expected {', '.join(allowed)}"
        )
    bounds = []
    for key, value in kwargs.items():
        if key in table:
            figure = table[key]
            bounds.append(Bound.on(figure, _number(where, marker_name, key, value, *figure.bound_range)))
    if "metric" in kwargs:
        bounds.extend(_metric_bounds(where, marker_name, kwargs["metric"]))
    variants = kwargs.get("variants")
    if variants is not None:
        if isinstance(variants, str):
            variants = [v for v in variants.split(",") if v.strip()]
        if not isinstance(variants, (list, tuple)) or not variants or not all(isinstance(v, str) for v in variants):
            raise MarkerError(f"{where}: @pytest.mark.{marker_name}: variants={variants!r}, expected a non-empty list of recipe names")
        variants = [v.strip() for v in variants]
    if not bounds:
        raise MarkerError(f"{where}: @pytest.mark.{marker_name} sets no bound; expected at least one of {', '.join(sorted(table))}")
    return bounds, variants


def _number(where: str, marker: str, key: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise MarkerError(f"{where}: @pytest.mark.{marker}: {key}={value!r}, expected a number")
    if not math.isfinite(value) or not low <= value <= high:
        span = f"between {low:g} and {high:g}" if high != math.inf else f">= {low:g}"
        raise MarkerError(f"{where}: @pytest.mark.{marker}: {key}={value!r} is impossible, expected a number {span}")
    return float(value)


def _metric_bounds(where: str, marker: str, spec: Any) -> list[Bound]:
    """``metric={"s": ">=0.85", "drift_psnr": ">=30"}`` -> bounds on any quality or drift figure."""
    if not isinstance(spec, dict) or not spec:
        raise MarkerError(f"{where}: @pytest.mark.{marker}: metric={spec!r}, expected a dict such as {{'s': '>=0.85'}}")
    known = {f.key: f for f in catalogue.figures(check="quality")}
    bounds = []
    for name, text in spec.items():
        figure = known.get(catalogue.canonical_key(str(name)))
        if figure is None:
            raise MarkerError(f"{where}: @pytest.mark.{marker}: unknown metric {name!r}, expected one of {', '.join(sorted(known))}")
        match = _BOUND_TEXT.match(str(text))
        if match is None:
            raise MarkerError(f"{where}: @pytest.mark.{marker}: metric {name!r}: bound {text!r}, expected '<=NUMBER' or '>=NUMBER'")
        try:
            number = float(match.group(2))
        except ValueError:
            raise MarkerError(f"{where}: @pytest.mark.{marker}: metric {name!r}: bound {text!r} is not a number") from None
        bounds.append(Bound.on(figure, _number(where, marker, str(name), number, *figure.bound_range), match.group(1)))
    return bounds
