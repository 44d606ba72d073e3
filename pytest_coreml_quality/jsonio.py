"""Strict JSON for reports and baselines: non-finite floats as text, clear errors on reading.

PSNR of identical predictions is infinite and a metric undefined on an empty mask is NaN;
strict JSON has neither, so they are written as the strings "inf", "-inf" and "nan".
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from pytest_coreml_quality.errors import CoreMLQualityError

_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def encode_floats(value: Any) -> Any:
    """``value`` with non-finite floats replaced by "inf" / "-inf" / "nan" and tuples by lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): encode_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_floats(v) for v in value]
    return value


def decode_floats(value: Any) -> Any:
    """Inverse of :func:`encode_floats` for the strings it writes (other strings are kept)."""
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    if isinstance(value, dict):
        return {k: decode_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_floats(v) for v in value]
    return value


def load_json_object(path: str | os.PathLike[str], expected: str) -> dict[str, Any]:
    """The JSON object stored at ``path`` with non-finite floats decoded; clear errors otherwise."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CoreMLQualityError("file not found", path=p, expected=expected) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CoreMLQualityError(f"cannot read the file ({exc})", path=p, expected=expected) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CoreMLQualityError(
            f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})", path=p, expected=expected
        ) from None
    if not isinstance(data, dict):
        raise CoreMLQualityError(f"holds a JSON {type(data).__name__}", path=p, expected=f"a JSON object: {expected}")
    return decode_floats(data)
