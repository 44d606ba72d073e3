"""Rank-5 era vector layers: dot (dot product / cosine similarity on axis -3) and embedding."""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_coreml_quality.runtime.onnx.nn_layers import nn_layer
from pytest_coreml_quality.runtime.onnx.nn_layers.context import LayerContext

_INT64 = 7


def _vector_blob(ctx: LayerContext, x: str, what: str) -> tuple[int, ...]:
    """The shape of a [..., C, 1, 1] blob (rank >= 3, last two axes 1), or a format error."""
    shape = ctx.shape(x)
    if len(shape) < 3 or tuple(shape[-2:]) != (1, 1):
        raise ctx.format_error(f"has {what} of shape {list(shape)}", expected="rank >= 3 with the last two axes 1, "
                                                                           "e.g. [B, C, 1, 1]")
    return shape


@nn_layer("dot")
def dot(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """Sum over axis -3 of x1 * x2, kept as a size-1 axis; with ``cosineSimilarity`` each input
    is first divided by its L2 norm over that axis."""
    if len(inputs) != 2:
        raise ctx.format_error(f"has {len(inputs)} inputs", field="input", expected="2 inputs")
    a, b = inputs
    _vector_blob(ctx, a, "a first input")
    _vector_blob(ctx, b, "a second input")
    axis = ctx.ints([-3], "axis")
    if layer.dot.cosineSimilarity:
        a, b = (ctx.node("Div", [v, ctx.node("ReduceL2", [v, axis], keepdims=1)]) for v in (a, b))
    return ctx.node("ReduceSum", [ctx.node("Mul", [a, b]), axis], keepdims=1)


@nn_layer("embedding")
def embedding(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """Column x of the [outputChannels, inputDim] table (plus bias) for each index x of a
    [..., 1, 1, 1] blob (rank 4 or 5); the output is [..., outputChannels, 1, 1]."""
    p = layer.embedding
    shape = ctx.shape(inputs[0])
    if len(shape) not in (4, 5) or tuple(shape[-3:]) != (1, 1, 1):
        raise ctx.format_error(f"has an input of shape {list(shape)}",
                               expected="rank 4 (x1, 1, 1, 1) or rank 5 (x1, x2, 1, 1, 1)")
    vocab, size = int(p.inputDim), int(p.outputChannels)
    table = ctx.weights(p.weights, (size, vocab), "embedding.weights")
    lead = list(shape[:-3])
    idx = ctx.reshape(ctx.node("Cast", [inputs[0]], to=_INT64), lead)
    y = ctx.node("Gather", [ctx.const(np.ascontiguousarray(table.T), name="table"), idx], axis=0)
    if p.hasBias:
        y = ctx.node("Add", [y, ctx.const(ctx.weights(p.bias, (size,), "embedding.bias"), name="bias")])
    return ctx.reshape(y, [*lead, size, 1, 1])
