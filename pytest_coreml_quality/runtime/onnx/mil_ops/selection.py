"""Selection and ordering ops: select (``torch.where``), topk, argsort, non_zero, band_part."""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto

from pytest_coreml_quality.runtime.onnx.mil_ops.registry import MilContext, dtype_name, mil_op

# The graph keeps every MIL float as float32 and every integer as int32 (see ``onnx_array``).
_FLOATS = ("fp16", "fp32", "fp64", "bf16")


def onnx_type(var: Any) -> int:
    """The ONNX element type the graph uses for a MIL variable."""
    name = dtype_name(var)
    if name in _FLOATS:
        return TensorProto.FLOAT
    if name == "bool":
        return TensorProto.BOOL
    return TensorProto.INT32


def zero_of(ctx: MilContext, elem_type: int, name: str = "zero") -> str:
    """A scalar 0 (``False``) of the given ONNX element type."""
    dtype = {TensorProto.FLOAT: np.float32, TensorProto.BOOL: np.bool_}.get(elem_type, np.int32)
    return ctx.builder.const(np.zeros((), dtype=dtype), name=name)


def axis_size(ctx: MilContext, var: Any, axis: int, name: str) -> str:
    """A 1-element int64 tensor holding ``var``'s size along ``axis`` (from the graph if not static)."""
    size = var.shape[axis]
    if isinstance(size, (int, np.integer)):
        return ctx.ints([int(size)], "size")
    shape = ctx.builder.node("Shape", [ctx.x(var)], name=f"{name}_shape")
    return ctx.builder.node("Gather", [shape, ctx.ints([axis], "axis")], name=f"{name}_size", axis=0)


def where(ctx: MilContext, cond: str, x: str, y: str, elem_type: int, name: str) -> str:
    """ONNX Where for values of ``elem_type``. onnxruntime's CPU Where has no bool kernel:
    bools are selected as int32 copies and cast back."""
    b = ctx.builder
    if elem_type != TensorProto.BOOL:
        return b.node("Where", [cond, x, y], name=name)
    x = b.node("Cast", [x], name=f"{name}_x", to=TensorProto.INT32)
    y = b.node("Cast", [y], name=f"{name}_y", to=TensorProto.INT32)
    picked = b.node("Where", [cond, x, y], name=f"{name}_where")
    return b.node("Cast", [picked], name=name, to=TensorProto.BOOL)


@mil_op("select")
def select(ctx: MilContext, op: Any) -> str:
    """``cond ? a : b`` with broadcasting (MIL requires a bool ``cond`` and one type for ``a``, ``b``)."""
    cond, a, b = ctx.inp(op, "cond"), ctx.inp(op, "a"), ctx.inp(op, "b")
    return where(ctx, cond, a, b, onnx_type(op.outputs[0]), op.name)


def _sorted_along(ctx: MilContext, op: Any, k: str, axis: int, ascending: bool) -> list[str]:
    """ONNX TopK (values, int32 indices). TopK lists equal values lowest index first, which is
    the order of a stable sort (what MIL's reference, numpy's argsort, gives on ties)."""
    values, indices = ctx.builder.node(
        "TopK", [ctx.inp(op, "x"), k], outputs=2, name=f"{op.name}_topk", axis=axis,
        largest=0 if ascending else 1, sorted=1,
    )  # fmt: skip
    return [values, ctx.builder.node("Cast", [indices], name=f"{op.name}_indices", to=TensorProto.INT32)]


@mil_op("topk")
def topk(ctx: MilContext, op: Any) -> str | list[str]:
    """The ``k`` largest (or smallest with ``ascending``) values along ``axis`` and their indices.

    ``sort=False`` leaves the order unspecified in MIL; the sorted order is one valid answer
    and keeps results reproducible. ``k=-1`` (iOS17) takes the whole axis.
    """
    x_var = op.inputs["x"]
    axis = int(ctx.static(op, "axis", -1)) % ctx.rank(x_var)
    k = int(ctx.static(op, "k", 1))
    k_value = axis_size(ctx, x_var, axis, op.name) if k == -1 else ctx.ints([k], "k")
    values, indices = _sorted_along(ctx, op, k_value, axis, bool(ctx.static(op, "ascending", False)))
    if not bool(ctx.static(op, "return_indices", True)):
        return values
    return [values, indices]


@mil_op("argsort")
def argsort(ctx: MilContext, op: Any) -> str:
    """Indices that sort ``x`` along ``axis`` (descending unless ``ascending``)."""
    x_var = op.inputs["x"]
    axis = int(ctx.static(op, "axis", -1)) % ctx.rank(x_var)
    k = axis_size(ctx, x_var, axis, op.name)
    return _sorted_along(ctx, op, k, axis, bool(ctx.static(op, "ascending", False)))[1]


@mil_op("non_zero")
def non_zero(ctx: MilContext, op: Any) -> str:
    """``[N, rank]`` int32 coordinates of the non-zero elements (ONNX gives ``[rank, N]``)."""
    coords = ctx.builder.node("NonZero", [ctx.inp(op, "x")], name=f"{op.name}_nz")
    rows = ctx.builder.node("Transpose", [coords], name=f"{op.name}_t", perm=[1, 0])
    return ctx.builder.node("Cast", [rows], name=op.name, to=TensorProto.INT32)


@mil_op("band_part")
def band_part(ctx: MilContext, op: Any) -> str:
    """Zero everything outside a band of the last two axes: keep ``[m, n]`` where
    ``m - n <= lower`` and ``n - m <= upper`` (a negative bound keeps that whole triangle)."""
    x_var = op.inputs["x"]
    lower = int(ctx.static(op, "lower", -1))
    upper = int(ctx.static(op, "upper", -1))
    x = ctx.x(x_var)
    if lower < 0 and upper < 0:
        return ctx.builder.node("Identity", [x], name=op.name)
    if all(isinstance(d, (int, np.integer)) for d in x_var.shape[-2:]):
        # A constant mask: no integer arithmetic in the graph (fp16 emulation rounds every
        # non-layout node's output, which would turn index arithmetic into floats).
        rows, cols = (int(d) for d in x_var.shape[-2:])
        diff = np.arange(cols)[None, :] - np.arange(rows)[:, None]  # n - m
        keep = np.ones((rows, cols), dtype=bool)
        if lower >= 0:
            keep &= diff >= -lower
        if upper >= 0:
            keep &= diff <= upper
        mask = ctx.builder.const(keep, name=f"{op.name}_band")
        return where(ctx, mask, x, zero_of(ctx, onnx_type(x_var)), onnx_type(x_var), op.name)
    # Sizes known only at run time: Trilu keeps n - m >= k (upper=1) or n - m <= k (upper=0).
    y = x
    if lower >= 0:
        k = ctx.builder.const(np.int64(-lower), name="k")
        y = ctx.builder.node("Trilu", [y, k], name=op.name if upper < 0 else f"{op.name}_lo", upper=1)
    if upper >= 0:
        y = ctx.builder.node("Trilu", [y, ctx.builder.const(np.int64(upper), name="k")], name=op.name, upper=0)
    return y
