"""Rank-N scatter layers: scatter (slices along an axis), scatterND (multi-indices) and
scatterAlongAxis (numpy.put_along_axis), in every ScatterMode.

The proto defines each as a loop over the updates in order, so with duplicate indices
SCATTER_UPDATE keeps the last update and the accumulating modes apply every one of them.
ONNX leaves duplicate indices undefined for reduction "none", so UPDATE is built from an
"add" scatter of only the last update per target (see :func:`_combine`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_coreml_quality.runtime.onnx.nn_layers import nn_layer
from pytest_coreml_quality.runtime.onnx.nn_layers.context import LayerContext

_INT64 = 7
_FLOAT = 1
_BOOL = 9

# ScatterMode -> ONNX reduction, and how the updates are fed to it.
_REDUCTIONS = {"SCATTER_ADD": "add", "SCATTER_SUB": "add", "SCATTER_MUL": "mul", "SCATTER_MAX": "max",
               "SCATTER_MIN": "min"}


def _mode(ctx: LayerContext, p: Any) -> str:
    name = type(p).DESCRIPTOR.fields_by_name["mode"].enum_type.values_by_number.get(int(p.mode))
    if name is None:
        raise ctx.format_error(f"has mode {int(p.mode)}", field="mode",
                               expected="a ScatterMode (SCATTER_UPDATE, _ADD, _SUB, _MUL, _DIV, _MAX, _MIN)")
    return name.name


def _operands(ctx: LayerContext, p: Any, inputs: list[str]) -> tuple[str, list[str], list[tuple[int, ...]]]:
    """The layer's ScatterMode, its (container, indices, updates) inputs and their shapes."""
    operands = inputs[:3]
    return _mode(ctx, p), operands, [ctx.shape(x) for x in operands]


