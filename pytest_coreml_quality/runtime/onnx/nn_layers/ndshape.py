"""Rank-N (Core ML 3+) layers whose output shape is given by parameters or by another
tensor: constantPad, reshapeDynamic/reshapeLike, broadcastTo*, fill*, range*, stack."""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_coreml_quality.runtime.onnx.nn_layers import nn_layer
from pytest_coreml_quality.runtime.onnx.nn_layers.context import LayerContext

_INT64 = 7
_FLOAT = 1


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
