"""Pixel metrics in plain numpy: MAE, the article's 0..255 loss, IoU, Dice, F-measure.

Conventions shared by every metric of this package:

* ``pred`` is a float mask in [0, 1] (soft probabilities are kept, never stretched:
  unlike PySODMetrics' ``normalize=True`` we do not min-max normalise predictions,
  because that would hide a compressed model whose outputs shrink towards 0.5).
* ``gt`` is the reference mask. Soft references are binarised with
  :func:`binarize` (``value >= 0.5``) wherever a metric needs a binary mask;
  MAE and the article's loss use the soft values as they are.
* Internally everything is computed in float64, so results match PySODMetrics fed
  with the same float64 prediction and boolean ground truth.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

#: MATLAB's ``eps`` (as PySODMetrics uses): guards divisions without changing results.
EPS = float(np.spacing(1))
#: The rule for turning a soft mask into a binary one, everywhere in this project.
BINARY_THRESHOLD = 0.5
#: beta^2 of the F-measure, as in the salient-object-detection literature.
F_BETA2 = 0.3

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


def as_float(mask: NDArray) -> FloatArray:
    """``mask`` as a 2-D float64 array (uint8 masks are scaled from 0..255)."""
    arr = np.asarray(mask)
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if arr.dtype == np.bool_:
        return arr.astype(np.float64)
    return arr.astype(np.float64, copy=False)


def binarize(mask: NDArray, threshold: float = BINARY_THRESHOLD) -> BoolArray:
    """``mask >= threshold`` (boolean masks pass through unchanged)."""
    arr = np.asarray(mask)
    if arr.dtype == np.bool_:
        return arr
    return as_float(arr) >= threshold


def mae(pred: NDArray, gt: NDArray) -> float:
    """Mean absolute error on [0, 1] between two masks (soft values kept)."""
    return float(np.mean(np.abs(as_float(pred) - as_float(gt))))


def to_uint8(mask: NDArray) -> NDArray[np.uint8]:
    """Round a [0, 1] mask to 0..255 (how an 8-bit mask file would store it)."""
    arr = np.asarray(mask)
    if arr.dtype == np.uint8:
        return arr
    return np.rint(np.clip(as_float(arr), 0.0, 1.0) * 255.0).astype(np.uint8)


def article_loss(pred: NDArray, gt: NDArray) -> float:
    """The article's loss: mean absolute difference of the 8-bit masks, on 0..255.

    Both masks are rounded to 8 bits first (as the article's saved masks are), then
    subtracted in a signed wide dtype: the article subtracted uint8 arrays, where
    ``3 - 5`` wraps around to 254.
    """
    a = to_uint8(pred).astype(np.int16)
    b = to_uint8(gt).astype(np.int16)
    return float(np.mean(np.abs(a - b)))


def iou(pred: NDArray, gt: NDArray, threshold: float = BINARY_THRESHOLD) -> float:
    """Intersection over union of ``pred >= threshold`` and the binarised ``gt``.

    Two empty masks agree perfectly: IoU 1.
    """
    p = binarize(pred, threshold)
    g = binarize(gt)
    union = np.count_nonzero(p | g)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(p & g) / union)


def dice(pred: NDArray, gt: NDArray, threshold: float = BINARY_THRESHOLD) -> float:
    """Dice coefficient (F1) of ``pred >= threshold`` and the binarised ``gt`` (1 if both empty)."""
    p = binarize(pred, threshold)
    g = binarize(gt)
    total = np.count_nonzero(p) + np.count_nonzero(g)
    if total == 0:
        return 1.0
    return float(2.0 * np.count_nonzero(p & g) / total)


def quantize_255(pred: FloatArray) -> NDArray[np.uint8]:
    """Truncate ``pred * 255`` to 0..255 levels: the 256 thresholds of the F/E curves.

    Truncation (not rounding) is what PySODMetrics does; we keep it to match its curves.
    """
    return (np.clip(pred, 0.0, 1.0) * 255).astype(np.uint8)


def threshold_counts(pred: FloatArray, gt: BoolArray) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """For every threshold t in 0..255: (# gt-foreground, # gt-background) pixels with level >= t."""
    return counts_at_levels(quantize_255(pred), gt)


def counts_at_levels(
    levels: NDArray[np.uint8], gt: BoolArray, fg_offset: NDArray[np.uint16] | None = None
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """:func:`threshold_counts` from already quantised levels (one pass over the pixels).

    ``fg_offset`` is ``gt.astype(np.uint16) << 8`` when the caller has it already (a prepared reference).
    """
    # One bincount over (level + 256 * is_foreground) gives both histograms at once
    # (in uint16: 0..511 fits, and a quarter of the memory of intp).
    offset = gt.astype(np.uint16) << 8 if fg_offset is None else fg_offset
    combined = levels + offset
    hist = np.bincount(combined.ravel(), minlength=512)
    bg_hist, fg_hist = hist[:256], hist[256:]
    # Reverse cumulative sums: index t counts every level >= t.
    fg_ge = np.cumsum(fg_hist[::-1])[::-1]
    bg_ge = np.cumsum(bg_hist[::-1])[::-1]
    return fg_ge.astype(np.int64), bg_ge.astype(np.int64)


def f_from_pr(precision: NDArray, recall: NDArray, beta2: float = F_BETA2) -> NDArray:
    """F-measure from precision and recall, 0 where both are 0."""
    num = (1 + beta2) * precision * recall
    den = np.where(num == 0, 1.0, beta2 * precision + recall)
    return num / den


def fmeasure_from_counts(tp: NDArray, fp: NDArray, n_fg: int, beta2: float = F_BETA2) -> FloatArray:
    """F-measure per threshold from true/false positive counts per threshold."""
    predicted = np.maximum(tp + fp, 1)  # a threshold that selects nothing has TP = 0 anyway
    return f_from_pr(tp / predicted, tp / max(n_fg, 1), beta2)


def fmeasure_curve(pred: NDArray, gt: NDArray, beta2: float = F_BETA2) -> FloatArray:
    """F-measure at each of the 256 thresholds ``level >= t`` (index t = 0..255)."""
    p, g = as_float(pred), binarize(gt)
    tp, fp = threshold_counts(p, g)
    return fmeasure_from_counts(tp, fp, int(np.count_nonzero(g)), beta2)


def adaptive_threshold(pred: FloatArray) -> float:
    """Twice the mean prediction, capped at 1 (the usual adaptive threshold)."""
    return min(2.0 * float(np.mean(pred)), 1.0)


def adaptive_fmeasure(pred: NDArray, gt: NDArray, beta2: float = F_BETA2) -> float:
    """F-measure with the prediction binarised at :func:`adaptive_threshold`."""
    p, g = as_float(pred), binarize(gt)
    selected = p >= adaptive_threshold(p)
    tp = np.count_nonzero(selected & g)
    if tp == 0:
        return 0.0
    precision = tp / np.count_nonzero(selected)
    recall = tp / np.count_nonzero(g)
    return float((1 + beta2) * precision * recall / (beta2 * precision + recall))