def _axis(ctx: LayerContext, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ctx.format_error(f"has axis {axis} for a rank-{rank} input", field="axis",
                               expected=f"an axis in [{-rank}, {rank - 1}]")
    return axis % rank


def _indices(ctx: LayerContext, x: str, sizes: list[int]) -> str:
    """Float indices as int64, negative ones counted from the end of their axis (``sizes``
    broadcasts against ``x``). NeuralNetwork blobs are float, so the wrapping is done in
    float (as the hardware does, fp16 under fp16 emulation) and cast once at the end."""
    wrapped = ctx.node("Add", [x, ctx.const(np.asarray(sizes, np.float32), name="sizes")])
    x = ctx.node("Where", [ctx.node("Less", [x, ctx.const(np.float32(0), name="zero_f")]), wrapped, x])
    return ctx.node("Cast", [x], to=_INT64)


def _fill(ctx: LayerContext, like: str, value: float) -> str:
    """A float tensor of ``like``'s shape filled with ``value``."""
    return ctx.node("Expand", [ctx.const([value], name="fill"), ctx.node("Shape", [like])])


def _any_later(ctx: LayerContext, same: str, m: int, axis: int, rank: int) -> str:
    """``same`` (bool) has two axes of size ``m`` at ``axis``, ``axis + 1`` (i, j) and
    ``rank`` axes in all; True where some j > i is the same target as i (i is overwritten)."""
    later = np.triu(np.ones((m, m), bool), 1).reshape((m, m) + (1,) * (rank - axis - 2))
    dup = ctx.node("Cast", [ctx.node("And", [same, ctx.const(later, bool, name="later")])], to=_FLOAT)
    hit = ctx.node("ReduceMax", [dup, ctx.ints([axis + 1], "jaxis")], keepdims=0)
    return ctx.node("Cast", [hit], to=_BOOL)


def _combine(ctx: LayerContext, op: str, mode: str, container: str, indices: str, updates: str,
             keep: str | None, **attrs: Any) -> str:
    """``op`` (ScatterElements or ScatterND) in ScatterMode ``mode``. ``keep`` (bool,
    broadcasting against ``updates``) marks the updates no later update overwrites; only
    SCATTER_UPDATE needs it."""
    if mode == "SCATTER_UPDATE":
        assert keep is not None
        zero = ctx.const(np.float32(0), name="zero_f")
        base = _fill(ctx, container, 0.0)
        # Each target receives exactly one non-zero term (its last update), so the sum is exact.
        last = ctx.node(op, [base, indices, ctx.node("Where", [keep, updates, zero])], reduction="add", **attrs)
        touched = ctx.node(op, [base, indices, _fill(ctx, updates, 1.0)], reduction="add", **attrs)
        return ctx.node("Where", [ctx.node("Greater", [touched, zero]), last, container])
    if mode == "SCATTER_DIV":
        # container / u1 / u2 ... as container / (u1 * u2 ...): untouched elements divide by 1.
        divisor = ctx.node(op, [_fill(ctx, container, 1.0), indices, updates], reduction="mul", **attrs)
        return ctx.node("Div", [container, divisor])
    if mode == "SCATTER_SUB":
        updates = ctx.node("Neg", [updates])  # a - b is a + (-b) exactly
    return ctx.node(op, [container, indices, updates], reduction=_REDUCTIONS[mode], **attrs)


@nn_layer("scatter")
def scatter(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """output = container; output[.., indices[i..j], ..] (op)= updates[.., i..j, ..] on ``axis``."""
    p = layer.scatter
    mode, (container, indices, updates), (cshape, ishape, ushape) = _operands(ctx, p, inputs)
    rank = len(cshape)
    a = _axis(ctx, int(p.axis), rank)
    expected = (*cshape[:a], *ishape, *cshape[a + 1:])
    if tuple(ushape) != expected:
        raise ctx.format_error(f"has updates of shape {list(ushape)} for container {list(cshape)} and indices "
                               f"{list(ishape)} on axis {a}", field="input[2]", expected=f"shape {list(expected)}")
    m = int(np.prod(ishape))
    flat = _indices(ctx, ctx.reshape(indices, [m]), [cshape[a]])
    # ScatterElements form: the index vector on the axis, repeated over the other axes.
    wide = [*cshape[:a], m, *cshape[a + 1:]]
    upd = ctx.reshape(updates, wide)
    idx = ctx.node("Expand", [ctx.reshape(flat, [1] * a + [m] + [1] * (rank - a - 1)), ctx.ints(wide, "wide")])
    keep = None
    if mode == "SCATTER_UPDATE":
        same = ctx.node("Equal", [ctx.reshape(flat, [m, 1]), ctx.reshape(flat, [1, m])])
        overwritten = _any_later(ctx, same, m, 0, 2)
        keep = ctx.reshape(ctx.node("Not", [overwritten]), [1] * a + [m] + [1] * (rank - a - 1))
    return _combine(ctx, "ScatterElements", mode, container, idx, upd, keep, axis=a)


@nn_layer("scatterAlongAxis")
def scatter_along_axis(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """numpy.put_along_axis in ScatterMode: output[.., indices[.., k, ..], ..] (op)= updates[.., k, ..]."""
    p = layer.scatterAlongAxis
    mode, (container, indices, updates), (cshape, ishape, ushape) = _operands(ctx, p, inputs)
    rank = len(cshape)
    a = _axis(ctx, int(p.axis), rank)
    if tuple(ishape) != tuple(ushape) or len(ishape) != rank or any(
            i != c for k, (i, c) in enumerate(zip(ishape, cshape)) if k != a):
        raise ctx.format_error(f"has indices {list(ishape)} and updates {list(ushape)} for container {list(cshape)}",
                               field="input[1]", expected=f"indices and updates of one shape, equal to the container's "
                                                          f"except on axis {a}")
    idx = _indices(ctx, indices, [cshape[a]])
    keep = None
    if mode == "SCATTER_UPDATE":
        m = ishape[a]
        same = ctx.node("Equal", [ctx.node("Unsqueeze", [idx, ctx.ints([a + 1], "j")]),
                                  ctx.node("Unsqueeze", [idx, ctx.ints([a], "i")])])
        keep = ctx.node("Not", [_any_later(ctx, same, m, a, rank + 1)])
    return _combine(ctx, "ScatterElements", mode, container, idx, updates, keep, axis=a)


@nn_layer("scatterND")
def scatter_nd(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """output[indices[i..j, :], ...] (op)= updates[i..j, ...]: the last axis of ``indices`` is a
    multi-index into the leading axes of the container."""
    p = layer.scatterND
    mode, (container, indices, updates), (cshape, ishape, ushape) = _operands(ctx, p, inputs)
    k = ishape[-1] if ishape else 0
    if not ishape or not 1 <= k <= len(cshape):
        raise ctx.format_error(f"has indices of shape {list(ishape)} for a rank-{len(cshape)} container",
                               field="input[1]", expected=f"a last axis of 1 to {len(cshape)} index components")
    expected = (*ishape[:-1], *cshape[k:])
    if tuple(ushape) != expected:
        raise ctx.format_error(f"has updates of shape {list(ushape)} for container {list(cshape)} and indices "
                               f"{list(ishape)}", field="input[2]", expected=f"shape {list(expected)}")
    idx = _indices(ctx, indices, list(cshape[:k]))
    keep = None
    if mode == "SCATTER_UPDATE":
        m = int(np.prod(ishape[:-1]))
        flat = ctx.reshape(idx, [m, k])
        equal = ctx.node("Cast", [ctx.node("Equal", [ctx.reshape(flat, [m, 1, k]), ctx.reshape(flat, [1, m, k])])],
                         to=_FLOAT)
        same = ctx.node("Cast", [ctx.node("ReduceMin", [equal, ctx.ints([2], "k")], keepdims=0)], to=_BOOL)
        keep = ctx.reshape(ctx.node("Not", [_any_later(ctx, same, m, 0, 2)]),
                           [*ishape[:-1]] + [1] * (len(cshape) - k))
    return _combine(ctx, "ScatterND", mode, container, idx, updates, keep)
