"""The ``activation`` layer: every ActivationParams nonlinearity."""

from __future__ import annotations

from typing import Any

from pytest_coreml_quality.runtime.onnx.nn_layers import nn_layer
from pytest_coreml_quality.runtime.onnx.nn_layers.context import LayerContext


def _channel_param(ctx: LayerContext, wp: Any, x: str, field: str) -> str:
    """A PReLU/parametric-softplus parameter: one value, or one per channel (axis -3)."""
    n = len(wp.floatValue) or len(wp.float16Value) // 2
    if wp.HasField("quantization"):
        shape = ctx.shape(x)
        n = shape[-3] if len(shape) >= 3 else 1
    values = ctx.weights(wp, (max(n, 1),), field)
    return ctx.channel_broadcast(values, ctx.rank(x), field.rsplit(".", 1)[-1])


@nn_layer("activation")
def activation(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    a = layer.activation
    kind = a.WhichOneof("NonlinearityType")
    x = inputs[0]
    if kind == "linear":
        y = ctx.node("Mul", [x, ctx.const(a.linear.alpha, name="alpha")])
        return ctx.node("Add", [y, ctx.const(a.linear.beta, name="beta")])
    if kind == "ReLU":
        return ctx.node("Relu", [x])
    if kind == "leakyReLU":
        return ctx.node("LeakyRelu", [x], alpha=float(a.leakyReLU.alpha))
    if kind == "thresholdedReLU":
        # Core ML keeps x when x >= alpha; ONNX ThresholdedRelu only when x > alpha.
        alpha = ctx.const(a.thresholdedReLU.alpha, name="alpha")
        keep = ctx.node("GreaterOrEqual", [x, alpha])
        return ctx.node("Where", [keep, x, ctx.const(0.0, name="zero")])
    if kind == "PReLU":
        return ctx.node("PRelu", [x, _channel_param(ctx, a.PReLU.alpha, x, "PReLU.alpha")])
    if kind == "tanh":
        return ctx.node("Tanh", [x])
    if kind == "scaledTanh":
        y = ctx.node("Tanh", [ctx.node("Mul", [x, ctx.const(a.scaledTanh.beta, name="beta")])])
        return ctx.node("Mul", [y, ctx.const(a.scaledTanh.alpha, name="alpha")])
    if kind == "sigmoid":
        return ctx.node("Sigmoid", [x])
    if kind == "sigmoidHard":
        return ctx.node("HardSigmoid", [x], alpha=float(a.sigmoidHard.alpha), beta=float(a.sigmoidHard.beta))
    if kind == "ELU":
        return ctx.node("Elu", [x], alpha=float(a.ELU.alpha))
    if kind == "softsign":
        return ctx.node("Softsign", [x])
    if kind == "softplus":
        return ctx.node("Softplus", [x])
    if kind == "parametricSoftplus":
        alpha = _channel_param(ctx, a.parametricSoftplus.alpha, x, "parametricSoftplus.alpha")
        beta = _channel_param(ctx, a.parametricSoftplus.beta, x, "parametricSoftplus.beta")
        return ctx.node("Mul", [ctx.node("Softplus", [ctx.node("Mul", [x, beta])]), alpha])
    raise ctx.unsupported(f"uses activation type '{kind}'", expected="one of the ActivationParams types")




@nn_layer("clampedReLU")
def clamped_relu(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    """min(beta, x) for x >= 0, min(beta, alpha * x) below."""
    p = layer.clampedReLU
    x = inputs[0]
    zero = ctx.const(0.0, name="zero")
    y = ctx.node("Where", [ctx.node("GreaterOrEqual", [x, zero]), x,
                           ctx.node("Mul", [x, ctx.const(p.alpha, name="alpha")])])
    return ctx.node("Min", [y, ctx.const(p.beta, name="beta")])
