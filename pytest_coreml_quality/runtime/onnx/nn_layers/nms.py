"""NonMaximumSuppression (the layer; the model type of that name is a separate thing):
greedy suppression per batch, padded to ``maxBoxes``, built on ONNX NonMaxSuppression."""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_coreml_quality.runtime.onnx.nn_layers import nn_layer
from pytest_coreml_quality.runtime.onnx.nn_layers.context import LayerContext

_INT64 = 7
_FLOAT = 1


@nn_layer("NonMaximumSuppression")
def non_maximum_suppression(ctx: LayerContext, layer: Any, inputs: list[str]) -> list[str]:
    """Boxes (B, N, 4) as [x_center, y_center, width, height], scores (B, N, C). A box's score
    is its best class score; boxes scoring below ``scoreThreshold`` are dropped, then boxes are
    taken best first, skipping any whose IoU with a taken box (of the same best class, with
    ``perClassSuppression``) exceeds ``iouThreshold``, up to ``maxBoxes``. Outputs: boxes,
    scores (0-padded), indices (-1-padded) and the count per batch; when no box passes the
    score threshold the best-scoring box is given, with count 1.

    NonMaxSuppression's (K, 3) rows are (batch, class, box) as int64; the indices the layer
    outputs are float blobs, so they are built in float and cast to int64 only to gather."""
    p = layer.NonMaximumSuppression
    if not 2 <= len(inputs) <= 5:
        raise ctx.format_error(f"has {len(inputs)} inputs", field="input", expected="2 to 5 inputs")
    if len(inputs) == 5:
        raise ctx.unsupported("takes maxBoxes from its fifth input (the output shapes would depend on run-time "
                              "values)", expected="maxBoxes as the layer parameter (at most 4 inputs)")
    m = int(p.maxBoxes)
    if m < 1:
        raise ctx.format_error(f"has maxBoxes {m}", field="maxBoxes", expected="at least 1")
    boxes, scores = inputs[:2]
    bshape, sshape = ctx.shape(boxes), ctx.shape(scores)
    if len(bshape) != 3 or bshape[2] != 4 or len(sshape) != 3 or tuple(sshape[:2]) != tuple(bshape[:2]):
        raise ctx.format_error(f"has boxes {list(bshape)} and scores {list(sshape)}", field="input",
                               expected="boxes (B, N, 4) and scores (B, N, C)")
    b, n, c = sshape
    iou = ctx.reshape(inputs[2], [1]) if len(inputs) > 2 else ctx.const([p.iouThreshold], name="iou")
    threshold = ctx.reshape(inputs[3], [1]) if len(inputs) > 3 else ctx.const([p.scoreThreshold], name="thr")
    neg_inf = ctx.const([-np.inf], name="neg_inf")

    best = ctx.node("ReduceMax", [scores, ctx.ints([2], "classes")], keepdims=0)  # (B, N)
    # "Below the threshold" is rejected, so a score equal to it stays: filter here (ONNX's
    # score_threshold keeps only scores above it) and give ONNX -inf, which drops just the
    # boxes filtered here.
    kept = ctx.node("Where", [ctx.node("Less", [best, threshold]), neg_inf, best])
    if p.perClassSuppression:
        # Each box competes only in its best class: its score there, -inf in the others.
        cls = ctx.node("ArgMax", [scores], axis=2, keepdims=0)
        own = ctx.node("Equal", [ctx.node("Unsqueeze", [cls, ctx.ints([1], "c_axis")]),
                                 ctx.const(np.arange(c).reshape(1, c, 1), np.int64, name="class_ids")])
        nms_scores = ctx.node("Where", [own, ctx.node("Unsqueeze", [kept, ctx.ints([1], "c_axis")]), neg_inf])
    else:
        nms_scores = ctx.node("Unsqueeze", [kept, ctx.ints([1], "c_axis")])  # (B, 1, N)
    selected = ctx.node("NonMaxSuppression", [boxes, nms_scores, ctx.ints([m], "max_boxes"), iou,
                                              neg_inf], center_point_box=1)
    # Selected boxes' scores on a (B, N) grid (-inf elsewhere), then best first per batch.
    picked = ctx.node("GatherND", [nms_scores, selected])
    batch_box = ctx.node("Gather", [selected, ctx.ints([0, 2], "batch_box")], axis=1)
    grid = ctx.node("ScatterND", [ctx.node("Expand", [neg_inf, ctx.ints([b, n], "bn")]), batch_box, picked])
    k = min(m, n)
    top, order = ctx.node("TopK", [grid, ctx.ints([k], "k")], 2, axis=1, largest=1, sorted=1)
    valid = ctx.node("Not", [ctx.node("Equal", [top, neg_inf])])
    count = ctx.node("ReduceSum", [ctx.node("Cast", [valid], to=_FLOAT), ctx.ints([1], "k_axis")], keepdims=0)
    index = ctx.node("Where", [valid, ctx.node("Cast", [order], to=_FLOAT), ctx.const([-1.0], name="minus_one")])
    # No box above the threshold: the best-scoring box, counted once.
    none = ctx.node("Unsqueeze", [ctx.node("Equal", [count, ctx.const([0.0], name="zero")]), ctx.ints([1], "k_axis")])
    first = ctx.const(np.arange(k).reshape(1, k) == 0, bool, name="first")
    fallback = ctx.node("Cast", [ctx.node("ArgMax", [best], axis=1, keepdims=1)], to=_FLOAT)
    index = ctx.node("Where", [ctx.node("And", [none, first]), fallback, index])
    count = ctx.node("Max", [count, ctx.const([1.0], name="one")])
    if m > k:  # fewer boxes than maxBoxes: pad
        index = ctx.node("Concat", [index, ctx.node("Expand", [ctx.const([-1.0], name="minus_one"),
                                                               ctx.ints([b, m - k], "pad")])], axis=1)
    valid = ctx.node("Unsqueeze", [ctx.node("GreaterOrEqual", [index, ctx.const([0.0], name="zero")]),
                                   ctx.ints([2], "last")])
    rows = ctx.node("Unsqueeze", [ctx.node("Cast", [ctx.node("Max", [index, ctx.const([0.0], name="zero")])], to=_INT64),
                                  ctx.ints([2], "last")])
    zero = ctx.const([0.0], name="zero")
    out_boxes = ctx.node("Where", [valid, ctx.node("GatherND", [boxes, rows], batch_dims=1), zero])
    out_scores = ctx.node("Where", [valid, ctx.node("GatherND", [scores, rows], batch_dims=1), zero])
    return [out_boxes, out_scores, index, count]
