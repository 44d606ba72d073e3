"""MIL activation ops."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pytest_coreml_quality.runtime.onnx.mil_ops.registry import MilContext, mil_op


def _f(ctx: MilContext, op: Any, name: str, default: float | None = None) -> float:
    return float(ctx.static(op, name, default))


@mil_op("relu")
def relu(ctx: MilContext, op: Any) -> str:
    return ctx.builder.node("Relu", [ctx.inp(op, "x")], name=op.name)


@mil_op("relu6")
def relu6(ctx: MilContext, op: Any) -> str:
    return ctx.builder.node("Clip", [ctx.inp(op, "x"), ctx.floats(0.0, "zero"), ctx.floats(6.0, "six")], name=op.name)


@mil_op("leaky_relu")
def leaky_relu(ctx: MilContext, op: Any) -> str:
    return ctx.builder.node("LeakyRelu", [ctx.inp(op, "x")], name=op.name, alpha=_f(ctx, op, "alpha", 0.01))


@mil_op("sigmoid")
def sigmoid(ctx: MilContext, op: Any) -> str:
    return ctx.builder.node("Sigmoid", [ctx.inp(op, "x")], name=op.name)


@mil_op("sigmoid_hard")
def sigmoid_hard(ctx: MilContext, op: Any) -> str:
    """``min(max(alpha * x + beta, 0), 1)``."""
    return ctx.builder.node(
        "HardSigmoid", [ctx.inp(op, "x")], name=op.name, alpha=_f(ctx, op, "alpha", 0.2), beta=_f(ctx, op, "beta", 0.5)
    )


@mil_op("tanh")
def tanh(ctx: MilContext, op: Any) -> str:
    return ctx.builder.node("Tanh", [ctx.inp(op, "x")], name=op.name)


@mil_op("scaled_tanh")
def scaled_tanh(ctx: MilContext, op: Any) -> str:
    """``alpha * tanh(beta * x)``."""
    b = ctx.builder
    inner = b.node("Mul", [ctx.inp(op, "x"), ctx.floats(_f(ctx, op, "beta", 1.0), "beta")], name=f"{op.name}_bx")
    t = b.node("Tanh", [inner], name=f"{op.name}_tanh")
    return b.node("Mul", [t, ctx.floats(_f(ctx, op, "alpha", 1.0), "alpha")], name=op.name)


@mil_op("gelu")
def gelu(ctx: MilContext, op: Any) -> str:
    """EXACT ``0.5x(1 + erf(x / sqrt 2))``, TANH_ or SIGMOID_APPROXIMATION, as MIL defines them."""
    mode = str(ctx.static(op, "mode", "EXACT"))
    b, x, n = ctx.builder, ctx.inp(op, "x"), op.name

    def mul(u: str, v: str, tag: str) -> str:
        return b.node("Mul", [u, v], name=f"{n}_{tag}")

    if mode == "SIGMOID_APPROXIMATION":
        s = b.node("Sigmoid", [mul(x, ctx.floats(1.702, "gelu_k"), "kx")], name=f"{n}_sig")
        return b.node("Mul", [x, s], name=n)
    if mode == "TANH_APPROXIMATION":
        cube = mul(mul(x, x, "x2"), x, "x3")
        inner = b.node("Add", [x, mul(cube, ctx.floats(0.044715, "gelu_c"), "cx3")], name=f"{n}_in")
        squashed = b.node("Tanh", [mul(inner, ctx.floats(math.sqrt(2 / math.pi), "gelu_s"), "sin")], name=f"{n}_t")
    elif mode == "EXACT":
        squashed = b.node("Erf", [mul(x, ctx.floats(1 / math.sqrt(2), "rsqrt2"), "xs")], name=f"{n}_erf")
    else:
        raise ValueError(f"gelu mode {mode!r} is not defined")
    one_plus = b.node("Add", [squashed, ctx.floats(1.0, "one")], name=f"{n}_1p")
    return b.node("Mul", [mul(x, ctx.floats(0.5, "half"), "hx"), one_plus], name=n)


@mil_op("silu")
def silu(ctx: MilContext, op: Any) -> str:
    x = ctx.inp(op, "x")
    return ctx.builder.node("Mul", [x, ctx.builder.node("Sigmoid", [x], name=f"{op.name}_sig")], name=op.name)


@mil_op("softplus")
def softplus(ctx: MilContext, op: Any) -> str:
    return ctx.builder.node("Softplus", [ctx.inp(op, "x")], name=op.name)


@mil_op("softplus_parametric")
def softplus_parametric(ctx: MilContext, op: Any) -> str:
    """``alpha_c * log(1 + exp(beta_c * x))`` per channel (axis -3)."""
    b = ctx.builder
    # x is [B, C, H, W] or [C, H, W]: the channel axis is -3.
    alpha = _per_channel(ctx, op, "alpha", 2)
    beta = _per_channel(ctx, op, "beta", 2)
    sp = b.node("Softplus", [b.node("Mul", [ctx.inp(op, "x"), beta], name=f"{op.name}_bx")], name=f"{op.name}_sp")
    return b.node("Mul", [sp, alpha], name=op.name)


@mil_op("softsign")
def softsign(ctx: MilContext, op: Any) -> str:
    return ctx.builder.node("Softsign", [ctx.inp(op, "x")], name=op.name)


@mil_op("elu")
def elu(ctx: MilContext, op: Any) -> str:
    return ctx.builder.node("Elu", [ctx.inp(op, "x")], name=op.name, alpha=_f(ctx, op, "alpha", 1.0))


@mil_op("prelu")
def prelu(ctx: MilContext, op: Any) -> str:
    """Per-channel slope on axis 1 (MIL prelu's ``x`` is ``[B, C, *D]``, rank >= 3)."""
    rank = ctx.rank(op.inputs["x"])
    return ctx.builder.node("PRelu", [ctx.inp(op, "x"), _per_channel(ctx, op, "alpha", rank - 2)], name=op.name)


@mil_op("thresholded_relu")
def thresholded_relu(ctx: MilContext, op: Any) -> str:
    return ctx.builder.node("ThresholdedRelu", [ctx.inp(op, "x")], name=op.name, alpha=_f(ctx, op, "alpha", 1.0))


@mil_op("clamped_relu")
def clamped_relu(ctx: MilContext, op: Any) -> str:
    """``min(beta, x)`` for x >= 0 and ``min(beta, alpha * x)`` below."""
    b = ctx.builder
    leaky = b.node("LeakyRelu", [ctx.inp(op, "x")], name=f"{op.name}_leaky", alpha=_f(ctx, op, "alpha"))
    return b.node("Min", [leaky, ctx.floats(_f(ctx, op, "beta"), "beta")], name=op.name)


@mil_op("linear_activation")
def linear_activation(ctx: MilContext, op: Any) -> str:
    """``alpha * x + beta``."""
    b = ctx.builder
    ax = b.node("Mul", [ctx.inp(op, "x"), ctx.floats(_f(ctx, op, "alpha", 1.0), "alpha")], name=f"{op.name}_ax")
    return b.node("Add", [ax, ctx.floats(_f(ctx, op, "beta", 0.0), "beta")], name=op.name)


@mil_op("softmax")
def softmax(ctx: MilContext, op: Any) -> str:
    return ctx.builder.node("Softmax", [ctx.inp(op, "x")], name=op.name, axis=int(ctx.static(op, "axis", -1)))


def _per_channel(ctx: MilContext, op: Any, name: str, trailing: int) -> str:
    """A per-channel vector shaped ``[C, 1, ..., 1]`` with ``trailing`` ones, to broadcast on the channel axis."""
    v = np.asarray(ctx.static(op, name), dtype=np.float32).reshape(-1)
    return ctx.builder.const(v.reshape([-1] + [1] * trailing), name=f"{op.name}_{name}")
