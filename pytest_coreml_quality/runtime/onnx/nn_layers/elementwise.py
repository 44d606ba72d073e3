"""Elementwise layers: add/multiply/average/max/min, the *Broadcastable family, unary
functions, comparisons, scale and bias."""

from __future__ import annotations

import math
from typing import Any

from pytest_coreml_quality.runtime.onnx.nn_layers import nn_layer
from pytest_coreml_quality.runtime.onnx.nn_layers.context import LayerContext


def _variadic(ctx: LayerContext, op: str, inputs: list[str]) -> str:
    return inputs[0] if len(inputs) == 1 else ctx.node(op, inputs)


@nn_layer("add")
def add(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    if len(inputs) == 1:
        return ctx.node("Add", [inputs[0], ctx.const(layer.add.alpha, name="alpha")])
    if len(inputs) == 2:
        # Add, not a two-input Sum (same value): onnxruntime's layout and fusion passes know Add.
        return ctx.node("Add", inputs)
    return ctx.node("Sum", inputs)


@nn_layer("multiply")
def multiply(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    if len(inputs) == 1:
        return ctx.node("Mul", [inputs[0], ctx.const(layer.multiply.alpha, name="alpha")])
    y = inputs[0]
    for other in inputs[1:]:
        y = ctx.node("Mul", [y, other])
    return y


@nn_layer("average")
def average(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    return _variadic(ctx, "Mean", inputs)


@nn_layer("max", "maxBroadcastable")
def maximum(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    return _variadic(ctx, "Max", inputs)


@nn_layer("min", "minBroadcastable")
def minimum(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    return _variadic(ctx, "Min", inputs)


_BINARY = {
    "addBroadcastable": "Add",
    "subtractBroadcastable": "Sub",
    "multiplyBroadcastable": "Mul",
    "divideBroadcastable": "Div",
    "powBroadcastable": "Pow",
}


@nn_layer(*_BINARY)
def binary(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    kind = layer.WhichOneof("layer")
    if len(inputs) != 2:
        raise ctx.format_error(f"has {len(inputs)} inputs", expected="2 inputs")
    return ctx.node(_BINARY[kind], inputs)


@nn_layer("whereBroadcastable")
def where(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """condition ? x : y with numpy broadcasting; a non-zero condition value is true."""
    if len(inputs) != 3:
        raise ctx.format_error(f"has {len(inputs)} inputs", expected="3 inputs (condition, x, y)")
    cond = ctx.node("Cast", [inputs[0]], to=9)  # float -> bool: any non-zero value is true
    return ctx.node("Where", [cond, inputs[1], inputs[2]])


@nn_layer("floorDivBroadcastable")
def floor_div(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    return ctx.node("Floor", [ctx.node("Div", inputs)])


@nn_layer("modBroadcastable")
def mod(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    # Floored modulo (the result takes the divisor's sign), as numpy's mod.
    a, b = inputs
    q = ctx.node("Floor", [ctx.node("Div", [a, b])])
    return ctx.node("Sub", [a, ctx.node("Mul", [q, b])])


_COMPARE = {
    "equal": "Equal",
    "notEqual": "Equal",
    "lessThan": "Less",
    "lessEqual": "LessOrEqual",
    "greaterThan": "Greater",
    "greaterEqual": "GreaterOrEqual",
}


@nn_layer(*_COMPARE)
def compare(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    kind = layer.WhichOneof("layer")
    params = getattr(layer, kind)
    args = inputs if len(inputs) == 2 else [inputs[0], ctx.const(params.alpha, name="alpha")]
    y = ctx.node(_COMPARE[kind], args)
    if kind == "notEqual":
        y = ctx.node("Not", [y])
    return ctx.node("Cast", [y], to=1)  # Core ML returns 1.0 / 0.0 floats


_LOGICAL = {"logicalAnd": "And", "logicalOr": "Or", "logicalXor": "Xor"}


@nn_layer(*_LOGICAL, "logicalNot")
def logical(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    kind = layer.WhichOneof("layer")
    zero = ctx.const(0.0, name="zero")
    bools = [ctx.node("Not", [ctx.node("Equal", [x, zero])]) for x in inputs]
    y = ctx.node("Not", bools) if kind == "logicalNot" else ctx.node(_LOGICAL[kind], bools)
    return ctx.node("Cast", [y], to=1)


@nn_layer("unary")
def unary(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    p = layer.unary
    x = inputs[0]
    scale = p.scale if p.scale != 0 else 1.0
    if scale != 1.0:
        x = ctx.node("Mul", [x, ctx.const(scale, name="scale")])
    if p.shift != 0:
        x = ctx.node("Add", [x, ctx.const(p.shift, name="shift")])
    eps = p.epsilon if p.epsilon != 0 else 1e-6
    op = p.Operation.Name(p.type)
    if op == "SQRT":
        return ctx.node("Sqrt", [x])
    if op == "RSQRT":
        return ctx.node("Reciprocal", [ctx.node("Sqrt", [ctx.node("Add", [x, ctx.const(eps, name="eps")])])])
    if op == "INVERSE":
        return ctx.node("Reciprocal", [ctx.node("Add", [x, ctx.const(eps, name="eps")])])
    if op == "POWER":
        return ctx.node("Pow", [x, ctx.const(p.alpha, name="alpha")])
    if op == "EXP":
        return ctx.node("Exp", [x])
    if op == "LOG":
        return ctx.node("Log", [x])
    if op == "ABS":
        return ctx.node("Abs", [x])
    if op == "THRESHOLD":
        return ctx.node("Max", [x, ctx.const(p.alpha, name="alpha")])
    raise ctx.unsupported(f"uses unary operation {op}")


_UNARY_ND = {
    "ceil": "Ceil", "floor": "Floor", "sign": "Sign", "sin": "Sin", "cos": "Cos", "tan": "Tan",
    "asin": "Asin", "acos": "Acos", "atan": "Atan", "sinh": "Sinh", "cosh": "Cosh", "tanh": "Tanh",
    "asinh": "Asinh", "acosh": "Acosh", "atanh": "Atanh", "erf": "Erf",
}


@nn_layer(*_UNARY_ND)
def unary_nd(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    return ctx.node(_UNARY_ND[layer.WhichOneof("layer")], inputs[:1])


@nn_layer("round")
def round_half_away(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    # Core ML rounds halves away from zero; ONNX Round rounds them to even.
    x = inputs[0]
    mag = ctx.node("Floor", [ctx.node("Add", [ctx.node("Abs", [x]), ctx.const(0.5, name="half")])])
    return ctx.node("Mul", [ctx.node("Sign", [x]), mag])


@nn_layer("exp2")
def exp2(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    return ctx.node("Pow", [ctx.const(2.0, name="two"), inputs[0]])


@nn_layer("clip")
def clip(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    p = layer.clip
    return ctx.node("Clip", [inputs[0], ctx.const(p.minVal, name="min"), ctx.const(p.maxVal, name="max")])


@nn_layer("gelu")
def gelu(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    mode = layer.gelu.GeluMode.Name(layer.gelu.mode)
    x = inputs[0]
    half = ctx.const(0.5, name="half")
    one = ctx.const(1.0, name="one")
    if mode == "EXACT":
        inner = ctx.node("Erf", [ctx.node("Mul", [x, ctx.const(1 / math.sqrt(2), name="rsqrt2")])])
    elif mode == "TANH_APPROXIMATION":
        cube = ctx.node("Mul", [ctx.node("Pow", [x, ctx.const(3.0, name="three")]), ctx.const(0.044715, name="k")])
        inner = ctx.node("Tanh", [ctx.node("Mul", [ctx.node("Add", [x, cube]),
                                                    ctx.const(math.sqrt(2 / math.pi), name="s2pi")])])
    else:  # SIGMOID_APPROXIMATION: x * sigmoid(1.702 x)
        return ctx.node("Mul", [x, ctx.node("Sigmoid", [ctx.node("Mul", [x, ctx.const(1.702, name="k")])])])
    return ctx.node("Mul", [ctx.node("Mul", [x, half]), ctx.node("Add", [inner, one])])


@nn_layer("scale")
def scale(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    p = layer.scale
    shape = [int(d) for d in p.shapeScale] or [1]
    s = ctx.weights(p.scale, shape, "scale.scale")
    y = ctx.node("Mul", [inputs[0], ctx.chw_broadcast(s, shape, "scale")])
    if p.hasBias:
        bshape = [int(d) for d in p.shapeBias] or [1]
        b = ctx.weights(p.bias, bshape, "scale.bias")
        y = ctx.node("Add", [y, ctx.chw_broadcast(b, bshape, "bias")])
    return y


@nn_layer("bias")
def bias(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    p = layer.bias
    shape = [int(d) for d in p.shape] or [1]
    b = ctx.weights(p.bias, shape, "bias.bias")
    return ctx.node("Add", [inputs[0], ctx.chw_broadcast(b, shape, "bias")])
