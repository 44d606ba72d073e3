"""Sequence ops: reverse_sequence and sliding_windows."""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_coreml_quality.runtime.onnx.mil_ops.registry import MilContext, mil_op


def _source_positions(lengths: np.ndarray, seq_len: int) -> np.ndarray:
    """``[len(lengths), seq_len]``: where output position ``t`` reads from for each length."""
    t = np.arange(seq_len)[None, :]
    lengths = np.asarray(lengths).reshape(-1, 1)
    return np.where(t < lengths, lengths - 1 - t, t).astype(np.int64)


@mil_op("reverse_sequence")
def reverse_sequence(ctx: MilContext, op: Any) -> str:
    """Reverse the first ``lengths[b]`` elements along ``seq_axis`` of each slice ``b`` of ``batch_axis``.

    A gather along ``seq_axis`` from position ``lengths[b] - 1 - t`` for ``t < lengths[b]``
    (``t`` after), so any pair of axes works (ONNX ReverseSequence takes only axes 0 and 1).
    The positions come from constants: computed here for constant lengths, else gathered
    from a table of every length.
    """
    x_var = op.inputs["x"]
    dims = ctx.shape(x_var)
    rank = len(dims)
    seq = int(ctx.static(op, "seq_axis", 0)) % rank
    batch = int(ctx.static(op, "batch_axis", 0)) % rank
    if seq == batch:
        raise ValueError("seq_axis and batch_axis are the same axis")
    b = ctx.builder
    lengths = ctx.value(op.inputs["lengths"])
    if lengths is not None:
        source = b.const(_source_positions(lengths, dims[seq]), name=f"{op.name}_src")
    else:
        table = b.const(_source_positions(np.arange(dims[seq] + 1), dims[seq]), name=f"{op.name}_table")
        source = b.node("Gather", [table, ctx.inp(op, "lengths")], name=f"{op.name}_src", axis=0)
    if batch > seq:  # the positions are [batch, seq]; put the axes in the tensor's order
        source = b.node("Transpose", [source], name=f"{op.name}_src_t", perm=[1, 0])
    shape = [1] * rank
    shape[batch], shape[seq] = dims[batch], dims[seq]
    source = b.node("Reshape", [source, ctx.ints(shape, "shape")], name=f"{op.name}_src_nd")
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
