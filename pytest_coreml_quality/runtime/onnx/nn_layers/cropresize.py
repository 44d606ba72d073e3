"""cropResize: bilinear crops of boxes (RoIs) given as a second input, resized to targetSize."""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_coreml_quality.runtime.onnx.nn_layers import nn_layer
from pytest_coreml_quality.runtime.onnx.nn_layers.context import LayerContext

_INT64 = 7

# BoxCoordinatesMode -> M with box @ M = [h_start, w_start, h_end, w_end] (column j: output j).
# Entries are 0, +-1 and +-0.5, so the products are exact.
_TO_CORNERS = {
    "CORNERS_HEIGHT_FIRST": np.eye(4),
    "CORNERS_WIDTH_FIRST": np.eye(4)[[1, 0, 3, 2]],
    # [h_center, w_center, box_height, box_width]
    "CENTER_SIZE_HEIGHT_FIRST": np.array([[1, 0, 1, 0], [0, 1, 0, 1], [-0.5, 0, 0.5, 0], [0, -0.5, 0, 0.5]]),
    # [w_center, h_center, box_width, box_height]
    "CENTER_SIZE_WIDTH_FIRST": np.array([[0, 1, 0, 1], [1, 0, 1, 0], [0, -0.5, 0, 0.5], [-0.5, 0, 0.5, 0]]),
}

# The sampling grids the proto states for a box: n points from the box's start to its end.
# UPSAMPLE_MODE and ROI_ALIGN_MODE are defined in the proto only on a whole axis [0, X-1]
# (their spacing depends on X); how X maps onto a box is not specified, so they are refused.
_BOX_GRIDS = ("STRICT_ALIGN_ENDPOINTS_MODE", "ALIGN_ENDPOINTS_MODE")


def box_fractions(method: str, n: int) -> np.ndarray:
    """Where the ``n`` grid points lie between a box's start (0) and end (1)."""
    if method == "ALIGN_ENDPOINTS_MODE" and n == 1:
        return np.array([0.5])
    return np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)


