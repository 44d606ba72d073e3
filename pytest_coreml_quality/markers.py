"""The threshold markers: their keyword arguments, validation at collection, and checks.

    @pytest.mark.coreml_quality(max_mae=0.05, min_iou=0.9, max_drift=0.01,
                                metric={"s": ">=0.85"}, variants=["q8", "q4"])
    @pytest.mark.coreml_size(max_mb=50, max_ratio=0.3)
    @pytest.mark.coreml_load(max_cold_s=5, max_warm_s=1, min_speedup=2)
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from pytest_coreml_quality.session import Bound

# keyword -> (metric, op, lowest allowed, highest allowed)
_QUALITY = {
    "max_mae": ("mae", "<=", 0.0, 1.0),
    "min_iou": ("iou", ">=", 0.0, 1.0),
    "min_dice": ("dice", ">=", 0.0, 1.0),
    "min_f": ("max_f", ">=", 0.0, 1.0),
    "min_s": ("s", ">=", 0.0, 1.0),
    "min_e": ("adp_e", ">=", 0.0, 1.0),
    "max_drift": ("drift_mae", "<=", 0.0, 1.0),
    "max_flip": ("drift_flip_share", "<=", 0.0, 1.0),
}
_SIZE = {"max_mb": ("size_mb", "<=", 0.0, math.inf), "max_ratio": ("ratio", "<=", 0.0, math.inf)}
_LOAD = {
    "max_cold_s": ("cold_s", "<=", 0.0, math.inf),
    "max_warm_s": ("warm_s", "<=", 0.0, math.inf),
    "min_speedup": ("speedup", ">=", 0.0, math.inf),
}
MARKERS: dict[str, tuple[str, dict[str, tuple[str, str, float, float]]]] = {
    "coreml_quality": ("quality", _QUALITY),
    "coreml_size": ("size", _SIZE),
    "coreml_load": ("load", _LOAD),
}
_BOUND_TEXT = re.compile(r"^\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


class MarkerError(ValueError):
    """A marker's arguments are unknown or impossible; the message names the test."""


def marker_bounds(marker_name: str, args: tuple[Any, ...], kwargs: dict[str, Any], where: str, known_metrics: Iterable[str]) -> tuple[list[Bound], list[str] | None]:
    """Validate one marker and turn it into bounds plus its ``variants`` list (None: all)."""
    check, table = MARKERS[marker_name]
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
            metric, op, low, high = table[key]
            bounds.append(Bound(check, metric, op, _number(where, marker_name, key, value, low, high)))
    if "metric" in kwargs:
        bounds.extend(_metric_bounds(where, marker_name, kwargs["metric"], set(known_metrics)))
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
    if not low <= value <= high:
        span = f"between {low:g} and {high:g}" if high != math.inf else f">= {low:g}"
        raise MarkerError(f"{where}: @pytest.mark.{marker}: {key}={value!r} is impossible, expected a number {span}")
    return float(value)


def _metric_bounds(where: str, marker: str, spec: Any, known: set[str]) -> list[Bound]:
    """``metric={"s": ">=0.85", "drift_psnr": ">=30"}`` -> bounds on any reported metric."""
    if not isinstance(spec, dict) or not spec:
        raise MarkerError(f"{where}: @pytest.mark.{marker}: metric={spec!r}, expected a dict such as {{'s': '>=0.85'}}")
    bounds = []
    for name, text in spec.items():
        if name not in known:
            raise MarkerError(f"{where}: @pytest.mark.{marker}: unknown metric {name!r}, expected one of {', '.join(sorted(known))}")
        match = _BOUND_TEXT.match(str(text))
        if match is None:
            raise MarkerError(f"{where}: @pytest.mark.{marker}: metric {name!r}: bound {text!r}, expected '<=NUMBER' or '>=NUMBER'")
        bounds.append(Bound("quality", name, match.group(1), float(match.group(2))))
    return bounds
