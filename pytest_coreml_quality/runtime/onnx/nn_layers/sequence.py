"""Layers that reorder or repeat along a sequence axis: reverseSeq, slidingWindows, sequenceRepeat."""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_coreml_quality.runtime.onnx.nn_layers import nn_layer
from pytest_coreml_quality.runtime.onnx.nn_layers.context import LayerContext

_INT64 = 7


def _axis(ctx: LayerContext, axis: int, rank: int, field: str) -> int:
    if not -rank <= axis < rank:
        raise ctx.format_error(f"has {field} {axis} for a rank-{rank} input", field=field,
                               expected=f"an axis in [{-rank}, {rank - 1}]")
    return axis % rank


@nn_layer("reverseSeq")
def reverse_seq(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """For each b along ``batchAxis``, flip the first seq_lengths[b] elements along ``sequenceAxis``
    (the rest stay in place). A length beyond the axis reverses the whole axis."""
    p = layer.reverseSeq
    shape = ctx.shape(inputs[0])
    rank = len(shape)
    b = _axis(ctx, int(p.batchAxis), rank, "batchAxis")
    s = _axis(ctx, int(p.sequenceAxis), rank, "sequenceAxis")
    if b == s:
        raise ctx.format_error(f"has batchAxis and sequenceAxis both {b}", field="batchAxis",
                               expected="a batch axis other than the sequence axis")
    n, t = shape[b], shape[s]
    lengths = ctx.shape(inputs[1])
    if int(np.prod(lengths)) != n:
        raise ctx.format_error(f"has {int(np.prod(lengths))} sequence lengths for batch axis {b} of size {n}",
                               field="input[1]", expected=f"{n} lengths (shape ({n},))")
    # Source positions computed in float, as the lengths blob is (exact for these small
    # integers), and cast once to gather.
    length = ctx.node("Min", [ctx.node("Floor", [ctx.reshape(inputs[1], [n, 1])]), ctx.const([float(t)], name="t")])
    pos = ctx.const(np.arange(t, dtype=np.float32), name="pos")  # [T], broadcasts to [N, T]
    flipped = ctx.node("Sub", [ctx.node("Sub", [length, ctx.const([1.0], name="one")]), pos])
    src = ctx.node("Where", [ctx.node("Less", [pos, length]), flipped, ctx.node("Expand", [pos, ctx.ints([n, t], "nt")])])
    src = ctx.node("Cast", [src], to=_INT64)
    if b > s:
        src = ctx.node("Transpose", [src], perm=[1, 0])
    view = [1] * rank
    view[b], view[s] = n, t
    src = ctx.node("Expand", [ctx.reshape(src, view), ctx.ints(list(shape), "full")])
    return ctx.node("GatherElements", [inputs[0], src], axis=s)


@nn_layer("slidingWindows")
def sliding_windows(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """Windows of ``windowSize`` elements every ``step`` along ``axis``: that axis becomes [M, W]."""
    p = layer.slidingWindows
    shape = ctx.shape(inputs[0])
    a = _axis(ctx, int(p.axis), len(shape), "axis")
    w, step, n = int(p.windowSize), int(p.step), shape[a]
    if w < 1 or w > n:
        raise ctx.format_error(f"has windowSize {w} on an axis of {n}", field="windowSize",
                               expected=f"a window size from 1 to {n}")
    if step < 1:
        raise ctx.format_error(f"has step {step}", field="step", expected="a step of at least 1")
    m = (n - w) // step + 1
    windows = np.arange(m)[:, None] * step + np.arange(w)[None, :]
    return ctx.node("Gather", [inputs[0], ctx.const(windows, np.int64, name="windows")], axis=a)


@nn_layer("sequenceRepeat")
def sequence_repeat(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """The whole sequence (axis -5) repeated ``nRepetitions`` times (0 means 1). A rank-4 blob
    holds Seq and Batch folded into axis 0, Seq outermost, so tiling axis 0 repeats the sequence."""
    n = int(layer.sequenceRepeat.nRepetitions) or 1
    rank = ctx.rank(inputs[0])
    if rank < 4:
        raise ctx.format_error(f"has a rank-{rank} input", expected="a rank-5 [Seq, B, C, H, W] (or rank-4) blob")
    reps = [1] * rank
    reps[rank - 5 if rank >= 5 else 0] = n
    return ctx.node("Tile", [inputs[0], ctx.ints(reps, "reps")])
