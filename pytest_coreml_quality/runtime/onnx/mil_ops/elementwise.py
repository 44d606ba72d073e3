"""Elementwise binary and unary MIL ops, and ``cast``."""

from __future__ import annotations

from typing import Any

from onnx import TensorProto

from pytest_coreml_quality.runtime.onnx.mil_ops.registry import MilContext, dtype_name, mil_op

_BINARY = {
    "add": "Add",
    "sub": "Sub",
    "mul": "Mul",
    "real_div": "Div",
    "pow": "Pow",
    "maximum": "Max",
    "minimum": "Min",
    "equal": "Equal",
    "less": "Less",
    "less_equal": "LessOrEqual",
    "greater": "Greater",
    "greater_equal": "GreaterOrEqual",
    "logical_and": "And",
    "logical_or": "Or",
    "logical_xor": "Xor",
}


def _binary(onnx_op: str):  # noqa: ANN202 - a handler factory
    def handler(ctx: MilContext, op: Any) -> str:
        return ctx.builder.node(onnx_op, [ctx.inp(op, "x"), ctx.inp(op, "y")], name=op.name)

    return handler


for _mil, _onnx in _BINARY.items():
    mil_op(_mil)(_binary(_onnx))


@mil_op("not_equal")
def not_equal(ctx: MilContext, op: Any) -> str:
    eq = ctx.builder.node("Equal", [ctx.inp(op, "x"), ctx.inp(op, "y")], name=f"{op.name}_eq")
    return ctx.builder.node("Not", [eq], name=op.name)


@mil_op("floor_div")
def floor_div(ctx: MilContext, op: Any) -> str:
    if _is_int(op.inputs["x"]):
        # Integer floor division: ONNX Div truncates, so go through float.
        xf = ctx.builder.node("Cast", [ctx.inp(op, "x")], name=f"{op.name}_xf", to=TensorProto.FLOAT)
        yf = ctx.builder.node("Cast", [ctx.inp(op, "y")], name=f"{op.name}_yf", to=TensorProto.FLOAT)
        q = ctx.builder.node("Floor", [ctx.builder.node("Div", [xf, yf], name=f"{op.name}_div")], name=f"{op.name}_fl")
        return ctx.builder.node("Cast", [q], name=op.name, to=TensorProto.INT32)
    q = ctx.builder.node("Div", [ctx.inp(op, "x"), ctx.inp(op, "y")], name=f"{op.name}_div")
    return ctx.builder.node("Floor", [q], name=op.name)


@mil_op("mod")
def mod(ctx: MilContext, op: Any) -> str:
    # MIL mod follows Python: the result takes the divisor's sign (ONNX fmod=0 does for ints).
    if _is_int(op.inputs["x"]):
        return ctx.builder.node("Mod", [ctx.inp(op, "x"), ctx.inp(op, "y")], name=op.name, fmod=0)
    x, y = ctx.inp(op, "x"), ctx.inp(op, "y")
    q = ctx.builder.node("Floor", [ctx.builder.node("Div", [x, y], name=f"{op.name}_div")], name=f"{op.name}_fl")
    return ctx.builder.node("Sub", [x, ctx.builder.node("Mul", [q, y], name=f"{op.name}_qy")], name=op.name)


_UNARY = {
    "abs": "Abs",
    "acos": "Acos",
    "asin": "Asin",
    "atan": "Atan",
    "atanh": "Atanh",
    "ceil": "Ceil",
    "cos": "Cos",
    "cosh": "Cosh",
    "erf": "Erf",
    "exp": "Exp",
    "floor": "Floor",
    "round": "Round",  # both round half to even
    "sign": "Sign",
    "sin": "Sin",
    "sinh": "Sinh",
    "sqrt": "Sqrt",
    "tan": "Tan",
    "logical_not": "Not",
    "identity": "Identity",
}


def _unary(onnx_op: str):  # noqa: ANN202 - a handler factory
    def handler(ctx: MilContext, op: Any) -> str:
        return ctx.builder.node(onnx_op, [ctx.inp(op, "x")], name=op.name)

    return handler


