"""Structural metrics: S-measure, E-measure and weighted F-measure.

Written from the papers' definitions, following the MATLAB reference code's
conventions (as PySODMetrics does), and tested to match PySODMetrics to 1e-6.
Only numpy and SciPy are needed (SciPy for the distance transform of the weighted F).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from pytest_coreml_quality.metrics.core import EPS, FloatArray, adaptive_threshold, as_float, threshold_counts
from pytest_coreml_quality.metrics.reference import Reference

# --- S-measure (Fan et al., ICCV 2017) --------------------------------------------------


def s_measure(pred: NDArray, gt: "NDArray | Reference", alpha: float = 0.5) -> float:
    """Structure measure: ``alpha * object score + (1 - alpha) * region score``."""
    p, ref = as_float(pred), Reference.of(gt)
    if ref.fg_share == 0:
        return float(1.0 - np.mean(p))
    if ref.fg_share == 1:
        return float(np.mean(p))
    score = alpha * _object_score(p, ref) + (1 - alpha) * _region_score(p, ref)
    return float(max(0.0, score))


def _object_similarity(values: FloatArray) -> float:
    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1)) if values.size > 1 else 0.0
    return 2.0 * mean / (mean * mean + 1.0 + std + EPS)


def _object_score(p: FloatArray, ref: Reference) -> float:
    g = ref.binary
    fg = _object_similarity(p[g])
    bg = _object_similarity(1.0 - p[ref.background])
    return ref.fg_share * fg + (1.0 - ref.fg_share) * bg


def _region_score(p: FloatArray, ref: Reference) -> float:
    g = ref.binary_float
    h, w = g.shape
    # The split point is the foreground centroid, +1 as in the MATLAB code (1-based ranges).
    cy, cx = (c + 1 for c in ref.centroid)
    area = h * w
    w_lt = cx * cy / area
    w_rt = cy * (w - cx) / area
    w_lb = (h - cy) * cx / area
    w_rb = 1.0 - w_lt - w_rt - w_lb
    return (
        w_lt * _ssim(p[:cy, :cx], g[:cy, :cx])
        + w_rt * _ssim(p[:cy, cx:], g[:cy, cx:])
        + w_lb * _ssim(p[cy:, :cx], g[cy:, :cx])
        + w_rb * _ssim(p[cy:, cx:], g[cy:, cx:])
    )


def _ssim(p: FloatArray, g: FloatArray) -> float:
    n = p.size
    mx, my = (float(np.mean(p)), float(np.mean(g))) if n else (0.0, 0.0)
    dx, dy = p - mx, g - my
    # Dividing by N - 1 + eps keeps a 1-pixel quadrant finite, as the reference does.
    var_x = float(np.sum(dx * dx)) / (n - 1 + EPS)
    var_y = float(np.sum(dy * dy)) / (n - 1 + EPS)
    cov = float(np.sum(dx * dy)) / (n - 1 + EPS)
    num = 4.0 * mx * my * cov
    den = (mx * mx + my * my) * (var_x + var_y)
    if num != 0:
        return num / (den + EPS)
    return 1.0 if den == 0 else 0.0


# --- E-measure (Fan et al., IJCAI 2018) -------------------------------------------------


def _enhanced_sum(tp: NDArray, fp: NDArray, n_fg: int, n: int) -> NDArray:
    """Sum of the enhanced-alignment matrix of a binary prediction, from its counts.

    With binary maps the alignment matrix takes only four values (one per
    prediction/ground-truth combination), so counts are enough; ``tp``/``fp`` may be
    arrays (one entry per threshold).
    """
    tp = np.asarray(tp, dtype=np.float64)
    fp = np.asarray(fp, dtype=np.float64)
    selected = tp + fp
    if n_fg == 0:
        return n - selected
    if n_fg == n:
        return selected
    fn = n_fg - tp
    tn = (n - selected) - fn
    pred_mean = selected / n
    gt_mean = n_fg / n
    total = np.zeros_like(tp)
    for count, dp, dg in (
        (tp, 1.0 - pred_mean, 1.0 - gt_mean),
        (fp, 1.0 - pred_mean, -gt_mean),
        (fn, -pred_mean, 1.0 - gt_mean),
        (tn, -pred_mean, -gt_mean),
    ):
        align = 2.0 * dp * dg / (dp * dp + dg * dg + EPS)
        total = total + ((align + 1.0) ** 2 / 4.0) * count
    return total


def emeasure_from_counts(tp: NDArray, fp: NDArray, n_fg: int, n: int) -> FloatArray:
    """E-measure per threshold from true/false positive counts per threshold."""
    # The reference divides by N - 1 (+ eps); on a 1-pixel image that is eps and the
    # figure would be ~4.5e15, so one pixel is divided by 1 and stays in [0, 1].
    return _enhanced_sum(tp, fp, n_fg, n) / (max(n - 1, 1) + EPS)


def emeasure_curve(pred: NDArray, gt: "NDArray | Reference") -> FloatArray:
    """E-measure at each of the 256 thresholds ``level >= t`` (index t = 0..255)."""
    ref = Reference.of(gt)
    tp, fp = threshold_counts(as_float(pred), ref.binary)
    return emeasure_from_counts(tp, fp, ref.n_fg, ref.binary.size)


def adaptive_emeasure(pred: NDArray, gt: "NDArray | Reference") -> float:
    """E-measure with the prediction binarised at twice its mean (capped at 1)."""
    p, ref = as_float(pred), Reference.of(gt)
    g = ref.binary
    selected = p >= adaptive_threshold(p)
    tp = np.count_nonzero(selected & g)
    fp = np.count_nonzero(selected) - tp
    return float(emeasure_from_counts(tp, fp, ref.n_fg, g.size))


# --- weighted F-measure (Margolin et al., CVPR 2014) ----------------------------------------


def _gaussian_taps(size: int = 7, sigma: float = 5.0) -> FloatArray:
    # MATLAB's fspecial('gaussian', 7, 5) is separable: the outer product of these taps.
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    taps = np.exp(-(x * x) / (2 * sigma * sigma))
    return taps / taps.sum()


_TAPS = _gaussian_taps()
_HALF = len(_TAPS) // 2


def _smooth_box(values: FloatArray, rows: slice, cols: slice) -> FloatArray:
    """The 7x7 Gaussian filter of ``values`` (zero outside ``values``), only inside a box.

    The weighted F-measure uses the filtered errors only on foreground pixels, so
    filtering the foreground's bounding box is enough; as a separable filter written
    as shifted sums it is several times faster than a 2-D convolution of the whole image.
    """
    padded = np.pad(values[max(rows.start - _HALF, 0) : rows.stop + _HALF, max(cols.start - _HALF, 0) : cols.stop + _HALF], (
        (_HALF - min(rows.start, _HALF), _HALF - min(values.shape[0] - rows.stop, _HALF)),
        (_HALF - min(cols.start, _HALF), _HALF - min(values.shape[1] - cols.stop, _HALF)),
    ))
    h, w = rows.stop - rows.start, cols.stop - cols.start
    vertical = _TAPS[0] * padded[0:h, :]
    for k in range(1, len(_TAPS)):
        vertical += _TAPS[k] * padded[k : k + h, :]
    out = _TAPS[0] * vertical[:, 0:w]
    for k in range(1, len(_TAPS)):
        out += _TAPS[k] * vertical[:, k : k + w]
    return out


def weighted_fmeasure(pred: NDArray, gt: "NDArray | Reference", beta2: float = 1.0) -> float:
    """Weighted F-measure; 0 when the ground truth has no foreground."""
    p, ref = as_float(pred), Reference.of(gt)
    g = ref.binary
    if ref.n_fg == 0:
        return 0.0
    err = p - ref.binary_float
    np.abs(err, out=err)
    # Background pixels take the error of their nearest foreground pixel (pixel dependency);
    # only needed where the filter below reads them: the foreground's box + 3 px.
    dep_rows, dep_cols = ref.dependency_box
    iy, ix = ref.nearest_fg
    err_dep = err[dep_rows, dep_cols][iy, ix]
    rows, cols = ref.fg_box
    inner_rows = slice(rows.start - dep_rows.start, rows.stop - dep_rows.start)
    inner_cols = slice(cols.start - dep_cols.start, cols.stop - dep_cols.start)
    smoothed = _smooth_box(err_dep, inner_rows, inner_cols)
    # Inside the object, an error is replaced by its smoothed value when that is smaller
    # (in place: err is ours, and every read of it above is done or copied).
    min_err = err
    box_err, box_g = err[rows, cols], g[rows, cols]
    min_err[rows, cols] = np.where(box_g & (smoothed < box_err), smoothed, box_err)
    # Pixel importance: background errors far from the object weigh up to twice as much.
    weighted = np.multiply(min_err, ref.importance, out=min_err)
    fg_err_sum = float(np.sum(weighted, where=g))
    fp_w = float(np.sum(weighted)) - fg_err_sum
    tp_w = ref.n_fg - fg_err_sum
    recall = 1.0 - fg_err_sum / ref.n_fg
    precision = tp_w / (tp_w + fp_w + EPS)
    return float((1 + beta2) * recall * precision / (recall + beta2 * precision + EPS))
