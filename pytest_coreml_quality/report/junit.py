"""JUnit XML properties (``record_property``) for the figures a generated item measured.

CI dashboards chart JUnit properties by name, so names are stable and flat: ``coreml.``
followed by the figure's catalogue key (``coreml.size_mb``, ``coreml.iou``,
``coreml.drift_mae``, ``coreml.cold_load_s``).
"""

from __future__ import annotations

import math

from pytest_coreml_quality import catalogue
from pytest_coreml_quality.results import VariantResult

PREFIX = "coreml."


def _plain(value: float) -> object:
    # JUnit readers parse property values as text; "inf"/"nan" are clearer there than 'Infinity'.
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return round(value, 6)


def junit_properties(result: VariantResult, check: str | None = None, prefix: str = PREFIX) -> list[tuple[str, object]]:
    """(name, value) pairs of the figures the ``check`` item judges (all with None); unmeasured ones left out."""
    props: list[tuple[str, object]] = [(prefix + f.key, _plain(value)) for f, value in catalogue.values(result, check=check)]
    if check in (None, "load") and (result.load.cold_s is not None or result.load.warm_s is not None):
        props.append((f"{prefix}load_timer", result.load.timer))
    return props
