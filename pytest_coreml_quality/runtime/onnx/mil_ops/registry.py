"""The MIL op handler registry and the context handlers translate with.

A handler is a function ``handler(ctx, op) -> str | list[str] | None`` registered with
``@mil_op("conv")``: it reads the op's inputs through ``ctx``, adds ONNX nodes with
``ctx.builder`` and returns the ONNX value name of each op output (in order). Adding an
op is adding one function; an op without a handler is reported by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from onnx import TensorProto

from pytest_coreml_quality.runtime.onnx.builder import GraphBuilder
from pytest_coreml_quality.runtime.onnx.handlers import registrar
from pytest_coreml_quality.runtime.onnx.mil_weights import WEIGHT_OPS, decompress_op

Handler = Callable[["MilContext", Any], "str | list[str] | None"]

MIL_OPS: dict[str, Handler] = {}


#: ``@mil_op("conv")``: register a handler for one or more MIL op types.
mil_op = registrar(MIL_OPS, "MIL op")


def is_supported(op_type: str) -> bool:
    """Whether ops of this type can be translated (consts and weight ops are folded)."""
    return op_type == "const" or op_type in WEIGHT_OPS or op_type in MIL_OPS


class MalformedWeights(Exception):
    """A ``constexpr_*`` op's data does not decompress (sizes or indices out of range)."""


class StaticValueRequired(Exception):
    """A handler needs a compile-time value (shape, axis, ...) that the program computes at run time."""


def dtype_name(var: Any) -> str:
    """The MIL type name of ``var`` (``"fp16"``, ``"int32"``, ...).

    The protobuf view (:mod:`..milproto`) stores the name; coremltools' MIL objects (the
    reference reader in tests) store a type class, named by coremltools itself.
    """
    dtype = var.dtype
    if isinstance(dtype, str):
        return dtype
    from coremltools.converters.mil.mil import types

    return str(types.builtin_to_string(dtype))


# Compile-time values larger than this are not kept once an op is translated (weights):
# each is an initializer by then, and keeping them would hold a second copy of every weight.
_KEEP_VALUE_BYTES = 4096


class MilContext:
    """Maps MIL variables to ONNX values while one program is translated."""

    def __init__(self, builder: GraphBuilder) -> None:
        self.builder = builder
        self._names: dict[int, str] = {}
        self._static: dict[int, np.ndarray | None] = {}

    # --- values ---------------------------------------------------------------------
    def bind(self, var: Any, name: str) -> None:
        """Record that the MIL ``var`` is the ONNX value ``name``."""
        self._names[id(var)] = name

    def x(self, var: Any) -> str:
        """The ONNX value of ``var``; constants become initializers on first use.

        Every float constant becomes float32 (the runtime computes in fp32; fp16 weights
        keep their fp16-rounded values, which float32 holds exactly).
        """
        key = id(var)
        if key in self._names:
            return self._names[key]
        value = self.value(var)
        if value is None:
            raise KeyError(f"MIL variable {var.name!r} is used before it is computed")
        name = self.builder.const(onnx_array(value), name=var.name)
        self._names[key] = name
        return name

    def value(self, var: Any) -> np.ndarray | None:
        """The compile-time value of ``var`` (const or decompressed weight), else ``None``."""
        key = id(var)
        if key in self._static:
            return self._static[key]
        result: np.ndarray | None
        if var.val is not None:
            result = np.asarray(var.val)
        elif var.op is not None and var.op.op_type in WEIGHT_OPS:
            try:
                outs = decompress_op(var.op, self.value)
            except (ValueError, IndexError, TypeError) as exc:
                raise MalformedWeights(f"{var.op.op_type} '{var.op.name}' does not decompress: {exc}") from None
            for out_var, out_val in zip(var.op.outputs, outs):
                self._static[id(out_var)] = np.asarray(out_val)
            return self._static.get(key)
        else:
            result = None
        self._static[key] = result
        return result

    def release_values(self) -> None:
        """Forget large compile-time values (weights); they are decoded again if asked for."""
        large = [k for k, v in self._static.items() if v is not None and v.nbytes > _KEEP_VALUE_BYTES]
        for key in large:
            del self._static[key]

    def has(self, op: Any, name: str) -> bool:
        return op.inputs.get(name) is not None

    def inp(self, op: Any, name: str) -> str:
        """The ONNX value of the op's input ``name``."""
        return self.x(op.inputs[name])

    def static(self, op: Any, name: str, default: Any = None) -> Any:
        """The compile-time value of the op's input ``name`` (``default`` when absent)."""
        var = op.inputs.get(name)
        if var is None:
            return default
        value = self.value(var)
        if value is None:
            raise StaticValueRequired(f"input '{name}' of {op.op_type} '{op.name}' is not a compile-time constant")
        return value

    def static_list(self, op: Any, name: str, default: Any = None) -> list[int] | None:
        value = self.static(op, name, default)
        return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]

    # --- shapes ---------------------------------------------------------------------
    @staticmethod
    def shape(var: Any) -> tuple[int, ...]:
        """The static shape MIL type inference gave ``var``; symbolic dims raise."""
        dims = tuple(var.shape)
        if not all(isinstance(d, (int, np.integer)) for d in dims):
            raise StaticValueRequired(f"variable '{var.name}' has a symbolic shape {dims}")
        return tuple(int(d) for d in dims)

    @staticmethod
    def is_static(var: Any) -> bool:
        """Whether every dimension of ``var`` is known at translation time (no flexible sizes)."""
        return all(isinstance(d, (int, np.integer)) for d in var.shape)

    @staticmethod
    def rank(var: Any) -> int:
        return len(var.shape)

    # --- small node helpers ------------------------------------------------------------
    def ints(self, values: Any, name: str = "ints") -> str:
        """An int64 constant (ONNX shape/axes/pads inputs)."""
        return self.builder.const(np.asarray(values, dtype=np.int64).reshape(-1), name=name)

    def floats(self, values: Any, name: str = "floats") -> str:
        return self.builder.const(np.asarray(values, dtype=np.float32), name=name)

    def round_fp16(self, src: str, name: str) -> str:
        """Round float32 values to the nearest float16 and back (what an fp16 cast does)."""
        half = self.builder.node("Cast", [src], name=f"{name}_to_fp16", to=TensorProto.FLOAT16)
        return self.builder.node("Cast", [half], name=name, to=TensorProto.FLOAT)


def onnx_array(value: np.ndarray) -> np.ndarray:
    """Convert a MIL constant to the dtype the ONNX graph uses for it."""
    arr = np.asarray(value)
    if arr.dtype.kind == "f":
        return arr.astype(np.float32)
    if arr.dtype.kind in "iu" and arr.dtype != np.int32:
        return arr.astype(np.int32)
    if arr.dtype.kind == "b":
        return arr.astype(bool)
    return arr
