"""Convolutions and dense layers: conv, conv_transpose, linear, matmul."""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_coreml_quality.runtime.onnx.mil_ops.registry import MilContext, mil_op
from pytest_coreml_quality.runtime.onnx.padding import same_pads


def _spatial_pads(ctx: MilContext, op: Any, n: int) -> tuple[list[int] | None, str | None]:
    """(explicit ONNX pads, auto_pad) for a conv/pool op's ``pad_type``/``pad`` inputs."""
    pad_type = str(ctx.static(op, "pad_type", "valid"))
    if pad_type == "custom":
        pad = ctx.static_list(op, "pad") or [0] * (2 * n)
        # MIL lists [begin_0, end_0, begin_1, end_1, ...]; ONNX wants all begins, then all ends.
        return pad[0::2] + pad[1::2], None
    if pad_type == "same":
        return None, "SAME_UPPER"
    if pad_type == "same_lower":
        return None, "SAME_LOWER"
    return [0] * (2 * n), None


def _conv_inputs(ctx: MilContext, op: Any) -> list[str]:
    """A conv or conv_transpose op's x, weight and (when given) bias, in ONNX's input order."""
    inputs = [ctx.inp(op, "x"), ctx.inp(op, "weight")]
    if ctx.has(op, "bias"):
        inputs.append(ctx.inp(op, "bias"))
    return inputs


@mil_op("conv")
def conv(ctx: MilContext, op: Any) -> str:
    n = ctx.rank(op.inputs["x"]) - 2
    strides = ctx.static_list(op, "strides") or [1] * n
    dilations = ctx.static_list(op, "dilations") or [1] * n
    pads, auto_pad = _spatial_pads(ctx, op, n)
    if auto_pad is not None and (any(d != 1 for d in dilations) or ctx.is_static(op.inputs["x"])):
        # Explicit pads, not auto_pad: onnxruntime refuses SAME_* with dilations. (Without
        # dilation, auto_pad stays right for inputs whose size is only known at run time.)
        sizes = ctx.shape(op.inputs["x"])[2:]
        kernel = ctx.shape(op.inputs["weight"])[2:]
        pads, auto_pad = same_pads(sizes, kernel, strides, dilations, heavy_begin=auto_pad == "SAME_LOWER"), None
    inputs = _conv_inputs(ctx, op)
    return ctx.builder.node(
        "Conv",
        inputs,
        name=op.name,
        strides=strides,
        dilations=dilations,
        group=int(ctx.static(op, "groups", 1)),
        pads=pads,
        auto_pad=auto_pad,
    )


@mil_op("conv_transpose")
def conv_transpose(ctx: MilContext, op: Any) -> str:
    x = op.inputs["x"]
    n = ctx.rank(x) - 2
    strides = ctx.static_list(op, "strides") or [1] * n
    dilations = ctx.static_list(op, "dilations") or [1] * n
    pad_type = str(ctx.static(op, "pad_type", "valid"))
    begins, ends = [0] * n, [0] * n
    if pad_type == "custom":
        pad = ctx.static_list(op, "pad") or [0] * (2 * n)
        begins, ends = pad[0::2], pad[1::2]
    extra: list[int] = []
    if not (ctx.is_static(x) and ctx.is_static(op.outputs[0])) and pad_type in ("custom", "valid") and not ctx.has(op, "output_shape"):
        # Flexible image sizes: with explicit pads and no requested output shape the output is
        # exactly ConvTranspose's own size for any input size, so no shape is needed.
        extra = [0] * n
    else:
        in_spatial = ctx.shape(x)[2:]
        out_spatial = ctx.shape(op.outputs[0])[2:]
        kernel = ctx.shape(op.inputs["weight"])[2:]
    for i in range(n if not extra else 0):
        full = (in_spatial[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1
        if pad_type in ("same", "same_lower"):
            total = max(full - out_spatial[i], 0)
            small, big = total // 2, total - total // 2
            begins[i], ends[i] = (small, big) if pad_type == "same" else (big, small)
        # MIL's output_shape may ask for more than the padded result: ONNX output_padding.
        extra.append(out_spatial[i] - (full - begins[i] - ends[i]))
    if any(e < 0 for e in extra):
        # A negative remainder means trailing padding was not listed; trim it instead.
        ends = [e - min(x_, 0) for e, x_ in zip(ends, extra)]
        extra = [max(x_, 0) for x_ in extra]
    inputs = _conv_inputs(ctx, op)
    return ctx.builder.node(
        "ConvTranspose",
        inputs,
        name=op.name,
        strides=strides,
        dilations=dilations,
        group=int(ctx.static(op, "groups", 1)),
        pads=begins + ends,
        output_padding=extra if any(extra) else None,
    )


@mil_op("linear")
def linear(ctx: MilContext, op: Any) -> str:
    """``x @ weight.T + bias`` with weight ``[out, in]``."""
    weight = ctx.value(op.inputs["weight"])
    if weight is not None:
        wt = ctx.builder.const(np.ascontiguousarray(weight.astype(np.float32).T), name=f"{op.name}_wT")
    else:
        wt = ctx.builder.node("Transpose", [ctx.inp(op, "weight")], name=f"{op.name}_wT", perm=[1, 0])
    y = ctx.builder.node("MatMul", [ctx.inp(op, "x"), wt], name=f"{op.name}_mm")
    if not ctx.has(op, "bias"):
        return y
    return ctx.builder.node("Add", [y, ctx.inp(op, "bias")], name=op.name)


@mil_op("matmul")
def matmul(ctx: MilContext, op: Any) -> str:
    operands = []
    for key, flag in (("x", "transpose_x"), ("y", "transpose_y")):
        name = ctx.inp(op, key)
        rank = ctx.rank(op.inputs[key])
        if bool(ctx.static(op, flag, False)) and rank >= 2:
            perm = list(range(rank - 2)) + [rank - 1, rank - 2]
            name = ctx.builder.node("Transpose", [name], name=f"{op.name}_{key}T", perm=perm)
        operands.append(name)
    return ctx.builder.node("MatMul", operands, name=op.name)
