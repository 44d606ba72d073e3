"""Rank-N (Core ML 3+) layers that select, order, mask or accumulate: topK, argSort,
sliceBySize, gatherAlongAxis, gatherND, whereNonZero, oneHot, reverse, cumSum, triangular
and band masks, embeddingND."""

from __future__ import annotations

from typing import Any

import numpy as np

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


@nn_layer("gatherND")
def gather_nd(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """params[indices[..., :]]: the last axis of ``indices`` is a multi-index into ``params``."""
    return ctx.node("GatherND", [inputs[0], ctx.node("Cast", [inputs[1]], to=_INT64)])


@nn_layer("whereNonZero")
def where_non_zero(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """(N, rank) float multi-indices of the non-zero elements, in row-major order."""
    return ctx.node("Cast", [ctx.node("Transpose", [ctx.node("NonZero", inputs[:1])], perm=[1, 0])], to=_FLOAT)


@nn_layer("oneHot")
def one_hot(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """One-hot vectors of ``onValue``/``offValue`` on output axis ``axis``; an index outside
    [0, size-1] (negative ones too, which ONNX would wrap) gives an all-``offValue`` vector."""
    p = layer.oneHot
    if len(inputs) > 1:
        depth = _int_scalar(ctx, inputs[1], [1])
    else:
        depth = ctx.ints([int(p.oneHotVectorSize)], "depth")
    idx = ctx.node("Cast", [inputs[0]], to=_INT64)
    idx = ctx.node("Where", [ctx.node("Less", [idx, ctx.ints([0], "zero")]), depth, idx])  # out of range
    values = ctx.const([p.offValue, p.onValue], name="values")
    return ctx.node("OneHot", [idx, depth, values], axis=int(p.axis))


@nn_layer("lowerTriangular", "upperTriangular")
def triangular(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """Zero the last two axes above (lower) or below (upper) the k-th diagonal."""
    kind = layer.WhichOneof("layer")
    k = ctx.ints([int(getattr(layer, kind).k)], "k")
    return ctx.node("Trilu", [inputs[0], ctx.node("Reshape", [k, ctx.ints([], "scalar")])],
                    upper=1 if kind == "upperTriangular" else 0)


@nn_layer("matrixBandPart")
def matrix_band_part(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """Keep the band numLower below / numUpper above the diagonal of the last two axes
    (a negative count keeps that whole triangle)."""
    p = layer.matrixBandPart
    shape = ctx.shape(inputs[0])
    if len(shape) < 2:
        raise ctx.format_error(f"has a rank-{len(shape)} input", expected="rank 2 or more")
    m, n = np.indices(shape[-2:])
    band = ((p.numLower < 0) | (m - n <= p.numLower)) & ((p.numUpper < 0) | (n - m <= p.numUpper))
    return ctx.node("Mul", [inputs[0], ctx.const(band.astype(np.float32), name="band")])


@nn_layer("embeddingND")
def embedding_nd(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """Rows of the [embeddingSize, vocabSize] table picked by the indices (last input axis is 1), plus bias."""
    p = layer.embeddingND
    vocab, size = int(p.vocabSize), int(p.embeddingSize)
    table = ctx.weights(p.weights, (size, vocab), "embeddingND.weights")
    idx = ctx.node("Squeeze", [ctx.node("Cast", [inputs[0]], to=_INT64), ctx.ints([-1], "last")])
    y = ctx.node("Gather", [ctx.const(np.ascontiguousarray(table.T), name="table"), idx], axis=0)
    if p.hasBias:
        y = ctx.node("Add", [y, ctx.const(ctx.weights(p.bias, (size,), "embeddingND.bias"), name="bias")])
    return y


_BIG = 2**62  # an index past any end: Slice clamps it to the axis


@nn_layer("sliceDynamic")
def slice_dynamic(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """sliceStatic with beginIds from the second input (and endIds from the third, if any).
    Strides and masks given as inputs (4th to 7th) are not supported: they decide at run
    time which end of each axis a masked index means."""
    p = layer.sliceDynamic
    if len(inputs) > 3:
        raise ctx.unsupported(f"takes strides or masks as inputs ({len(inputs)} inputs)",
                              expected="sliceDynamic.strides, beginMasks, endMasks, squeezeMasks as parameters "
                                       "(at most 3 inputs: data, beginIds, endIds)")
    rank = ctx.rank(inputs[0])
    steps = [int(s) for s in p.strides] or [1] * rank

    def flags(values: Any, field: str) -> list[bool]:
        # coremltools' builder writes 5 endMasks whatever the rank: unset extra flags are harmless.
        if any(values[rank:]):
            raise ctx.format_error(f"sets {field} beyond the input's rank {rank}", field=field,
                                   expected=f"{rank} values")
        return [bool(v) for v in values[:rank]] + [False] * (rank - len(values))

    if len(steps) != rank:
        raise ctx.format_error(f"has {len(steps)} strides for a rank-{rank} input", field="strides",
                               expected=f"{rank} values")
    begin_mask, end_mask = flags(p.beginMasks, "beginMasks"), flags(p.endMasks, "endMasks")
    begins = ctx.node("Cast", [inputs[1]], to=_INT64)
    ends = ctx.node("Cast", [inputs[2]], to=_INT64) if len(inputs) > 2 else ctx.ints(
        list(p.endIds) + [0] * (rank - len(p.endIds)), "ends")
    # A masked index means the start (begin) or the end (end) of the axis in the stride's direction.
    begin_fill = [0 if s > 0 else _BIG for s in steps]
    end_fill = [_BIG if s > 0 else -_BIG for s in steps]
    begins = ctx.node("Where", [ctx.const(begin_mask, bool, name="bmask"), ctx.ints(begin_fill, "bfill"), begins])
    ends = ctx.node("Where", [ctx.const(end_mask, bool, name="emask"), ctx.ints(end_fill, "efill"), ends])
    y = ctx.node("Slice", [inputs[0], begins, ends, ctx.ints(list(range(rank)), "axes"), ctx.ints(steps, "steps")])
    squeeze = [i for i, m in enumerate(flags(p.squeezeMasks, "squeezeMasks")) if m]
    if squeeze:
        y = ctx.node("Squeeze", [y, ctx.ints(squeeze, "squeeze")])
    return y
