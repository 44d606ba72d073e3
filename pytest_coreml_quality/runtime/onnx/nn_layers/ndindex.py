"""Rank-N (Core ML 3+) layers that select, order or accumulate along one axis: topK,
argSort, sliceBySize, gatherAlongAxis, reverse, cumSum."""

from __future__ import annotations

from typing import Any

from pytest_coreml_quality.runtime.onnx.nn_layers import nn_layer
from pytest_coreml_quality.runtime.onnx.nn_layers.context import LayerContext

_INT64 = 7
_FLOAT = 1


def _int_scalar(ctx: LayerContext, x: str, shape: list[int]) -> str:
    """A (float) scalar or shape-(1,) input as an int64 tensor of ``shape``."""
    return ctx.node("Reshape", [ctx.node("Cast", [x], to=_INT64), ctx.ints(shape, "shape")])


def _axis_size(ctx: LayerContext, x: str, axis: int) -> str:
    """The size of ``axis`` of ``x``, as an int64 vector of one value."""
    return ctx.node("Gather", [ctx.node("Shape", [x]), ctx.ints([axis], "axis")], axis=0)


@nn_layer("topK")
def top_k(ctx: LayerContext, layer: Any, inputs: list[str]) -> list[str]:
    """Values and (float) indices of the K largest, or smallest with ``useBottomK``, sorted;
    K is the second input when there is one."""
    p = layer.topK
    k = _int_scalar(ctx, inputs[1], [1]) if len(inputs) > 1 else ctx.ints([int(p.K)], "k")
    values, indices = ctx.node("TopK", [inputs[0], k], 2, axis=int(p.axis), largest=0 if p.useBottomK else 1,
                               sorted=1)
    return [values, ctx.node("Cast", [indices], to=_FLOAT)]


@nn_layer("argSort")
def arg_sort(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """Indices (as floats) that sort the input along ``axis``: a TopK over the whole axis."""
    p = layer.argSort
    axis = int(p.axis)
    _, indices = ctx.node("TopK", [inputs[0], _axis_size(ctx, inputs[0], axis)], 2, axis=axis,
                          largest=1 if p.descending else 0, sorted=1)
    return ctx.node("Cast", [indices], to=_FLOAT)


@nn_layer("sliceBySize")
def slice_by_size(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """x[..., begin:begin+size, ...] on ``axis``, ``begin`` the second input (negative: from the end)."""
    p = layer.sliceBySize
    axis = int(p.axis)
    if p.size <= 0:
        raise ctx.format_error(f"has size {p.size}", field="size", expected="a positive size")
    begin = ctx.node("Mod", [_int_scalar(ctx, inputs[1], [1]), _axis_size(ctx, inputs[0], axis)])
    end = ctx.node("Add", [begin, ctx.ints([int(p.size)], "size")])
    return ctx.node("Slice", [inputs[0], begin, end, ctx.ints([axis], "axes")])


@nn_layer("gatherAlongAxis")
def gather_along_axis(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """numpy.take_along_axis (negative indices count from the end)."""
    indices = ctx.node("Cast", [inputs[1]], to=_INT64)
    return ctx.node("GatherElements", [inputs[0], indices], axis=int(layer.gatherAlongAxis.axis))


@nn_layer("reverse")
def reverse(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """numpy.flip on every axis whose ``reverseDim`` is true."""
    flags = [bool(f) for f in layer.reverse.reverseDim]
    rank = ctx.rank(inputs[0])
    if len(flags) != rank:
        raise ctx.format_error(f"has {len(flags)} reverseDim values for a rank-{rank} input", field="reverseDim",
                               expected=f"{rank} values")
    axes = [i for i, f in enumerate(flags) if f]
    if not axes:
        return ctx.node("Identity", inputs[:1])
    n = len(axes)
    return ctx.node("Slice", [inputs[0], ctx.ints([-1] * n, "starts"), ctx.ints([-(2**62)] * n, "ends"),
                              ctx.ints(axes, "axes"), ctx.ints([-1] * n, "steps")])


@nn_layer("cumSum")
def cum_sum(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """Running sum along ``axis`` (or the second input), optionally exclusive and/or reversed."""
    p = layer.cumSum
    # CumSum wants a true scalar axis; the builder stores constants with at least one dimension.
    axis = _int_scalar(ctx, inputs[1] if len(inputs) > 1 else ctx.const(float(p.axis), name="axis"), [])
    return ctx.node("CumSum", [inputs[0], axis], exclusive=int(p.excludeFinalSum), reverse=int(p.reverse))
