"""``--coreml-report-json``: the whole run (table figures and per-image values) as one JSON file.

The file is :meth:`RunResults.to_dict` (so ``RunResults.from_dict`` reads it back) plus a
``summary`` section with the figures the terminal table derives (size in MB, speed-up,
verdict), for dashboards that should not recompute them. It is strict JSON: infinities
and NaN (PSNR of identical predictions, a metric undefined on an empty mask) are written
as the strings "inf", "-inf" and "nan"; :func:`read_json` turns them back into floats.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from pytest_coreml_quality.cachefs import atomic_write_text
from pytest_coreml_quality.errors import CoreMLQualityError
from pytest_coreml_quality.report.figures import verdict
from pytest_coreml_quality.results import RunResults, tool_versions

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


def report_dict(run: RunResults) -> dict[str, Any]:
    """The report's content: the run as a dict, tool versions and the derived summary."""
    data = run.to_dict()
    if not data.get("versions"):
        data["versions"] = tool_versions()
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for name, model in run.models.items():
        summary[name] = {
            recipe: {
                "size_mb": v.size_mb,
                "ratio": v.ratio,
                "cold_load_s": v.load.cold_s,
                "warm_load_s": v.load.warm_s,
                "load_speedup": v.load.speedup,
                "load_timer": v.load.timer,
                "verdict": verdict(v),
                "failed_checks": [c.describe() for c in v.checks if not c.passed],
            }
            for recipe, v in model.variants.items()
        }
    data["summary"] = summary
    return encode_floats(data)


def write_json(path: str | os.PathLike[str], run: RunResults) -> Path:
    """Write the JSON report of ``run`` to ``path`` atomically; return the path."""
    text = json.dumps(report_dict(run), indent=2, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


def read_json(path: str | os.PathLike[str]) -> RunResults:
    """Read a JSON report (or a baseline) back into :class:`RunResults`.

    Raises :class:`CoreMLQualityError` naming the file when it is missing or not a report.
    """
    data = load_json_object(path, expected="a JSON report written by --coreml-report-json")
    try:
        return RunResults.from_dict(data)
    except (TypeError, ValueError, AttributeError) as exc:
        raise CoreMLQualityError(
            f"not a pytest-coreml-quality report ({exc})", path=path, field="models", expected="the report's structure"
        ) from None


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
