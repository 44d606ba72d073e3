"""Indexing and generated tensors: gather_nd, one_hot, cumsum, range_1d, fill, fill_like."""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto, numpy_helper

from pytest_coreml_quality.runtime.onnx.mil_ops.registry import MilContext, mil_op
from pytest_coreml_quality.runtime.onnx.mil_ops.selection import onnx_type, where

_NUMPY = {TensorProto.FLOAT: np.float32, TensorProto.INT32: np.int32, TensorProto.BOOL: np.bool_}


@mil_op("gather_nd")
def gather_nd(ctx: MilContext, op: Any) -> str:
    """Slices of ``x`` at the coordinates in the last axis of ``indices`` (after ``batch_dims``)."""
    # ONNX GatherND takes int64 coordinates; the graph keeps integers as int32.
    indices = ctx.builder.node("Cast", [ctx.inp(op, "indices")], name=f"{op.name}_i64", to=TensorProto.INT64)
    batch_dims = int(ctx.static(op, "batch_dims", 0))
    return ctx.builder.node("GatherND", [ctx.inp(op, "x"), indices], name=op.name, batch_dims=batch_dims)


@mil_op("one_hot")
def one_hot(ctx: MilContext, op: Any) -> str:
    """``on_value`` where a new ``axis`` position equals the index, ``off_value`` elsewhere.

    Built as ``Equal(indices, arange(depth))`` broadcast along the new axis: an index outside
    ``[0, depth)`` gives an all-``off_value`` vector.
    """
    b = ctx.builder
    idx_var = op.inputs["indices"]
    rank = ctx.rank(idx_var)
    axis = int(ctx.static(op, "axis", -1))
    axis = axis + rank + 1 if axis < 0 else axis
    # The arange lies along ``axis`` of the output; every other axis has size 1.
    shape = [1] * axis + [-1] + [1] * (rank - axis)
    depth_value = ctx.value(op.inputs["one_hot_vector_size"])
    if depth_value is not None:
        positions = b.const(np.arange(int(depth_value), dtype=np.int32).reshape(shape), name=f"{op.name}_positions")
    else:  # the size is computed at run time
        depth = b.node("Reshape", [ctx.inp(op, "one_hot_vector_size"), ctx.ints([], "scalar")], name=f"{op.name}_depth")
        arange = b.node("Range", [b.const(np.int32(0), name="zero"), depth, b.const(np.int32(1), name="one")],
                        name=f"{op.name}_arange")
        positions = b.node("Reshape", [arange, ctx.ints(shape, "shape")], name=f"{op.name}_positions")
    indices = b.node("Unsqueeze", [ctx.x(idx_var), ctx.ints([axis], "axes")], name=f"{op.name}_idx_u")
    hit = b.node("Equal", [indices, positions], name=f"{op.name}_hit")
    out_type = onnx_type(op.outputs[0])
    dtype = _NUMPY[out_type]
    on = b.const(np.asarray(ctx.static(op, "on_value", 1)).astype(dtype), name="on_value")
    off = b.const(np.asarray(ctx.static(op, "off_value", 0)).astype(dtype), name="off_value")
    return where(ctx, hit, on, off, out_type, op.name)


@mil_op("cumsum")
def cumsum(ctx: MilContext, op: Any) -> str:
    """Cumulative sum along ``axis``; ``exclusive`` and ``reverse`` mean what ONNX's attributes mean."""
    rank = ctx.rank(op.inputs["x"])
    axis = int(ctx.static(op, "axis", 0)) % rank
    return ctx.builder.node(
        "CumSum", [ctx.inp(op, "x"), ctx.builder.const(np.int64(axis), name="axis")], name=op.name,
        exclusive=int(bool(ctx.static(op, "exclusive", False))), reverse=int(bool(ctx.static(op, "reverse", False))),
    )  # fmt: skip


@mil_op("range_1d")
def range_1d(ctx: MilContext, op: Any) -> str:
    """``[start, start + step, ...)`` below ``end`` (numpy's arange; ONNX Range is the same)."""
    args = []
    for name in ("start", "end", "step"):
        # ONNX Range takes scalars; a one-element tensor becomes one.
        args.append(ctx.builder.node("Reshape", [ctx.inp(op, name), ctx.ints([], "scalar")], name=f"{op.name}_{name}"))
    return ctx.builder.node("Range", args, name=op.name)


def _filled(ctx: MilContext, op: Any, shape: str) -> str:
    """A tensor of the op's output shape (int64 ``shape``) filled with its ``value`` input."""
    dtype = _NUMPY[onnx_type(op.outputs[0])]
    value = np.asarray(ctx.static(op, "value", 0.0)).astype(dtype).reshape(1)
    return ctx.builder.node("ConstantOfShape", [shape], name=op.name, value=numpy_helper.from_array(value))


@mil_op("fill")
def fill(ctx: MilContext, op: Any) -> str:
    out_var = op.outputs[0]
    if ctx.is_static(out_var):
        return _filled(ctx, op, ctx.ints(ctx.shape(out_var), "shape"))
    shape = ctx.builder.node("Cast", [ctx.inp(op, "shape")], name=f"{op.name}_shape", to=TensorProto.INT64)
    return _filled(ctx, op, shape)


@mil_op("fill_like")
def fill_like(ctx: MilContext, op: Any) -> str:
    out_var = op.outputs[0]
    if ctx.is_static(out_var):
        return _filled(ctx, op, ctx.ints(ctx.shape(out_var), "shape"))
    shape = ctx.builder.node("Shape", [ctx.inp(op, "ref_tensor")], name=f"{op.name}_shape")
    return _filled(ctx, op, shape)
