"""``--coreml-report-json``: the whole run (table figures and per-image values) as one JSON file.

The file is :meth:`RunResults.to_dict` (so ``RunResults.from_dict`` reads it back) plus a
``summary`` section with every figure of the catalogue under its one name (``size_mb``,
``iou``, ``drift_mae``, ``cold_load_s``...) and the verdict, for dashboards that should not
recompute them. It is strict JSON: infinities
and NaN (PSNR of identical predictions, a metric undefined on an empty mask) are written
as the strings "inf", "-inf" and "nan"; :func:`read_json` turns them back into floats.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pytest_coreml_quality import catalogue
from pytest_coreml_quality.cachefs import atomic_write_text
from pytest_coreml_quality.jsonio import decode_floats, encode_floats, load_json_object  # noqa: F401  (re-exported)
from pytest_coreml_quality.errors import CoreMLQualityError
from pytest_coreml_quality.report.figures import verdict
from pytest_coreml_quality.results import RunResults, tool_versions


def report_dict(
    run: RunResults, recommendations: dict[str, dict[str, Any]] | None = None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The report's content: the run as a dict, tool versions, the derived summary and,
    when given, the ``recommendation`` of each model (:meth:`Recommendation.to_dict`) and
    ``extra`` top-level sections (a shard run's ``shard`` section, see :mod:`.shard`)."""
    data = run.to_dict()
    if not data.get("versions"):
        data["versions"] = tool_versions()
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for name, model in run.models.items():
        summary[name] = {
            recipe: {
                # Every catalogue figure under its one name; None where it was not measured.
                **{f.key: f.value(v) for f in catalogue.figures()},
                "load_timer": v.load.timer,
                # True when the recipe compressed no weight (None: not built in this run).
                "unchanged": v.unchanged,
                "note": v.note,
                "verdict": verdict(v),
                "failed_checks": [f"{c.check} {c.describe()}" for c in v.checks if not c.passed],
            }
            for recipe, v in model.variants.items()
        }
    data["summary"] = summary
    if recommendations is not None:
        data["recommendation"] = recommendations
    data.update(extra or {})
    return encode_floats(data)


def write_json(
    path: str | os.PathLike[str],
    run: RunResults,
    recommendations: dict[str, dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the JSON report of ``run`` to ``path`` atomically; return the path."""
    text = json.dumps(report_dict(run, recommendations, extra), indent=2, allow_nan=False) + "\n"
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