@nn_layer("cropResize")
def crop_resize(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """Each box of the second input ([N, 1, 4|5, 1, 1]) sampled bilinearly on a
    targetSize grid of the first input ([1, B, C, H, W]); with 5 values the first is the batch
    index of the image to crop, otherwise every box is cropped from every image. Sample
    points are kept inside [0, H-1] x [0, W-1], as SamplingMode requires of grid points.
    Rank-4 blobs (Seq and Batch folded into axis 0) are taken as [B, C, H, W] / [N, 4|5, 1, 1]."""
    p = layer.cropResize
    if len(inputs) != 2:
        raise ctx.format_error(f"has {len(inputs)} inputs", field="input", expected="2 inputs (feature map, boxes)")
    method = p.mode.Method.Name(p.mode.samplingMethod)
    if method not in _BOX_GRIDS:
        raise ctx.unsupported(f"samples boxes with {method}, whose grid NeuralNetwork.proto defines only on a "
                              "whole axis, not on a box", expected=f"mode.samplingMethod {' or '.join(_BOX_GRIDS)}")
    box_mode = p.boxIndicesMode.Coordinates.Name(p.boxIndicesMode.boxMode)
    target = [int(v) for v in p.targetSize] or [1, 1]
    if len(target) != 2 or min(target) < 1:
        raise ctx.format_error(f"has targetSize {target}", field="targetSize", expected="[H_out, W_out], both >= 1")
    scale = float(p.spatialScale)
    if scale <= 0:
        raise ctx.format_error(f"has spatialScale {scale}", field="spatialScale",
                               expected="a positive scale (coremltools writes 1.0 when there is none)")
    xshape, rshape = ctx.shape(inputs[0]), ctx.shape(inputs[1])
    if len(xshape) not in (4, 5) or (len(xshape) == 5 and xshape[0] != 1):
        raise ctx.format_error(f"has a feature map of shape {list(xshape)}", field="input[0]",
                               expected="[1, Batch, C, H, W]")
    k = rshape[-3] if len(rshape) >= 3 else 0
    if len(rshape) not in (4, 5) or k not in (4, 5) or int(np.prod(rshape)) != rshape[0] * k:
        raise ctx.format_error(f"has boxes of shape {list(rshape)}", field="input[1]",
                               expected="[N, 1, 4, 1, 1] or [N, 1, 5, 1, 1]")
    batch, c, h, w = xshape[-4:]
    n, (ho, wo) = rshape[0], target
    x = ctx.reshape(inputs[0], [batch, c, h, w]) if len(xshape) == 5 else inputs[0]
    rois = ctx.reshape(inputs[1], [n, k])
    box = rois if k == 4 else ctx.node("Slice", [rois, ctx.ints([1], "b1"), ctx.ints([5], "b5"), ctx.ints([1], "ax")])
    corners = ctx.node("MatMul", [box, ctx.const(_TO_CORNERS[box_mode], name="corners")])
    unit = [h - 1, w - 1, h - 1, w - 1] if p.normalizedCoordinates else [1, 1, 1, 1]
    corners = ctx.node("Mul", [corners, ctx.const(np.asarray(unit, np.float64) * scale, name="scale")])
    start_h, start_w, end_h, end_w = ctx.node("Split", [corners], 4, axis=1, num_outputs=4)  # each [N, 1]

    def grid(start: str, end: str, size_in: int, size_out: int, name: str) -> str:
        """[N, size_out] sample positions mapped to GridSample's [-1, 1] (align_corners)."""
        frac = ctx.const(box_fractions(method, size_out).reshape(1, -1), name=f"{name}_frac")
        pos = ctx.node("Add", [start, ctx.node("Mul", [ctx.node("Sub", [end, start]), frac])])
        pos = ctx.node("Clip", [pos, ctx.const(np.float32(0), name="lo"), ctx.const(np.float32(size_in - 1),
                                                                                      name=f"{name}_hi")])
        to_unit = ctx.const(np.float32(2.0 / max(size_in - 1, 1)), name=f"{name}_unit")
        return ctx.node("Sub", [ctx.node("Mul", [pos, to_unit]), ctx.const(np.float32(1), name="one")])

    gy = ctx.node("Expand", [ctx.reshape(grid(start_h, end_h, h, ho, "h"), [n, ho, 1, 1]), ctx.ints([n, ho, wo, 1], "g")])
    gx = ctx.node("Expand", [ctx.reshape(grid(start_w, end_w, w, wo, "w"), [n, 1, wo, 1]), ctx.ints([n, ho, wo, 1], "g")])
    coords = ctx.node("Concat", [gx, gy], axis=-1)  # GridSample wants (x, y)
    if k == 5:
        images = ctx.node("Gather", [x, ctx.reshape(ctx.node("Cast", [ctx.node(
            "Slice", [rois, ctx.ints([0], "b0"), ctx.ints([1], "b1"), ctx.ints([1], "ax")])], to=_INT64), [n])], axis=0)
        out_shape = [n, 1, c, ho, wo] if len(xshape) == 5 else [n, c, ho, wo]
    else:  # every box from every image: N*B crops, box-major
        images = ctx.reshape(ctx.node("Expand", [ctx.reshape(x, [1, batch, c, h, w]), ctx.ints([n, batch, c, h, w], "nb")]),
                             [n * batch, c, h, w])
        coords = ctx.reshape(ctx.node("Expand", [ctx.reshape(coords, [n, 1, ho, wo, 2]),
                                                  ctx.ints([n, batch, ho, wo, 2], "nbg")]), [n * batch, ho, wo, 2])
        out_shape = [n, batch, c, ho, wo] if len(xshape) == 5 else [n * batch, c, ho, wo]
    y = ctx.node("GridSample", [images, coords], mode="bilinear", padding_mode="border", align_corners=1)
    return ctx.reshape(y, out_shape)
