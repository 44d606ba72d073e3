"""Scatter ops: scatter, scatter_along_axis, scatter_nd, and slice_update (a strided slice written in place).

MIL's scatter modes map onto ONNX's ``reduction`` (opset 18 has add, mul, max and min);
``sub`` adds the negated updates (negation is exact, so ``x - u1 - u2`` is computed as
``x + (-u1) + (-u2)``, the same values). ``div`` has no ONNX reduction: it is translated
only where it is exact, on float data when the indices are compile-time constants that write each
position at most once (then ``x / u`` is ``x`` divided by a tensor of ones holding ``u``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from onnx import TensorProto, numpy_helper

from pytest_coreml_quality.runtime.onnx.mil_ops.registry import MilContext, dtype_name, mil_op

_REDUCTION = {"update": "none", "add": "add", "sub": "add", "mul": "mul", "max": "max", "min": "min"}


def _mode(ctx: MilContext, op: Any) -> str:
    # coremltools' default is "add" for all three scatter ops (not "update", as one docstring says).
    mode = str(ctx.static(op, "mode", "add")).lower()
    if mode not in _REDUCTION and mode != "div":
        raise ValueError(f"mode {mode!r} is not a scatter mode (expected one of update, add, sub, mul, div, max, min)")
    return mode


def _updates(ctx: MilContext, op: Any, mode: str) -> str:
    updates = ctx.inp(op, "updates")
    if mode == "sub":
        return ctx.builder.node("Neg", [updates], name=f"{op.name}_neg")
    return updates


def _scatter(ctx: MilContext, op: Any, onnx_op: str, indices: str,
             positions: Callable[[np.ndarray], np.ndarray], **attrs: Any) -> str:
    """``onnx_op`` (ScatterElements/ScatterND) of the op's updates into ``data`` with MIL's ``mode``.

    ``positions(indices)`` gives the flat target positions of compile-time indices; ``div``
    needs them to prove no position is written twice.
    """
    mode = _mode(ctx, op)
    b = ctx.builder
    data = ctx.inp(op, "data")
    if mode != "div":
        return b.node(onnx_op, [data, indices, _updates(ctx, op, mode)], name=op.name,
                      reduction=_REDUCTION[mode], **attrs)
    if dtype_name(op.inputs["data"]).startswith("int"):
        raise ValueError("mode 'div' on integer data is not translated (its rounding is not documented)")
    idx_val = ctx.value(op.inputs["indices"])
    if idx_val is None:
        raise ValueError("mode 'div' is only translated with compile-time indices (ONNX has no division reduction)")
    targets = positions(np.asarray(idx_val))
    if len(np.unique(targets)) != targets.size:
        raise ValueError("mode 'div' with an index written more than once is not translated "
                         "(ONNX has no division reduction)")
    ones = b.node("ConstantOfShape", [b.node("Shape", [data], name=f"{op.name}_shape")], name=f"{op.name}_ones",
                  value=numpy_helper.from_array(np.ones(1, dtype=np.float32)))
    divisor = b.node(onnx_op, [ones, indices, ctx.inp(op, "updates")], name=f"{op.name}_divisor", **attrs)
    return b.node("Div", [data, divisor], name=op.name)


def _flat_positions(shape: tuple[int, ...], index_arrays: list[np.ndarray]) -> np.ndarray:
    """Flat positions in ``shape`` addressed by per-axis index arrays (negatives count from the end)."""
    wrapped = [np.asarray(i) % d for i, d in zip(index_arrays, shape)]
    return np.ravel_multi_index(np.broadcast_arrays(*wrapped), shape).reshape(-1)


@mil_op("scatter")
def scatter(ctx: MilContext, op: Any) -> str:
    """``data[..., indices[i], ...] (mode)= updates[..., i, ...]`` on ``axis`` (1-D ``indices``)."""
    data_var, upd_var = op.inputs["data"], op.inputs["updates"]
    rank = ctx.rank(data_var)
    axis = int(ctx.static(op, "axis", 0)) % rank
    b = ctx.builder
    # ScatterElements wants one index per update element: broadcast the 1-D indices along ``axis``.
    shape = [1] * rank
    shape[axis] = -1
    column = b.node("Reshape", [ctx.inp(op, "indices"), ctx.ints(shape, "shape")], name=f"{op.name}_idx")
    upd_shape = b.node("Shape", [ctx.inp(op, "updates")], name=f"{op.name}_ushape")
    indices = b.node("Expand", [column, upd_shape], name=f"{op.name}_indices")

    def positions(idx: np.ndarray) -> np.ndarray:
        grids = list(np.indices(ctx.shape(upd_var), sparse=True))
        grids[axis] = idx.reshape([-1 if a == axis else 1 for a in range(rank)])
        return _flat_positions(ctx.shape(data_var), grids)

    return _scatter(ctx, op, "ScatterElements", indices, positions, axis=axis)


@mil_op("scatter_along_axis")
def scatter_along_axis(ctx: MilContext, op: Any) -> str:
    """``data[..., indices[..., i, ...], ...] (mode)= updates[..., i, ...]`` (``indices`` shaped as ``updates``)."""
    data_var = op.inputs["data"]
    rank = ctx.rank(data_var)
    axis = int(ctx.static(op, "axis", 0)) % rank

    def positions(idx: np.ndarray) -> np.ndarray:
        grids = list(np.indices(idx.shape, sparse=True))
        grids[axis] = idx
        return _flat_positions(ctx.shape(data_var), grids)

    return _scatter(ctx, op, "ScatterElements", ctx.inp(op, "indices"), positions, axis=axis)


@mil_op("scatter_nd")
def scatter_nd(ctx: MilContext, op: Any) -> str:
    """``data[indices[i, ...]] (mode)= updates[i, ...]``; the last axis of ``indices`` is a (partial) index."""
    b = ctx.builder
    indices = b.node("Cast", [ctx.inp(op, "indices")], name=f"{op.name}_i64", to=TensorProto.INT64)

    def positions(idx: np.ndarray) -> np.ndarray:
        # Each index names a slice of the trailing axes: the slice's position stands for all of it.
        k = idx.shape[-1]
        return _flat_positions(ctx.shape(op.inputs["data"])[:k], [idx[..., j] for j in range(k)])

    return _scatter(ctx, op, "ScatterND", indices, positions)


def _slice_positions(dim: int, begin: int, end: int, stride: int, begin_mask: bool, end_mask: bool,
                     squeeze: bool) -> list[int]:
    """The indices of one axis that MIL's slice_by_index semantics select, in slice order."""
    if squeeze:
        return [range(dim)[0 if begin_mask else begin]]
    start = None if begin_mask else begin
    stop = None if end_mask else end
    return list(range(dim))[slice(start, stop, stride)]


