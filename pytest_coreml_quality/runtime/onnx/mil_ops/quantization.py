"""Activation quantization (iOS17 ``quantize`` / ``dequantize``, as in W8A8 programs).

MIL specifies ``quantize`` as ``clip(round(input / scale) + zero_point)`` with numpy's
rounding (half to even) and ``dequantize`` as ``scale * (input - zero_point)``, with a
scalar or per-axis (vector along ``axis``) scale and zero point.

ONNX QuantizeLinear rounds the same way, but the ops are built from float arithmetic
(Div, Round, Add, Clip / Sub, Mul) instead: onnxruntime's graph optimizer fuses
DequantizeLinear -> Conv -> QuantizeLinear into integer kernels (QLinearConv) that never
compute the float conv output MIL quantizes, and the fp16 emulation would round an int8
QuantizeLinear output as if it were float. Quantized values travel as int32, the
graph's integer type (see the ``cast`` handler), holding the exact int8 / uint8 values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto

from pytest_coreml_quality.runtime.onnx.mil_ops.registry import MilContext, dtype_name, mil_op

#: The integer range each MIL quantized type clips to.
_RANGE = {"int8": (-128.0, 127.0), "uint8": (0.0, 255.0)}


def _broadcastable(ctx: MilContext, op: Any, name: str, rank: int) -> np.ndarray | None:
    """The op's ``scale`` / ``zero_point`` as float32, shaped to broadcast against the input.

    A vector runs along ``axis`` (size 1 on every other axis); a scalar stays a scalar.
    """
    value = ctx.static(op, name)
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim == 0:
        return arr
    axis = int(ctx.static(op, "axis"))
    axis = axis + rank if axis < 0 else axis
    shape = [1] * rank
    shape[axis] = arr.size
    return arr.reshape(shape)


def _range(dtype: str, op: Any) -> tuple[float, float]:
    if dtype not in _RANGE:
        raise ValueError(f"{op.op_type} '{op.name}': quantized type {dtype!r} is not int8 or uint8")
    return _RANGE[dtype]


@mil_op("quantize")
def quantize(ctx: MilContext, op: Any) -> str:
    x_var = op.inputs["input"]
    rank = ctx.rank(x_var)
    low, high = _range(str(ctx.static(op, "output_dtype")), op)
    scale = _broadcastable(ctx, op, "scale", rank)
    zero_point = _broadcastable(ctx, op, "zero_point", rank)
    b = ctx.builder
    q = b.node("Div", [ctx.inp(op, "input"), ctx.floats(scale, name=f"{op.name}_scale")], name=f"{op.name}_div")
    if dtype_name(x_var) == "fp16":
        # An fp16 program divides in fp16: the rounded quotient decides which integer a
        # value near a tie gets (fp32 division then fp16 rounding is exactly fp16 division).
        q = ctx.round_fp16(q, f"{op.name}_div16")
    q = b.node("Round", [q], name=f"{op.name}_round")  # half to even, as numpy's around
    if zero_point is not None and np.any(zero_point != 0):
        q = b.node("Add", [q, ctx.floats(zero_point, name=f"{op.name}_zp")], name=f"{op.name}_add")
    q = b.node("Clip", [q, ctx.floats(low, name="q_low"), ctx.floats(high, name="q_high")], name=f"{op.name}_clip")
    return b.node("Cast", [q], name=op.name, to=TensorProto.INT32)


@mil_op("dequantize")
def dequantize(ctx: MilContext, op: Any) -> str:
    x_var = op.inputs["input"]
    rank = ctx.rank(x_var)
    _range(dtype_name(x_var), op)
    scale = _broadcastable(ctx, op, "scale", rank)
    zero_point = _broadcastable(ctx, op, "zero_point", rank)
    b = ctx.builder
    # The input is int32 in the graph (a quantize's output, or a constant made int32).
    x = b.node("Cast", [ctx.inp(op, "input")], name=f"{op.name}_f", to=TensorProto.FLOAT)
    if zero_point is not None and np.any(zero_point != 0):
        x = b.node("Sub", [x, ctx.floats(zero_point, name=f"{op.name}_zp")], name=f"{op.name}_sub")
    return b.node("Mul", [x, ctx.floats(scale, name=f"{op.name}_scale")], name=op.name)
