"""upsample (nearest / bilinear in every linearUpsampleMode, fractional scales) and resizeBilinear."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pytest_coreml_quality.runtime.onnx.nn_layers import nn_layer
from pytest_coreml_quality.runtime.onnx.nn_layers.context import LayerContext
from pytest_coreml_quality.runtime.onnx.nn_layers.conv import as_rank4, restore_rank


def _resize(ctx: LayerContext, x: str, out_hw: tuple[int, int], mode: str, transform: str) -> str:
    n, c, _, _ = ctx.shape(x)
    sizes = ctx.ints([n, c, out_hw[0], out_hw[1]], "sizes")
    attrs: dict[str, Any] = {"mode": mode, "coordinate_transformation_mode": transform}
    if mode == "nearest":
        attrs["nearest_mode"] = "floor"
    return ctx.node("Resize", [x, "", "", sizes], **attrs)


@nn_layer("upsample")
def upsample(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    p = layer.upsample
    x, lead = as_rank4(ctx, inputs[0])
    _, _, h, w = ctx.shape(x)
    frac = [float(v) for v in p.fractionalScalingFactor]
    if len(frac) == 2:
        out = (int(math.floor(h * frac[0])), int(math.floor(w * frac[1])))
    else:
        s = [int(v) for v in p.scalingFactor] or [1, 1]
        out = (h * s[0], w * s[1])
    if p.InterpolationMode.Name(p.mode) == "NN":
        y = _resize(ctx, x, out, "nearest", "asymmetric")
    else:
        lin = p.LinearUpsampleMode.Name(p.linearUpsampleMode)
        # DEFAULT samples input points i / scale (grid from 0); ALIGN_CORNERS_FALSE is the
        # half-pixel grid; ALIGN_CORNERS_TRUE maps corner to corner.
        transform = {"DEFAULT": "asymmetric", "ALIGN_CORNERS_TRUE": "align_corners",
                     "ALIGN_CORNERS_FALSE": "half_pixel"}[lin]
        y = _resize(ctx, x, out, "linear", transform)
    return restore_rank(ctx, y, lead)


def grid_points(method: str, size_in: int, size_out: int) -> np.ndarray:
    """Sampling grid of Core ML's ``SamplingMode`` methods (see NeuralNetwork.proto)."""
    x, n = float(size_in), size_out
    if method == "STRICT_ALIGN_ENDPOINTS_MODE":
        g = np.linspace(0.0, x - 1, n)
    elif method == "ALIGN_ENDPOINTS_MODE":
        g = np.full(1, (x - 1) / 2) if n == 1 else np.linspace(0.0, x - 1, n)
    elif method == "UPSAMPLE_MODE":
        g = np.minimum(x - 1, np.linspace(0.0, x - x / n, n))
    else:  # ROI_ALIGN_MODE
        spacing = max(1.0, x - 1) / n
        g = np.minimum(x - 1, np.linspace(0.5 * spacing, 0.5 * spacing + (n - 1) * spacing, n))
    return np.clip(g, 0.0, x - 1)


def interpolation_matrix(points: np.ndarray, size_in: int) -> np.ndarray:
    """(len(points), size_in) matrix whose rows linearly interpolate at ``points``."""
    lo = np.floor(points).astype(np.int64)
    hi = np.minimum(lo + 1, size_in - 1)
    frac = points - lo
    m = np.zeros((points.size, size_in), np.float64)
    rows = np.arange(points.size)
    np.add.at(m, (rows, lo), 1 - frac)
    np.add.at(m, (rows, hi), frac)
    return m.astype(np.float32)


@nn_layer("resizeBilinear")
def resize_bilinear(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    p = layer.resizeBilinear
    x, lead = as_rank4(ctx, inputs[0])
    _, _, h, w = ctx.shape(x)
    target = [int(v) for v in p.targetSize] or [1, 1]
    method = p.mode.Method.Name(p.mode.samplingMethod)
    if method == "STRICT_ALIGN_ENDPOINTS_MODE" or (method == "ALIGN_ENDPOINTS_MODE" and min(target) > 1):
        y = _resize(ctx, x, (target[0], target[1]), "linear", "align_corners")
    elif method == "UPSAMPLE_MODE":
        y = _resize(ctx, x, (target[0], target[1]), "linear", "asymmetric")
    else:
        # Grids with no ONNX equivalent: separable interpolation as two matrix products.
        ry = interpolation_matrix(grid_points(method, h, target[0]), h)
        rx = interpolation_matrix(grid_points(method, w, target[1]), w)
        y = ctx.node("MatMul", [ctx.const(ry, name="rows"), x])
        y = ctx.node("MatMul", [y, ctx.const(np.ascontiguousarray(rx.T), name="cols")])
    return restore_rank(ctx, y, lead)
