"""JUnit XML properties (``record_property``) for every figure of a variant.

CI dashboards chart JUnit properties by name, so names are stable and flat:
``coreml.size_mb``, ``coreml.iou``, ``coreml.drift.mae``, ``coreml.cold_load_s``.
"""

from __future__ import annotations

import math

from pytest_coreml_quality.results import VariantResult

PREFIX = "coreml."


def _plain(value: float) -> object:
    # JUnit readers parse property values as text; "inf"/"nan" are clearer there than 'Infinity'.
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def junit_properties(result: VariantResult, prefix: str = PREFIX) -> list[tuple[str, object]]:
    """(name, value) pairs for ``record_property``; figures that were not measured are left out."""
    props: list[tuple[str, object]] = [(f"{prefix}variant", result.recipe)]
    figures: list[tuple[str, float | int | None]] = [
        ("size_bytes", result.size_bytes),
        ("size_mb", None if result.size_mb is None else round(result.size_mb, 6)),
        ("ratio", result.ratio),
        ("params", result.params),
        ("bits_per_weight", result.bits_per_weight),
    ]
    figures += [(name, value) for name, value in result.metrics.items()]
    figures += [(f"drift.{name}", value) for name, value in result.drift.items()]
    figures += [
        ("cold_load_s", result.load.cold_s),
        ("warm_load_s", result.load.warm_s),
        ("load_speedup", result.load.speedup),
    ]
    props += [(prefix + name, _plain(value)) for name, value in figures if value is not None]
    if result.load.cold_s is not None or result.load.warm_s is not None:
        props.append((f"{prefix}load_timer", result.load.timer))
    if result.passed is not None:
        props.append((f"{prefix}passed", result.passed))
    return props
