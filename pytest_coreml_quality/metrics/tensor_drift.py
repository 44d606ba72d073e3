"""How far a variant's raw outputs moved from the base model's: heat maps, depth, embeddings, images.

No ground truth is needed and nothing is read as a mask: both outputs are compared as
the arrays the model returned (colour image outputs as their H x W x C pixel values).
Every function takes the variant's array first and the base model's second.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray


def _pair(pred: Any, base: Any) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    a, b = np.asarray(pred, dtype=np.float64), np.asarray(base, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"output shape {a.shape} differs from the base model's {b.shape}")
    return a, b


def mae(pred: Any, base: Any) -> float:
    """Mean absolute difference, in the output's own units."""
    a, b = _pair(pred, base)
    return float(np.mean(np.abs(a - b)))


def max_abs(pred: Any, base: Any) -> float:
    """Largest absolute difference of any one value."""
    a, b = _pair(pred, base)
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def psnr(pred: Any, base: Any) -> float:
    """PSNR in dB with the base output's value range (max - min) as the peak; ``inf`` when identical.

    A constant base output has no range: the peak is then 1, so the figure stays finite.
    """
    a, b = _pair(pred, base)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    peak = float(b.max() - b.min()) if b.size else 0.0
    return 10.0 * math.log10((peak if peak > 0 else 1.0) ** 2 / mse)


def cosine(pred: Any, base: Any) -> float:
    """Cosine similarity of the two outputs as flat vectors (1: same direction).

    Two all-zero outputs are identical (1); one all-zero output against another is 0.
    """
    a, b = _pair(pred, base)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.clip(np.dot(a.ravel(), b.ravel()) / (na * nb), -1.0, 1.0))


# Wang et al. 2004: an 11-tap Gaussian window (sigma 1.5, cut at 3.5 sigma), K1 = 0.01, K2 = 0.03.
SSIM_SIGMA, SSIM_TRUNCATE, SSIM_K1, SSIM_K2 = 1.5, 3.5, 0.01, 0.03
SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)


def ssim(pred: Any, base: Any) -> float:
    """Mean SSIM of two images (H x W, or H x W x C averaged over channels), Gaussian-window form.

    The dynamic range is the base image's (max - min, 1 when constant), as for :func:`psnr`.
    Windows are Gaussian-weighted with reflected borders, and the mean leaves out a border of
    the window's radius, as the reference implementation (scikit-image) does.
    """
    from scipy.ndimage import gaussian_filter

    a, b = _pair(pred, base)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    if a.ndim != 3 or min(a.shape[:2]) < 2 * SSIM_RADIUS + 1:
        raise ValueError(f"SSIM needs images of at least {2 * SSIM_RADIUS + 1}x{2 * SSIM_RADIUS + 1} pixels, got shape {a.shape}")
    span = float(b.max() - b.min())
    c1, c2 = (SSIM_K1 * (span or 1.0)) ** 2, (SSIM_K2 * (span or 1.0)) ** 2
    scores = []
    for channel in range(a.shape[2]):
        x, y = a[..., channel], b[..., channel]

        def blur(v: NDArray[np.float64]) -> NDArray[np.float64]:
            return gaussian_filter(v, SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect")

        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        r = SSIM_RADIUS
        scores.append(float(s[r:-r, r:-r].mean()))
    return float(np.mean(scores))


def heatmap_peaks(heatmaps: Any) -> NDArray[np.int64]:
    """(K, 2) row/column of each heat map's maximum; heat maps laid out (K, H, W) after leading 1s."""
    arr = np.asarray(heatmaps)
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"heat maps of shape {np.asarray(heatmaps).shape}: expected (K, H, W) or (1, K, H, W)")
    k, h, w = arr.shape
    flat = arr.reshape(k, h * w).argmax(axis=1)
    return np.stack([flat // w, flat % w], axis=1)


def keypoints_moved(pred: Any, base: Any, tolerance: float = 2.0) -> float:
    """Share of keypoints (heat-map channels) whose maximum moved more than ``tolerance`` pixels."""
    a, b = _pair(pred, base)
    pa, pb = heatmap_peaks(a), heatmap_peaks(b)
    distance = np.sqrt(((pa - pb) ** 2).sum(axis=1))
    return float(np.mean(distance > tolerance)) if distance.size else 0.0


def tensor_values(pred: Any, base: Any, keypoint_tolerance: float | None = None, image: bool = False) -> dict[str, float]:
    """Every per-image tensor drift value (names as in the catalogue, without ``drift_``).

    ``keypoint_tolerance`` (pixels) adds the share of moved keypoints, for pose heat maps;
    ``image`` adds SSIM, for image outputs (style transfer, super-resolution).
    """
    values = {
        "tensor_mae": mae(pred, base),
        "tensor_max_abs": max_abs(pred, base),
        "tensor_psnr": psnr(pred, base),
        "cosine": cosine(pred, base),
    }
    if image:
        values["ssim"] = ssim(pred, base)
    if keypoint_tolerance is not None:
        values["keypoints_moved"] = keypoints_moved(pred, base, keypoint_tolerance)
    return values