for _mil, _onnx in _UNARY.items():
    mil_op(_mil)(_unary(_onnx))


@mil_op("square")
def square(ctx: MilContext, op: Any) -> str:
    x = ctx.inp(op, "x")
    return ctx.builder.node("Mul", [x, x], name=op.name)


@mil_op("exp2")
def exp2(ctx: MilContext, op: Any) -> str:
    two = ctx.floats(2.0, "two")
    return ctx.builder.node("Pow", [two, ctx.inp(op, "x")], name=op.name)


def _plus_epsilon(ctx: MilContext, op: Any, default: float) -> str:
    eps = float(ctx.static(op, "epsilon", default))
    return ctx.builder.node("Add", [ctx.inp(op, "x"), ctx.floats(eps, "epsilon")], name=f"{op.name}_eps")


@mil_op("inverse")
def inverse(ctx: MilContext, op: Any) -> str:
    """``1 / (x + epsilon)``."""
    return ctx.builder.node("Reciprocal", [_plus_epsilon(ctx, op, 1e-4)], name=op.name)


@mil_op("log")
def log(ctx: MilContext, op: Any) -> str:
    """``log(x + epsilon)``."""
    return ctx.builder.node("Log", [_plus_epsilon(ctx, op, 1e-45)], name=op.name)


@mil_op("rsqrt")
def rsqrt(ctx: MilContext, op: Any) -> str:
    """``1 / sqrt(x + epsilon)``."""
    root = ctx.builder.node("Sqrt", [_plus_epsilon(ctx, op, 1e-12)], name=f"{op.name}_sqrt")
    return ctx.builder.node("Reciprocal", [root], name=op.name)


@mil_op("threshold")
def threshold(ctx: MilContext, op: Any) -> str:
    """``max(x, alpha)``."""
    alpha = ctx.floats(float(ctx.static(op, "alpha")), "alpha")
    return ctx.builder.node("Max", [ctx.inp(op, "x"), alpha], name=op.name)


@mil_op("clip")
def clip(ctx: MilContext, op: Any) -> str:
    """``min(max(x, alpha), beta)``."""
    lo = ctx.floats(float(ctx.static(op, "alpha")), "clip_lo")
    hi = ctx.floats(float(ctx.static(op, "beta")), "clip_hi")
    return ctx.builder.node("Clip", [ctx.inp(op, "x"), lo, hi], name=op.name)


_CAST_TO = {
    "fp32": TensorProto.FLOAT,
    "fp64": TensorProto.FLOAT,
    "int32": TensorProto.INT32,
    "int64": TensorProto.INT32,
    "int16": TensorProto.INT32,
    "int8": TensorProto.INT32,
    "uint8": TensorProto.INT32,
    "uint16": TensorProto.INT32,
    "bool": TensorProto.BOOL,
}


@mil_op("cast")
def cast(ctx: MilContext, op: Any) -> str:
    """Casts run in the graph's own types: floats are float32, integers int32.

    A cast to fp16 rounds the values to float16 and keeps them as float32, so that a
    program converted with fp16 precision sees its fp16 rounding points while the
    rest of the graph computes in float32 (the fp16 emulation option rounds every op).
    """
    dtype = str(ctx.static(op, "dtype"))
    x = ctx.inp(op, "x")
    if dtype == "fp16":
        if not _is_float(op.inputs["x"]):
            x = ctx.builder.node("Cast", [x], name=f"{op.name}_f", to=TensorProto.FLOAT)
        return ctx.round_fp16(x, op.name)
    if dtype not in _CAST_TO:
        raise ValueError(f"cast to {dtype!r} is not supported")
    # Float -> int: MIL (numpy astype) truncates toward zero, as ONNX Cast does.
    return ctx.builder.node("Cast", [x], name=op.name, to=_CAST_TO[dtype])


def _is_float(var: Any) -> bool:
    return dtype_name(var) in ("fp16", "fp32", "fp64")


def _is_int(var: Any) -> bool:
    return dtype_name(var).startswith(("int", "uint"))
