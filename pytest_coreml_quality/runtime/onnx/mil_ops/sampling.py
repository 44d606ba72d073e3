"""Sampling ops: iOS17 ``resize`` (N-d, LINEAR), ``resample`` (grid sampling), ``affine`` and ``crop_resize``.

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


# --- crop_resize --------------------------------------------------------------------------------------

# box_coordinate_mode -> (order that puts the height coordinate first, whether it is centre + size)
_BOX_MODES = {
    "CORNERS_HEIGHT_FIRST": ([0, 1, 2, 3], False),
    "CORNERS_WIDTH_FIRST": ([1, 0, 3, 2], False),
    "CENTER_SIZE_HEIGHT_FIRST": ([0, 1, 2, 3], True),
    "CENTER_SIZE_WIDTH_FIRST": ([1, 0, 3, 2], True),
}


def _box_fractions(n: int, mode: str) -> np.ndarray:
    """Where output sample ``i`` lies between a box's start (0) and end (1).

    Only the corner-aligned modes are defined for boxes (TensorFlow's crop_and_resize, which
    the converter maps to ALIGN_CORNERS): ``i / (n - 1)``; for ``n == 1`` ALIGN_CORNERS takes the
    middle and STRICT_ALIGN_CORNERS the start (``i * spacing`` at ``i = 0``).
    """
    if n == 1:
        return np.array([0.5 if mode == "ALIGN_CORNERS" else 0.0])
    return np.arange(n) / (n - 1)


@mil_op("crop_resize")
def crop_resize(ctx: MilContext, op: Any) -> str:
    """Bilinear crops of boxes, resized to ``target_height x target_width``.

    Samples outside the image take ``pad_value`` (TensorFlow's ``extrapolation_value``, which
    the op's definition names). iOS15/16 take ``roi`` ``[N, 1, 4|5, 1, 1]`` (4: every box on
    every image, output ``[N, B, C, h, w]``; 5: the first value picks the image, output
    ``[N, 1, C, h, w]``); iOS17 takes ``boxes`` ``[N, 4]`` and ``box_indices`` (default ``arange(N)``).
    """
    mode = str(ctx.static(op, "sampling_mode", "DEFAULT"))
    if mode not in ("ALIGN_CORNERS", "STRICT_ALIGN_CORNERS"):
        # The other modes' grids are defined for a whole image, not for a box between two coordinates.
        raise ValueError(f"sampling_mode {mode!r} is not translated (ALIGN_CORNERS and STRICT_ALIGN_CORNERS are)")
    box_mode = str(ctx.static(op, "box_coordinate_mode", "CORNERS_HEIGHT_FIRST"))
    if box_mode not in _BOX_MODES:
        raise ValueError(f"box_coordinate_mode {box_mode!r} is not defined")
    bsz, _, h, w = ctx.shape(op.inputs["x"])
    if h == 1 or w == 1:
        raise ValueError("an input of height or width 1 is not translated")
    th, tw = int(ctx.static(op, "target_height", 1)), int(ctx.static(op, "target_width", 1))
    b = ctx.builder
    name = op.name
    image_index: str | None = None
    if ctx.has(op, "boxes"):  # iOS17
        boxes_var = op.inputs["boxes"]
        n = ctx.shape(boxes_var)[0]
        boxes = b.node("Cast", [ctx.inp(op, "boxes")], name=f"{name}_boxes", to=TensorProto.FLOAT)
        if ctx.has(op, "box_indices"):
            image_index = b.node("Cast", [ctx.inp(op, "box_indices")], name=f"{name}_img", to=TensorProto.INT64)
        else:
            image_index = b.const(np.arange(n, dtype=np.int64), name=f"{name}_img")
        per_image = False
    else:
        n, _, k, _, _ = ctx.shape(op.inputs["roi"])
        roi = b.node("Reshape", [ctx.inp(op, "roi"), ctx.ints([n, k], "shape")], name=f"{name}_roi")
        if k == 5:
            first = _columns(ctx, roi, 0, 1, f"{name}_idxf")
            flat = b.node("Reshape", [first, ctx.ints([n], "shape")], name=f"{name}_idx1")
            image_index = b.node("Cast", [flat], name=f"{name}_img", to=TensorProto.INT64)
            boxes = _columns(ctx, roi, 1, 5, f"{name}_boxes")
        else:
            boxes = roi
        per_image = k == 4
    order, centred = _BOX_MODES[box_mode]
    if order != [0, 1, 2, 3]:
        boxes = b.node("Gather", [boxes, ctx.ints(order, "order")], name=f"{name}_hfirst", axis=1)
    if centred:  # [centre_h, centre_w, size_h, size_w] -> [start_h, start_w, end_h, end_w]
        centre, half = _columns(ctx, boxes, 0, 2, f"{name}_c"), _columns(ctx, boxes, 2, 4, f"{name}_s")
        half = b.node("Mul", [half, ctx.floats(0.5, "half")], name=f"{name}_half")
        boxes = b.node("Concat", [b.node("Sub", [centre, half], name=f"{name}_start"),
                                  b.node("Add", [centre, half], name=f"{name}_end")], name=f"{name}_corners", axis=1)
    scale = float(ctx.static(op, "spatial_scale", 1.0))
    normalized = bool(ctx.static(op, "normalized_coordinates", False))
    sh, sw = ((h - 1) * scale, (w - 1) * scale) if normalized else (scale, scale)
    if (sh, sw) != (1.0, 1.0):
        boxes = b.node("Mul", [boxes, ctx.floats([sh, sw, sh, sw], "box_scale")], name=f"{name}_pixels")
    # Sample positions (pixels) per box: rows [N, th], columns [N, tw].
    rows = _lerp(ctx, boxes, 0, 2, _box_fractions(th, mode), f"{name}_rows")
    cols = _lerp(ctx, boxes, 1, 3, _box_fractions(tw, mode), f"{name}_cols")
    # GridSample's [-1, 1] with align_corners=1 maps to pixel centres 0 .. size-1.
    gy = b.node("Add", [b.node("Mul", [rows, ctx.floats(2 / (h - 1), "gscale")], name=f"{name}_gy0"),
                        ctx.floats(-1.0, "minus_one")], name=f"{name}_gy")
    gx = b.node("Add", [b.node("Mul", [cols, ctx.floats(2 / (w - 1), "gscale")], name=f"{name}_gx0"),
                        ctx.floats(-1.0, "minus_one")], name=f"{name}_gx")
    full = ctx.ints([n, th, tw, 1], "shape")
    gy = b.node("Expand", [b.node("Reshape", [gy, ctx.ints([n, th, 1, 1], "shape")], name=f"{name}_gy4"), full],
                name=f"{name}_gyb")
    gx = b.node("Expand", [b.node("Reshape", [gx, ctx.ints([n, 1, tw, 1], "shape")], name=f"{name}_gx4"), full],
                name=f"{name}_gxb")
    grid = b.node("Concat", [gx, gy], name=f"{name}_grid", axis=3)
    inside = b.node("And", [_within(ctx, rows, h, n, th, 1, f"{name}_in_h"), _within(ctx, cols, w, n, 1, tw, f"{name}_in_w")],
                    name=f"{name}_inside")  # [N, th, tw]
    if per_image:  # every box on every image: N*B crops
        grid = b.node("Reshape", [b.node("Expand", [b.node("Unsqueeze", [grid, ctx.ints([1], "axes")], name=f"{name}_g5"),
                                                    ctx.ints([n, bsz, th, tw, 2], "shape")], name=f"{name}_gnb"),
                                  ctx.ints([n * bsz, th, tw, 2], "shape")], name=f"{name}_gflat")
        image_index = b.const(np.tile(np.arange(bsz, dtype=np.int64), n), name=f"{name}_img")
    images = b.node("Gather", [ctx.inp(op, "x"), image_index], name=f"{name}_images", axis=0)
    sampled = b.node("GridSample", [images, grid], name=f"{name}_gs", mode="bilinear", padding_mode="border",
                     align_corners=1)
    mask_shape = [n, 1, th, tw]
    if not ctx.has(op, "boxes"):  # iOS15/16 outputs have a box-or-image axis after N
        sampled = b.node("Reshape", [sampled, ctx.ints([n, bsz if per_image else 1, -1, th, tw], "shape")],
                         name=f"{name}_crops")
        mask_shape = [n, 1, 1, th, tw]
    mask = b.node("Reshape", [inside, ctx.ints(mask_shape, "shape")], name=f"{name}_mask")
    pad = float(ctx.static(op, "pad_value", 0.0))
    return b.node("Where", [mask, sampled, ctx.floats(pad, "pad_value")], name=name)


def _columns(ctx: MilContext, t: str, start: int, end: int, name: str) -> str:
    return ctx.builder.node("Slice", [t, ctx.ints([start], "starts"), ctx.ints([end], "ends"), ctx.ints([1], "axes")],
                            name=name)


def _lerp(ctx: MilContext, boxes: str, start_col: int, end_col: int, fractions: np.ndarray, name: str) -> str:
    """``start + (end - start) * fraction`` for every box: ``[N, len(fractions)]``."""
    b = ctx.builder
    start = _columns(ctx, boxes, start_col, start_col + 1, f"{name}_a")
    end = _columns(ctx, boxes, end_col, end_col + 1, f"{name}_b")
    span = b.node("Sub", [end, start], name=f"{name}_span")
    steps = b.node("Mul", [span, ctx.floats(fractions.reshape(1, -1), "fractions")], name=f"{name}_steps")
    return b.node("Add", [start, steps], name=name)


def _within(ctx: MilContext, pos: str, size: int, n: int, rows: int, cols: int, name: str) -> str:
    """Whether each sample position lies in ``[0, size - 1]``, shaped ``[N, rows, cols]``."""
    b = ctx.builder
    ok = b.node("And", [b.node("GreaterOrEqual", [pos, ctx.floats(0.0, "zero")], name=f"{name}_lo"),
                        b.node("LessOrEqual", [pos, ctx.floats(float(size - 1), "last")], name=f"{name}_hi")],
                name=name)
    return b.node("Reshape", [ok, ctx.ints([n, rows, cols], "shape")], name=f"{name}_3d")
