"""Sampling ops: iOS17 ``resize`` (N-d, LINEAR), ``resample`` (grid sampling) and ``affine``.

``resample``/``affine`` become ONNX GridSample. MIL's padding modes are defined on the image
("reflection" mirrors about the edge pixels' centres, "symmetric" about their outer edges),
while GridSample's reflection follows ``align_corners``; the coordinates are therefore
converted to the convention GridSample needs, so every MIL mode combination translates.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto

from pytest_coreml_quality.runtime.onnx.mil_ops.registry import MilContext, dtype_name, mil_op
from pytest_coreml_quality.runtime.onnx.mil_ops.resize import _interp_matrix

# MIL sampling_mode -> ONNX coordinate transform (see resize_bilinear in resize.py).
_TRANSFORMS = {
    "STRICT_ALIGN_CORNERS": "align_corners",
    "ALIGN_CORNERS": "align_corners",
    "UNALIGN_CORNERS": "half_pixel",
    "DEFAULT": "asymmetric",  # spacing (Xin - Xin/Xout) / (Xout - 1) is Xin / Xout
}


@mil_op("resize")
def resize(ctx: MilContext, op: Any) -> str:
    """Resize the last ``resized_dims`` axes to the output size MIL's type inference computed."""
    interp = str(ctx.static(op, "interpolation_mode", "LINEAR"))
    mode = str(ctx.static(op, "sampling_mode", "DEFAULT"))
    if interp != "LINEAR":
        # Core ML's iOS17 nearest-neighbour rule (rounding, ties) is not documented.
        raise ValueError(f"interpolation_mode {interp!r} is not translated (only LINEAR is)")
    if mode not in _TRANSFORMS and mode != "OFFSET_CORNERS":
        raise ValueError(f"sampling_mode {mode!r} is not defined")
    in_dims = list(ctx.shape(op.inputs["x"]))
    out_dims = list(ctx.shape(op.outputs[0]))
    b = ctx.builder
    y = ctx.inp(op, "x")
    axes = [a for a in range(len(in_dims)) if in_dims[a] != out_dims[a] or mode == "OFFSET_CORNERS"]
    axes = [a for a in axes if a >= len(in_dims) - int(ctx.static(op, "resized_dims"))]
    if not axes:
        return b.node("Identity", [y], name=op.name)
    one_resize = (len(in_dims) == 4 and set(axes) <= {2, 3} and mode != "OFFSET_CORNERS"
                  and not (mode == "ALIGN_CORNERS" and 1 in out_dims[2:]))
    if one_resize:
        return b.node("Resize", [y, "", "", ctx.ints(out_dims, f"{op.name}_sizes")], name=op.name, mode="linear",
                      coordinate_transformation_mode=_TRANSFORMS[mode])
    dims = list(in_dims)
    for i, axis in enumerate(axes):
        name = op.name if i == len(axes) - 1 else f"{op.name}_axis{axis}"
        y = _resize_axis(ctx, y, dims, axis, out_dims[axis], mode, name)
        dims[axis] = out_dims[axis]
    return y


def _resize_axis(ctx: MilContext, y: str, dims: list[int], axis: int, n_out: int, mode: str, name: str) -> str:
    """Linear interpolation along one axis (separable, so axis by axis equals the N-d resize).

    The tensor is viewed as ``[1, outer, n_in, inner]``: onnxruntime's linear Resize takes
    4-D input whose two outer scales are 1.
    """
    b = ctx.builder
    outer = int(np.prod(dims[:axis], dtype=np.int64))
    inner = int(np.prod(dims[axis + 1:], dtype=np.int64))
    n_in = dims[axis]
    out_dims = list(dims)
    out_dims[axis] = n_out
    view = b.node("Reshape", [y, ctx.ints([outer, n_in, inner], "shape")], name=f"{name}_3d")
    if mode == "OFFSET_CORNERS":  # no ONNX transform: a [n_out, n_in] weight matrix
        weights = b.const(_interp_matrix(n_in, n_out), name=f"{name}_weights")
        moved = b.node("MatMul", [weights, view], name=f"{name}_mm")
    else:
        transform = _TRANSFORMS[mode]
        if mode == "ALIGN_CORNERS" and n_out == 1:
            transform = "half_pixel"  # MIL samples the middle, (Xin - 1) / 2, which half_pixel gives
        four = b.node("Unsqueeze", [view, ctx.ints([0], "axes")], name=f"{name}_4d")
        moved = b.node("Resize", [four, "", "", ctx.ints([1, outer, n_out, inner], "sizes")], name=f"{name}_resize",
                       mode="linear", coordinate_transformation_mode=transform)
    return b.node("Reshape", [moved, ctx.ints(out_dims, "shape")], name=name)


# --- grid sampling ----------------------------------------------------------------------------------


def _to_pixels(mode: str, align: bool, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, offset)`` with ``pixel = scale * coordinate + offset`` for MIL's ``coordinates_mode``."""
    if mode == "unnormalized":
        return np.ones(2), np.zeros(2)
    if mode == "normalized_minus_one_to_one":  # g01 = (g + 1) / 2
        half = np.full(2, 0.5)
        scale, offset = _to_pixels("normalized_zero_to_one", align, size)
        return scale * half, scale * half + offset
    if mode == "normalized_zero_to_one":
        return (size - 1, np.zeros(2)) if align else (size.astype(np.float64), np.full(2, -0.5))
    raise ValueError(f"coordinates_mode {mode!r} is not defined")


