"""How far a variant's masks moved from the base model's masks (no ground truth needed)."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from pytest_coreml_quality.metrics.core import BINARY_THRESHOLD, as_float


def max_abs_diff(pred: NDArray, base: NDArray) -> float:
    """Largest per-pixel difference between two [0, 1] masks."""
    return float(np.max(np.abs(as_float(pred) - as_float(base))))


def psnr(pred: NDArray, base: NDArray) -> float:
    """Peak signal-to-noise ratio in dB with peak 1 (masks on [0, 1]); ``inf`` when identical."""
    mse = float(np.mean((as_float(pred) - as_float(base)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(1.0 / mse)


def flip_share(pred: NDArray, base: NDArray, threshold: float = BINARY_THRESHOLD) -> float:
    """Share of pixels on opposite sides of ``threshold`` (``>=``) in the two masks."""
    a = as_float(pred) >= threshold
    b = as_float(base) >= threshold
    return float(np.count_nonzero(a != b)) / a.size
