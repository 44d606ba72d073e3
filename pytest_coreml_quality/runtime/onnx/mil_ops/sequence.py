"""Sequence ops: reverse_sequence and sliding_windows."""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_coreml_quality.runtime.onnx.mil_ops.registry import MilContext, mil_op


@mil_op("reverse_sequence")
def reverse_sequence(ctx: MilContext, op: Any) -> str:
    """Reverse the first ``lengths[b]`` elements along ``seq_axis`` of each slice ``b`` of ``batch_axis``.

    Written as a gather along ``seq_axis`` with the source position
    ``lengths[b] - 1 - t`` for ``t < lengths[b]`` and ``t`` after, so any pair of axes works
    (ONNX ReverseSequence takes only axes 0 and 1).
    """
    x_var = op.inputs["x"]
    dims = ctx.shape(x_var)
    rank = len(dims)
    seq = int(ctx.static(op, "seq_axis", 0)) % rank
    batch = int(ctx.static(op, "batch_axis", 0)) % rank
    if seq == batch:
        raise ValueError("seq_axis and batch_axis are the same axis")
    b = ctx.builder
    t_shape = [1] * rank
    t_shape[seq] = dims[seq]
    t = b.const(np.arange(dims[seq], dtype=np.int32).reshape(t_shape), name=f"{op.name}_t")
    l_shape = [1] * rank
    l_shape[batch] = dims[batch]
    lengths = b.node("Reshape", [ctx.inp(op, "lengths"), ctx.ints(l_shape, "shape")], name=f"{op.name}_len")
    inside = b.node("Less", [t, lengths], name=f"{op.name}_inside")
    mirrored = b.node("Sub", [b.node("Sub", [lengths, ctx.builder.const(np.int32(1), name="one")],
                                     name=f"{op.name}_last"), t], name=f"{op.name}_mirror")
    source = b.node("Where", [inside, mirrored, t], name=f"{op.name}_src")
    indices = b.node("Expand", [source, ctx.ints(dims, "shape")], name=f"{op.name}_idx")
    return b.node("GatherElements", [ctx.inp(op, "x"), indices], name=op.name, axis=seq)


@mil_op("sliding_windows")
def sliding_windows(ctx: MilContext, op: Any) -> str:
    """Windows of ``size`` every ``stride`` along ``axis``: a gather with an index matrix
    ``[n_windows, size]``, which puts the two new axes where ``axis`` was."""
    x_var = op.inputs["x"]
    rank = ctx.rank(x_var)
    axis = int(ctx.static(op, "axis")) % rank
    size = int(ctx.static(op, "size"))
    stride = int(ctx.static(op, "stride", 1))
    count = ctx.shape(op.outputs[0])[axis]
    index = np.arange(count, dtype=np.int64)[:, None] * stride + np.arange(size, dtype=np.int64)[None, :]
    idx = ctx.builder.const(index, name=f"{op.name}_windows")
    return ctx.builder.node("Gather", [ctx.inp(op, "x"), idx], name=op.name, axis=axis)
