"""Spatial rearrangement and normalisation ops: pixel_unshuffle, local_response_norm,
space_to_batch and batch_to_space (TensorFlow's semantics, which MIL's follow)."""

from __future__ import annotations

from typing import Any

from pytest_coreml_quality.runtime.onnx.mil_ops.registry import MilContext, mil_op


@mil_op("pixel_unshuffle")
def pixel_unshuffle(ctx: MilContext, op: Any) -> str:
    """PyTorch's order: ``y[n, c*f*f + i*f + j, h, w] = x[n, c, h*f + i, w*f + j]``.

    ONNX SpaceToDepth puts the block offset before the channel, so reshape and transpose instead.
    """
    f = int(ctx.static(op, "downscale_factor"))
    n, c, h, w = ctx.shape(op.outputs[0])
    b = ctx.builder
    blocks = b.node("Reshape", [ctx.inp(op, "x"), ctx.ints([n, c // (f * f), h, f, w, f], "shape")],
                    name=f"{op.name}_blocks")
    moved = b.node("Transpose", [blocks], name=f"{op.name}_t", perm=[0, 1, 3, 5, 2, 4])
    return b.node("Reshape", [moved, ctx.ints([n, c, h, w], "shape")], name=op.name)


@mil_op("local_response_norm")
def local_response_norm(ctx: MilContext, op: Any) -> str:
    """``x / (k + alpha / size * sum of x**2 over neighbouring channels) ** beta`` (ONNX LRN).

    For an odd ``size`` the neighbours are the ``(size - 1) / 2`` channels either side. For an
    even size MIL does not say which side gets the extra channel (PyTorch and ONNX disagree),
    so an even size is refused rather than guessed.
    """
    size = int(ctx.static(op, "size"))
    if size % 2 == 0:
        raise ValueError(f"size {size} is even: which neighbouring channels Core ML sums is not documented")
    rank = ctx.rank(op.inputs["x"])
    b = ctx.builder
    x = ctx.inp(op, "x")
    # onnxruntime's LRN takes 4-D input only: a rank-3 [n, C, L] input gets a unit last axis.
    if rank == 3:
        x = b.node("Unsqueeze", [x, ctx.ints([3], "axes")], name=f"{op.name}_4d")
    y = b.node(
        "LRN", [x], name=op.name if rank == 4 else f"{op.name}_lrn", size=size,
        alpha=float(ctx.static(op, "alpha", 1e-4)), beta=float(ctx.static(op, "beta", 0.75)),
        bias=float(ctx.static(op, "k", 1.0)),
    )
    if rank == 3:
        y = b.node("Squeeze", [y, ctx.ints([3], "axes")], name=op.name)
    return y


@mil_op("space_to_batch")
def space_to_batch(ctx: MilContext, op: Any) -> str:
    """Pad H and W, then move each ``bh x bw`` block offset into the batch, offset-major:
    ``y[(i*bw + j)*N + n, c, h, w] = padded[n, c, h*bh + i, w*bw + j]``."""
    bh, bw = ctx.static_list(op, "block_shape")
    (top, bottom), (left, right) = ctx.static(op, "paddings").reshape(2, 2).tolist()
    n, c, _, _ = ctx.shape(op.inputs["x"])
    _, _, oh, ow = ctx.shape(op.outputs[0])
    b = ctx.builder
    x = ctx.inp(op, "x")
    if top or bottom or left or right:
        x = b.node("Pad", [x, ctx.ints([0, 0, top, left, 0, 0, bottom, right], "pads")], name=f"{op.name}_pad")
    blocks = b.node("Reshape", [x, ctx.ints([n, c, oh, bh, ow, bw], "shape")], name=f"{op.name}_blocks")
    moved = b.node("Transpose", [blocks], name=f"{op.name}_t", perm=[3, 5, 0, 1, 2, 4])
    return b.node("Reshape", [moved, ctx.ints([bh * bw * n, c, oh, ow], "shape")], name=op.name)


@mil_op("batch_to_space")
def batch_to_space(ctx: MilContext, op: Any) -> str:
    """The inverse of space_to_batch: batch blocks back into H and W, then crop."""
    bh, bw = ctx.static_list(op, "block_shape")
    (top, bottom), (left, right) = ctx.static(op, "crops").reshape(2, 2).tolist()
    n, c, h, w = ctx.shape(op.inputs["x"])
    b = ctx.builder
    blocks = b.node("Reshape", [ctx.inp(op, "x"), ctx.ints([bh, bw, n // (bh * bw), c, h, w], "shape")],
                    name=f"{op.name}_blocks")
    moved = b.node("Transpose", [blocks], name=f"{op.name}_t", perm=[2, 3, 4, 0, 5, 1])
    full_h, full_w = h * bh, w * bw
    cropped = bool(top or bottom or left or right)
    y = b.node("Reshape", [moved, ctx.ints([n // (bh * bw), c, full_h, full_w], "shape")],
               name=f"{op.name}_full" if cropped else op.name)
    if not cropped:
        return y
    return b.node("Slice", [y, ctx.ints([top, left], "starts"), ctx.ints([full_h - bottom, full_w - right], "ends"),
                            ctx.ints([2, 3], "axes")], name=op.name)
