"""What every report shows: value look-ups, verdicts and number formatting.

Names, directions and units of figures come from :mod:`pytest_coreml_quality.catalogue`.
The terminal table and HTML page read values through these helpers, so a figure missing
from a run (HCE without its optional dependency, drift of the base model) shows as "-"
everywhere instead of crashing one report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pytest_coreml_quality.results import VariantResult

MISSING = "-"


def lookup(values: Mapping[str, float], name: str) -> float | None:
    """The value of ``name`` in ``values``; None when absent or not a number."""
    value = values.get(name)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


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

