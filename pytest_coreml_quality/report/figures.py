"""What every report shows: metric names and directions, value look-ups and number formatting.

The terminal table, HTML page, JUnit properties and baselines all read figures through
these helpers, so a metric missing from a run (HCE without its optional dependency, drift
of the base model) shows as "-" everywhere instead of crashing one report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pytest_coreml_quality.metrics.scores import HIGHER_IS_BETTER
from pytest_coreml_quality.results import VariantResult

MISSING = "-"

# Metrics whose values are not confined to [0, 1]: tolerances and colour scales need their unit.
UNBOUNDED = frozenset({"loss255", "hce", "psnr"})

def higher_is_better(metric: str) -> bool | None:
    """True/False for a known metric (``drift.``/``drift_`` prefix allowed), None when unknown."""
    return HIGHER_IS_BETTER.get(metric.removeprefix("drift.").removeprefix("drift_"))


def lookup(values: Mapping[str, float], name: str) -> float | None:
    """The value of ``name`` in ``values``; None when absent or not a number."""
    value = values.get(name)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def worst_images(per_image: Mapping[str, Mapping[str, float]], metric: str, n: int = 5) -> list[tuple[str, float]]:
    """The ``n`` images with the worst per-image ``metric`` (direction from :func:`higher_is_better`)."""
    found = [(name, v) for name, values in per_image.items() if (v := lookup(values, metric)) is not None]
    found = [(name, v) for name, v in found if not math.isnan(v)]
    # Unknown direction: treat larger as worse, the safer reading for errors.
    best_high = higher_is_better(metric) is True
    found.sort(key=lambda item: (item[1] if best_high else -item[1], item[0]))
    return found[:n]


def verdict(result: VariantResult) -> str:
    """PASS / FAIL against the checked thresholds, "-" when no threshold applied."""
    passed = result.passed
    return MISSING if passed is None else ("PASS" if passed else "FAIL")


def fmt_fixed(value: float | None, width: int, decimals: int) -> str:
    """``value`` with ``decimals`` places, falling back to fewer digits so it fits ``width``."""
    if value is None:
        return MISSING
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    for places in range(decimals, -1, -1):
        text = f"{value:.{places}f}"
        if len(text) <= width:
            return text
    text = f"{value:.{max(width - 6, 1)}g}"
    return text if len(text) <= width else f"{value:.0e}"


def fmt_size_mb(value: float | None, width: int = 8) -> str:
    """Megabytes with three significant digits at least (0.052, 12.34, 176.1)."""
    if value is None or not math.isfinite(value):
        return fmt_fixed(value, width, 0)
    decimals = 3 if value < 1 else 2 if value < 100 else 1
    return fmt_fixed(value, width, decimals)


def elide(text: str, width: int) -> str:
    """Shorten ``text`` to ``width`` characters by replacing its middle with '…'.

    The middle goes because recipe names and paths carry their meaning at both ends
    (``prune50+pal4-int8lut``: the first step and the final format).
    """
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    if width == 1:
        return "…"
    head = width // 2
    tail = width - 1 - head
    return text[:head] + "…" + (text[-tail:] if tail else "")


def ordered_variants(variants: Mapping[str, VariantResult]) -> list[VariantResult]:
    """'base' first, then the variants in the order they were given."""
    base = [v for k, v in variants.items() if k == "base"]
    return base + [v for k, v in variants.items() if k != "base"]