@mil_op("slice_update")
def slice_update(ctx: MilContext, op: Any) -> str:
    """``x[begin:end:stride, ...] = update``: gather the rows of one sliced axis, update the rest
    of the slice inside them (recursively), and scatter the rows back. Every step copies values,
    and the index constants are one list per sliced axis (not one per element)."""
    x_var = op.inputs["x"]
    dims = ctx.shape(x_var)
    rank = len(dims)
    begin = ctx.static_list(op, "begin")
    end = ctx.static_list(op, "end")
    stride = ctx.static_list(op, "stride") or [1] * rank
    masks = {m: ctx.static_list(op, m) or [0] * rank for m in ("begin_mask", "end_mask", "squeeze_mask")}
    axes = []
    for a in range(rank):
        pos = _slice_positions(dims[a], begin[a], end[a], stride[a], bool(masks["begin_mask"][a]),
                               bool(masks["end_mask"][a]), bool(masks["squeeze_mask"][a]))
        if not pos:
            return ctx.builder.node("Identity", [ctx.inp(op, "x")], name=op.name)  # an empty slice writes nothing
        if pos != list(range(dims[a])):
            axes.append((a, pos))
    update = ctx.inp(op, "update")
    squeezed = [a for a in range(rank) if masks["squeeze_mask"][a]]
    if squeezed:
        update = ctx.builder.node("Unsqueeze", [update, ctx.ints(squeezed, "axes")], name=f"{op.name}_update")
    if not axes:  # the slice is the whole tensor
        return ctx.builder.node("Identity", [update], name=op.name)
    return _write_block(ctx, op, ctx.inp(op, "x"), list(dims), update, axes, op.name)


def _write_block(ctx: MilContext, op: Any, x: str, dims: list[int], update: str,
                 axes: list[tuple[int, list[int]]], name: str) -> str:
    b = ctx.builder
    (axis, pos), rest = axes[0], axes[1:]
    block_dims = list(dims)
    block_dims[axis] = len(pos)
    idx = ctx.builder.const(np.asarray(pos, dtype=np.int64), name=f"{op.name}_pos{axis}")
    if rest:
        rows = b.node("Gather", [x, idx], name=f"{op.name}_rows{axis}", axis=axis)
        update = _write_block(ctx, op, rows, block_dims, update, rest, f"{op.name}_block{axis}")
    shape = [1] * len(dims)
    shape[axis] = len(pos)
    column = b.node("Reshape", [idx, ctx.ints(shape, "shape")], name=f"{op.name}_col{axis}")
    indices = b.node("Expand", [column, ctx.ints(block_dims, "shape")], name=f"{op.name}_idx{axis}")
    return b.node("ScatterElements", [x, indices, update], name=name, axis=axis)
