"""Human correction efforts (HCE, Qin et al., ECCV 2022), through PySODMetrics.

HCE counts the polygon points and regions a person would edit to fix a mask; it
needs OpenCV and scikit-image, so it comes only with the optional ``[sod]`` extra
(``pip install pytest-coreml-quality[sod]``). Without it, HCE is left out of the
results and :func:`hce_unavailable_reason` says why.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pytest_coreml_quality.metrics.core import as_float, binarize


@functools.lru_cache(maxsize=1)
def _hce_evaluator() -> Any | None:
    try:
        from py_sod_metrics import HumanCorrectionEffortMeasure
    except Exception:  # ImportError, or a broken OpenCV wheel raising at import time
        return None
    return HumanCorrectionEffortMeasure()


def hce_available() -> bool:
    """True when PySODMetrics (and its OpenCV / scikit-image) can be imported."""
    return _hce_evaluator() is not None


def hce_unavailable_reason() -> str | None:
    """None when HCE can be computed, else a sentence for reports."""
    if hce_available():
        return None
    return "HCE skipped: install the optional extra 'pytest-coreml-quality[sod]' (pysodmetrics) to compute it"


def hce(pred: NDArray, gt: NDArray) -> float | None:
    """Human correction efforts of ``pred`` against ``gt`` (lower is better); None if unavailable.

    PySODMetrics binarises the prediction at ``> 0.5``; the ground truth is binarised
    with this package's rule (``>= 0.5``).
    """
    evaluator = _hce_evaluator()
    if evaluator is None:
        return None
    return float(evaluator.cal_hce(as_float(pred), np.ascontiguousarray(binarize(gt))))
