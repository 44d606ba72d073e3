"""Resizing ops: upsample_* and resize_* (crop_resize, resize and resample are in sampling.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_coreml_quality.runtime.onnx.mil_ops.registry import MilContext, mil_op


def _resize(ctx: MilContext, op: Any, mode: str, transform: str, **extra: Any) -> str:
    """ONNX Resize of the last two axes to the output size MIL's type inference computed.

    Passing ``sizes`` (not scales) makes onnxruntime use ``out / in`` as the scale, which
    is what MIL's bilinear ops do ("the scale factor is recomputed by the output size").
    For flexible input sizes the output size is computed at run time: from the scale
    factors (``upsample_*``) or from the input's leading dims and the target size (``resize_*``).
    """
    b = ctx.builder
    out_var = op.outputs[0]
    if ctx.is_static(out_var):
        inputs = [ctx.inp(op, "x"), "", "", ctx.ints(ctx.shape(out_var), f"{op.name}_sizes")]
    elif ctx.has(op, "scale_factor_height") or ctx.has(op, "scale_factor_width"):
        rank = ctx.rank(out_var)
        factors = [float(ctx.static(op, f"scale_factor_{axis}", 1.0)) for axis in ("height", "width")]
        inputs = [ctx.inp(op, "x"), "", ctx.floats([1.0] * (rank - 2) + factors, f"{op.name}_scales")]
    else:
        rank = ctx.rank(out_var)
        target = [int(ctx.static(op, "target_size_height")), int(ctx.static(op, "target_size_width"))]
        lead = b.node("Shape", [ctx.inp(op, "x")], name=f"{op.name}_lead", start=0, end=rank - 2)
        sizes = b.node("Concat", [lead, ctx.ints(target, "target")], name=f"{op.name}_sizes", axis=0)
        inputs = [ctx.inp(op, "x"), "", "", sizes]
    return b.node("Resize", inputs, name=op.name, mode=mode, coordinate_transformation_mode=transform, **extra)


@mil_op("upsample_bilinear")
def upsample_bilinear(ctx: MilContext, op: Any) -> str:
    align = bool(ctx.static(op, "align_corners", True))
    return _resize(ctx, op, "linear", "align_corners" if align else "half_pixel")


@mil_op("upsample_nearest_neighbor")
def upsample_nearest_neighbor(ctx: MilContext, op: Any) -> str:
    return _resize(ctx, op, "nearest", "asymmetric", nearest_mode="floor")


@mil_op("resize_nearest_neighbor")
def resize_nearest_neighbor(ctx: MilContext, op: Any) -> str:
    return _resize(ctx, op, "nearest", "asymmetric", nearest_mode="floor")


@mil_op("resize_bilinear")
def resize_bilinear(ctx: MilContext, op: Any) -> str:
    mode = str(ctx.static(op, "sampling_mode", "DEFAULT"))
    transforms = {
        "STRICT_ALIGN_CORNERS": "align_corners",
        "ALIGN_CORNERS": "align_corners",
        "UNALIGN_CORNERS": "half_pixel",
        # DEFAULT's spacing (Xin - Xin/Xout) / (Xout - 1) equals Xin / Xout: asymmetric.
        "DEFAULT": "asymmetric",
    }
    if mode in transforms:
        return _resize(ctx, op, "linear", transforms[mode])
    if mode == "OFFSET_CORNERS":
        return _offset_corners(ctx, op)
    raise ValueError(f"resize_bilinear sampling_mode {mode!r} is not defined")


def _offset_corners(ctx: MilContext, op: Any) -> str:
    """OFFSET_CORNERS has no ONNX transform: interpolate with two 1-D weight matrices."""
    x_var = op.inputs["x"]
    in_h, in_w = ctx.shape(x_var)[-2:]
    out_h, out_w = ctx.shape(op.outputs[0])[-2:]
    rows = _interp_matrix(in_h, out_h)  # [out_h, in_h]
    cols = _interp_matrix(in_w, out_w).T  # [in_w, out_w]
    b = ctx.builder
    y = b.node("MatMul", [ctx.inp(op, "x"), b.const(cols, name=f"{op.name}_cols")], name=f"{op.name}_w")
    return b.node("MatMul", [b.const(rows, name=f"{op.name}_rows"), y], name=op.name)


def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    delta = max(1, n_in - 1) / n_out
    grid = np.clip(0.5 * delta + np.arange(n_out) * delta, 0, n_in - 1)
    lo = np.floor(grid).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = grid - lo
    m = np.zeros((n_out, n_in), dtype=np.float64)
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return m.astype(np.float32)
