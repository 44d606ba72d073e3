"""Pooling ops: max_pool, avg_pool, l2_pool."""

from __future__ import annotations

from typing import Any

from pytest_coreml_quality.runtime.onnx.mil_ops.linear import _spatial_pads
from pytest_coreml_quality.runtime.onnx.mil_ops.registry import MilContext, mil_op


def _pool(ctx: MilContext, op: Any, onnx_op: str, **extra: Any) -> str:
    n = ctx.rank(op.inputs["x"]) - 2
    pads, auto_pad = _spatial_pads(ctx, op, n)
    return ctx.builder.node(
        onnx_op,
        [ctx.inp(op, "x")],
        name=op.name,
        kernel_shape=ctx.static_list(op, "kernel_sizes"),
        strides=ctx.static_list(op, "strides") or [1] * n,
        pads=pads,
        auto_pad=auto_pad,
        ceil_mode=int(bool(ctx.static(op, "ceil_mode", False))),
        **extra,
    )


@mil_op("max_pool")
def max_pool(ctx: MilContext, op: Any) -> str:
    return _pool(ctx, op, "MaxPool")


@mil_op("avg_pool")
def avg_pool(ctx: MilContext, op: Any) -> str:
    exclude = bool(ctx.static(op, "exclude_padding_from_average", False))
    return _pool(ctx, op, "AveragePool", count_include_pad=0 if exclude else 1)


@mil_op("l2_pool")
def l2_pool(ctx: MilContext, op: Any) -> str:
    return _pool(ctx, op, "LpPool", p=2)
