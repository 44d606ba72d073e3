"""Rank-N (Core ML 3+) layers whose output shape is given by parameters or by another
tensor: constantPad, reshapeDynamic/reshapeLike, broadcastTo*, fill*, range*, stack."""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import numpy_helper

from pytest_coreml_quality.runtime.onnx.nn_layers import nn_layer
from pytest_coreml_quality.runtime.onnx.nn_layers.context import LayerContext

_INT64 = 7


def _as_int64(ctx: LayerContext, x: str) -> str:
    """A shape/amount tensor (Core ML holds them as floats) as a 1-D int64 ONNX tensor."""
    return ctx.node("Reshape", [ctx.node("Cast", [x], to=_INT64), ctx.ints([-1], "flat")])


@nn_layer("constantPad")
def constant_pad(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """Pad with ``value``; ``padAmounts`` is [before_0, after_0, before_1, after_1, ...]
    (or the second input). With ``padToGivenOutputSizeMode`` a non-zero amount is the
    wanted size of that axis, reached by padding on that side (never cropping)."""
    p = layer.constantPad
    x = inputs[0]
    value = ctx.const(np.float32(p.value), name="value")
    if len(inputs) == 2:
        rank = ctx.rank(x)
        amounts = ctx.node("Reshape", [_as_int64(ctx, inputs[1]), ctx.ints([rank, 2], "pairs")])
        if p.padToGivenOutputSizeMode:
            # max(wanted - size, 0): an amount of 0 gives -size, so no padding on that side.
            size = ctx.node("Reshape", [ctx.node("Shape", [x]), ctx.ints([rank, 1], "col")])
            amounts = ctx.node("Max", [ctx.node("Sub", [amounts, size]), ctx.ints([0], "zero")])
        pads = ctx.node("Reshape", [ctx.node("Transpose", [amounts], perm=[1, 0]), ctx.ints([-1], "flat")])
        return ctx.node("Pad", [x, pads, value], mode="constant")
    amounts = [int(a) for a in p.padAmounts]
    shape = ctx.shape(x)
    if len(amounts) != 2 * len(shape):
        raise ctx.format_error(f"has {len(amounts)} padAmounts for a rank-{len(shape)} input",
                               field="padAmounts", expected=f"{2 * len(shape)} values (before, after per axis)")
    before, after = amounts[0::2], amounts[1::2]
    if p.padToGivenOutputSizeMode:
        both = [i for i in range(len(shape)) if before[i] > 0 and after[i] > 0]
        if both:
            raise ctx.format_error(f"gives output sizes on both sides of axis {both[0]}",
                                   field="padAmounts", expected="one non-zero value per axis when "
                                   "padToGivenOutputSizeMode is true")
        before = [max(b - n, 0) if b else 0 for b, n in zip(before, shape)]
        after = [max(a - n, 0) if a else 0 for a, n in zip(after, shape)]
    return ctx.node("Pad", [x, ctx.ints(before + after, "pads"), value], mode="constant")


@nn_layer("reshapeDynamic")
def reshape_dynamic(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """Reshape to the shape held (as floats) by the second input; 0 keeps the input's
    size and -1 is inferred, as for reshapeStatic."""
    return ctx.node("Reshape", [inputs[0], _as_int64(ctx, inputs[1])])


@nn_layer("reshapeLike")
def reshape_like(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """Reshape to the second input's shape (its values are not read)."""
    return ctx.node("Reshape", [inputs[0], ctx.node("Shape", [inputs[1]])], allowzero=1)


@nn_layer("broadcastToLike", "broadcastToStatic", "broadcastToDynamic")
def broadcast_to(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """numpy.broadcast_to the second input's shape, ``targetShape``, or the shape the second input holds."""
    kind = layer.WhichOneof("layer")
    if kind == "broadcastToLike":
        shape = ctx.node("Shape", [inputs[1]])
    elif kind == "broadcastToStatic":
        shape = ctx.ints([int(d) for d in layer.broadcastToStatic.targetShape], "shape")
    else:
        shape = _as_int64(ctx, inputs[1])
    return ctx.node("Expand", [inputs[0], shape])


@nn_layer("fillLike", "fillStatic", "fillDynamic")
def fill(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """A tensor of ``value`` shaped like the input, as ``targetShape``, or as the input holds."""
    kind = layer.WhichOneof("layer")
    p = getattr(layer, kind)
    if kind == "fillStatic":
        shape = [int(d) for d in p.targetShape]
        return ctx.node("Identity", [ctx.const(np.full(shape, p.value, np.float32), name="fill")])
    shape = ctx.node("Shape", inputs[:1]) if kind == "fillLike" else _as_int64(ctx, inputs[0])
    value = np.full((1,), p.value, np.float32)
    return ctx.node("ConstantOfShape", [shape], value=numpy_helper.from_array(value))


@nn_layer("rangeStatic")
def range_static(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """numpy.arange(startValue, endValue, stepSizeValue) as a float vector."""
    p = layer.rangeStatic
    if p.stepSizeValue == 0:
        raise ctx.format_error("has a step of 0", field="stepSizeValue", expected="a non-zero step")
    values = np.arange(p.startValue, p.endValue, p.stepSizeValue, dtype=np.float32)
    return ctx.node("Identity", [ctx.const(values, name="range")])


@nn_layer("rangeDynamic")
def range_dynamic(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """arange(start, end, step): end is the first input; start and step the next inputs
    when present, else the parameters."""
    p = layer.rangeDynamic
    given = list(inputs)
    if len(given) < 2:
        given.append(ctx.const(np.float32(p.startValue), name="start"))
    if len(given) < 3:
        given.append(ctx.const(np.float32(p.stepSizeValue), name="step"))
    # Range takes true scalars; inputs are (1,) vectors (and the builder stores constants as (1,) too).
    scalar = ctx.ints([], "scalar")
    end, start, step = (ctx.node("Reshape", [v, scalar]) for v in given)
    return ctx.node("Range", [start, end, step])


@nn_layer("stack")
def stack(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """numpy.stack: a new axis (counted in the output's rank when negative), then concat."""
    axis = int(layer.stack.axis)
    axes = ctx.ints([axis], "axis")
    return ctx.node("Concat", [ctx.node("Unsqueeze", [x, axes]) for x in inputs], axis=axis)