def _grid_sample(ctx: MilContext, op: Any, grid: str, sampling: str, padding: str, pad_value: float,
                 coord_mode: str, align: bool) -> str:
    """GridSample of ``x`` at ``grid`` (``[B, H, W, 2]``, ``(w, h)`` order) with MIL's modes."""
    if sampling not in ("bilinear", "nearest"):
        raise ValueError(f"sampling_mode {sampling!r} is not translated (expected bilinear or nearest)")
    onnx_padding = {"constant": "zeros", "border": "border", "reflection": "reflection", "symmetric": "reflection"}
    if padding not in onnx_padding:
        raise ValueError(f"padding_mode {padding!r} is not defined")
    # GridSample mirrors about the corner pixels' centres with align_corners=1 (MIL's
    # "reflection") and about their outer edges with align_corners=0 (MIL's "symmetric").
    onnx_align = {"reflection": True, "symmetric": False}.get(padding, align)
    _, _, h, w = ctx.shape(op.inputs["x"])
    size = np.array([w, h], dtype=np.float64)  # coordinates are (x, y) = (w, h)
    b = ctx.builder
    if coord_mode != "normalized_minus_one_to_one" or onnx_align != align:
        scale, offset = _to_pixels(coord_mode, align, size)
        # pixel -> GridSample's normalised coordinate
        if onnx_align:
            if (size == 1).any():
                raise ValueError(f"padding_mode {padding!r} on an image of width or height 1 is not translated")
            norm_scale, norm_offset = 2 / (size - 1), np.full(2, -1.0)
        else:
            norm_scale, norm_offset = 2 / size, 1 / size - 1
        a, c = scale * norm_scale, offset * norm_scale + norm_offset
        grid = b.node("Mul", [grid, ctx.floats(a, "grid_scale")], name=f"{op.name}_gscale")
        grid = b.node("Add", [grid, ctx.floats(c, "grid_offset")], name=f"{op.name}_grid")
    x = ctx.inp(op, "x")
    shifted = padding == "constant" and pad_value != 0.0
    if shifted:
        # zeros padding of (x - v), plus v: out-of-image taps then contribute v, in-image taps x.
        x = b.node("Sub", [x, ctx.floats(pad_value, "pad_value")], name=f"{op.name}_shift")
    y = b.node("GridSample", [x, grid], name=f"{op.name}_gs" if shifted else op.name, mode=sampling,
               padding_mode=onnx_padding[padding], align_corners=int(onnx_align))
    if shifted:
        y = b.node("Add", [y, ctx.floats(pad_value, "pad_value")], name=op.name)
    return y


@mil_op("resample")
def resample(ctx: MilContext, op: Any) -> str:
    """Sample ``x`` at ``coordinates`` ``[B, H2, W2, 2]`` with MIL's sampling/padding/coordinates modes."""
    grid = ctx.inp(op, "coordinates")
    if dtype_name(op.inputs["coordinates"]).startswith("int"):
        grid = ctx.builder.node("Cast", [grid], name=f"{op.name}_coords", to=TensorProto.FLOAT)
    return _grid_sample(
        ctx, op, grid,
        sampling=str(ctx.static(op, "sampling_mode")).lower(),
        padding=str(ctx.static(op, "padding_mode")).lower(),
        pad_value=float(ctx.static(op, "padding_value", 0.0)),
        coord_mode=str(ctx.static(op, "coordinates_mode")).lower(),
        align=bool(ctx.static(op, "align_corners")),
    )


@mil_op("affine")
def affine(ctx: MilContext, op: Any) -> str:
    """Sample ``x`` at ``(a0 x + a1 y + a2, b0 x + b1 y + b2)`` for each output position ``(x, y)``
    in [-1, 1] coordinates (PyTorch's ``affine_grid`` followed by ``grid_sample``)."""
    align = bool(ctx.static(op, "align_corners"))
    bsz = ctx.shape(op.inputs["x"])[0]
    out_h, out_w = int(ctx.static(op, "output_height")), int(ctx.static(op, "output_width"))
    d = ctx.shape(op.inputs["transform_matrix"])[0]

    def positions(n: int) -> np.ndarray:
        if align:
            return np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)
        return (2 * np.arange(n) + 1) / n - 1

    ys, xs = np.meshgrid(positions(out_h), positions(out_w), indexing="ij")
    base = np.stack([xs.ravel(), ys.ravel(), np.ones(out_h * out_w)], axis=1)  # [H*W, 3]
    b = ctx.builder
    theta = b.node("Reshape", [ctx.inp(op, "transform_matrix"), ctx.ints([d, 2, 3], "shape")], name=f"{op.name}_theta")
    theta_t = b.node("Transpose", [theta], name=f"{op.name}_theta_t", perm=[0, 2, 1])
    grid = b.node("MatMul", [b.const(base.astype(np.float32), name=f"{op.name}_base"), theta_t],
                  name=f"{op.name}_mm")
    grid = b.node("Reshape", [grid, ctx.ints([d, out_h, out_w, 2], "shape")], name=f"{op.name}_grid4")
    if d != bsz:
        grid = b.node("Expand", [grid, ctx.ints([bsz, out_h, out_w, 2], "shape")], name=f"{op.name}_gridb")
    return _grid_sample(
        ctx, op, grid,
        sampling=str(ctx.static(op, "sampling_mode")).lower(),
        padding=str(ctx.static(op, "padding_mode")).lower(),
        pad_value=float(ctx.static(op, "padding_value", 0.0)),
        coord_mode="normalized_minus_one_to_one",
        align=align,
    )
