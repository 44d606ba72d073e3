"""Normalisation ops: batch_norm, instance_norm, layer_norm, l2_norm."""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_coreml_quality.runtime.onnx.mil_ops.registry import MilContext, mil_op


def _param_or(ctx: MilContext, op: Any, name: str, fill: float, channels: int) -> str:
    if ctx.has(op, name):
        return ctx.inp(op, name)
    return ctx.builder.const(np.full(channels, fill, dtype=np.float32), name=f"{op.name}_{name}")


@mil_op("batch_norm")
def batch_norm(ctx: MilContext, op: Any) -> str:
    """Inference-mode batch norm on axis 1: ``gamma * (x - mean) / sqrt(var + eps) + beta``."""
    channels = ctx.shape(op.inputs["mean"])[0]
    return ctx.builder.node(
        "BatchNormalization",
        [
            ctx.inp(op, "x"),
            _param_or(ctx, op, "gamma", 1.0, channels),
            _param_or(ctx, op, "beta", 0.0, channels),
            ctx.inp(op, "mean"),
            ctx.inp(op, "variance"),
        ],
        name=op.name,
        epsilon=float(ctx.static(op, "epsilon", 1e-5)),
    )


@mil_op("instance_norm")
def instance_norm(ctx: MilContext, op: Any) -> str:
    """Per-channel, per-image normalisation over H and W (any static or flexible image size)."""
    # Only the channel axis needs to be known: flexible (enumerated or ranged) image sizes
    # leave height and width symbolic, as style-transfer models often ship.
    dims = tuple(op.inputs["x"].shape)
    if len(dims) > 1 and isinstance(dims[1], (int, np.integer)):
        channels = int(dims[1])
    else:  # from gamma's length; without gamma the symbolic-shape error names the op
        channels = ctx.shape(op.inputs["gamma"] if ctx.has(op, "gamma") else op.inputs["x"])[0]
    return ctx.builder.node(
        "InstanceNormalization",
        [ctx.inp(op, "x"), _param_or(ctx, op, "gamma", 1.0, channels), _param_or(ctx, op, "beta", 0.0, channels)],
        name=op.name,
        epsilon=float(ctx.static(op, "epsilon", 1e-5)),
    )


@mil_op("layer_norm")
def layer_norm(ctx: MilContext, op: Any) -> str:
    """Normalise over ``axes`` (any set): ``gamma * (x - mean) / sqrt(var + eps) + beta``."""
    b = ctx.builder
    x_var = op.inputs["x"]
    rank = ctx.rank(x_var)
    given = ctx.static_list(op, "axes")
    given = list(range(rank)) if given is None else [a % rank for a in given]
    axes = sorted(given)
    eps = float(ctx.static(op, "epsilon", 1e-5))
    x = ctx.inp(op, "x")
    axes_c = ctx.ints(axes, "ln_axes")
    mean = b.node("ReduceMean", [x, axes_c], name=f"{op.name}_mean", keepdims=1)
    centred = b.node("Sub", [x, mean], name=f"{op.name}_centred")
    squares = b.node("Mul", [centred, centred], name=f"{op.name}_sq")
    var = b.node("ReduceMean", [squares, axes_c], name=f"{op.name}_var", keepdims=1)
    var_eps = b.node("Add", [var, ctx.floats(eps, "eps")], name=f"{op.name}_veps")
    denom = b.node("Sqrt", [var_eps], name=f"{op.name}_std")
    y = b.node("Div", [centred, denom], name=f"{op.name}_norm")
    for key, combine in (("gamma", "Mul"), ("beta", "Add")):
        value = ctx.value(op.inputs[key]) if ctx.has(op, key) else None
        if value is None:
            continue
        # gamma/beta are laid out in the order ``axes`` lists; broadcast them on those axes.
        value = np.transpose(np.asarray(value, dtype=np.float32), np.argsort(given)) if len(given) > 1 else value
        shape = [ctx.shape(x_var)[a] if a in axes else 1 for a in range(rank)]
        param = b.const(np.asarray(value, dtype=np.float32).reshape(shape), name=f"{op.name}_{key}")
        y = b.node(combine, [y, param], name=f"{op.name}_{key}" if key == "gamma" else op.name)
    return y if ctx.has(op, "beta") else b.node("Identity", [y], name=op.name)


@mil_op("l2_norm")
def l2_norm(ctx: MilContext, op: Any) -> str:
    """``x / sqrt(sum(x**2) + epsilon)`` over the last three axes, batch-wise over the rest."""
    b = ctx.builder
    rank = ctx.rank(op.inputs["x"])
    axes = ctx.ints(list(range(max(rank - 3, 0), rank)), "l2_axes")
    x = ctx.inp(op, "x")
    ss = b.node("ReduceSumSquare", [x, axes], name=f"{op.name}_ss", keepdims=1)
    eps = ctx.floats(float(ctx.static(op, "epsilon", 1e-6)), "eps")
    norm = b.node("Sqrt", [b.node("Add", [ss, eps], name=f"{op.name}_sseps")], name=f"{op.name}_norm")
    return b.node("Div", [x, norm], name=op.name)
