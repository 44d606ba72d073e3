"""A thin read-only view of an ML Program protobuf with the surface the MIL op handlers use.

coremltools' own reader (``milproto.load``) rebuilds every op as a Python MIL object and
reads every weight into memory, which costs seconds and several copies of the weights on
a large model. This view reads the ``Model.mlmodel`` spec directly: a function has
``inputs`` (name -> :class:`Var`), ``operations`` and ``outputs``; an :class:`Op` has
``name``, ``op_type``, ``inputs`` (argument name -> :class:`Var`, or a tuple of them for
list arguments such as ``concat``'s ``values``), ``outputs`` and ``blocks``; a
:class:`Var` has ``name``, ``shape`` (ints, or strings for sizes known only at run time),
``dtype`` (the MIL type name, e.g. ``"fp16"``), the ``op`` producing it and ``val``.

``val`` is decoded on each access, exactly as coremltools' loader decodes it (same numpy
dtypes and shapes, ``int64`` constants clipped to ``int32`` as its ``const`` op does);
weights stored in ``weight.bin`` come from :mod:`.mil_blob`'s memory map, so no weight is
held by the view itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pytest_coreml_quality.runtime.onnx.mil_blob import SUB_BYTE, BlobFile, _unpack

# MIL proto DataType codes (coremltools.proto.MIL_pb2.DataType) -> MIL type names.
DTYPES: dict[int, str] = {
    1: "bool", 2: "str", 10: "fp16", 11: "fp32", 12: "fp64", 13: "bf16",
    21: "int8", 22: "int16", 23: "int32", 24: "int64", 25: "int4",
    31: "uint8", 32: "uint16", 33: "uint32", 34: "uint64",
    35: "uint4", 36: "uint2", 37: "uint1", 38: "uint6", 39: "uint3",
}  # fmt: skip
_NUMPY = {
    "bool": np.bool_, "fp16": np.float16, "fp32": np.float32, "fp64": np.float64,
    "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64, "int4": np.int8,
    "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64,
    "uint1": np.uint8, "uint2": np.uint8, "uint3": np.uint8, "uint4": np.uint8, "uint6": np.uint8,
}  # fmt: skip
# Types coremltools stores as raw little-endian bytes in an immediate value.
_BYTES_TYPES = {"fp16", "int8", "uint8", "uint32", *SUB_BYTE}
# Arguments that are lists of variables even when they bind one (MIL ``TupleInputType``).
_TUPLE_ARGS = frozenset({"values", "loop_vars", "elem_shape", "begins", "ends", "end_masks", "ref_tensors"})
_INT32 = np.iinfo(np.int32)

BlobSource = Callable[[str], BlobFile]


class Var:
    """One MIL variable: a function input, an op output or an inline constant."""

    __slots__ = ("name", "shape", "dtype", "op", "_value", "_blobs")

    def __init__(self, name: str, type_spec: Any, op: Op | None = None, value: Any = None,
                 blobs: BlobSource | None = None) -> None:
        self.name = name
        self.dtype, self.shape = _type_of(type_spec, name)
        self.op = op
        self._value = value  # the proto Value of a constant, decoded on access
        self._blobs = blobs

    @property
    def val(self) -> Any:
        """The constant's value (decoded afresh each time), else ``None``."""
        if self._value is None:
            return None
        return decode_value(self._value, self._blobs)

    def __repr__(self) -> str:
        return f"Var({self.name!r}, {self.dtype}, {self.shape})"


class Op:
    """One MIL operation of the program (inputs bound to :class:`Var` objects)."""

    __slots__ = ("name", "op_type", "inputs", "outputs", "blocks")

    def __init__(self, name: str, op_type: str) -> None:
        self.name = name
        self.op_type = op_type
        self.inputs: dict[str, Any] = {}
        self.outputs: list[Var] = []
        self.blocks: list[Block] = []

    def __repr__(self) -> str:
        return f"Op({self.op_type} {self.name!r})"


class Block:
    """A list of operations and the variables it returns (a function body or a nested block)."""

    def __init__(self) -> None:
        self.operations: list[Op] = []
        self.outputs: list[Var] = []


class Function(Block):
    """The program's function: ``inputs`` by name, then the body's operations and outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: dict[str, Var] = {}


def read_function(fn_spec: Any, blobs: BlobSource) -> Function:
    """The view of one ``MIL_pb2.Function`` (its block for the function's opset).

    Raises ``KeyError``/``ValueError`` for a program that refers to unknown variables or
    types; the translator reports those as a malformed model.
    """
    func = Function()
    names: dict[str, Var] = {}
    for nvt in fn_spec.inputs:
        var = Var(nvt.name, nvt.type)
        func.inputs[nvt.name] = var
        names[nvt.name] = var
    if fn_spec.opset not in fn_spec.block_specializations:
        raise ValueError(f"no block for the function's opset {fn_spec.opset!r}")
    _read_block(fn_spec.block_specializations[fn_spec.opset], func, names, blobs)
    return func


def _read_block(spec: Any, block: Block, names: dict[str, Var], blobs: BlobSource) -> None:
    for op_spec in spec.operations:
        block.operations.append(_read_op(op_spec, names, blobs))
    block.outputs = [_lookup(names, name) for name in spec.outputs]


def _read_op(spec: Any, names: dict[str, Var], blobs: BlobSource) -> Op:
    attrs = spec.attributes
    name = _op_name(spec)
    op = Op(name, spec.type)
    constant = spec.type == "const" or spec.type.startswith("constexpr_")
    if constant:
        # Const and weight ops carry their data as attributes; coremltools' loader turns
        # each into a const input named ``<op>_<attribute>``.
        for key, value in attrs.items():
            if key not in ("name", "val"):
                op.inputs[key] = Var(f"{name}_{key}", value.type, None, value, blobs)
    for key, argument in spec.inputs.items():
        bound = []
        for i, binding in enumerate(argument.arguments):
            if binding.WhichOneof("binding") == "name":
                bound.append(_lookup(names, binding.name))
            else:  # an inline value (a classifier's class list): a const of its own
                bound.append(Var(f"{name}_{key}_{i}", binding.value.type, None, binding.value, blobs))
        op.inputs[key] = tuple(bound) if len(bound) != 1 or key in _TUPLE_ARGS else bound[0]
    for out in spec.outputs:
        value = attrs["val"] if spec.type == "const" and "val" in attrs else None
        var = Var(out.name, out.type, op, value, blobs)
        op.outputs.append(var)
        names[out.name] = var
    for block_spec in spec.blocks:
        nested = Block()
        for nvt in block_spec.inputs:
            names[nvt.name] = Var(nvt.name, nvt.type)
        _read_block(block_spec, nested, names, blobs)
        op.blocks.append(nested)
    return op


def _op_name(spec: Any) -> str:
    attr = spec.attributes.get("name")
    if attr is not None and attr.immediateValue.tensor.strings.values:
        return str(attr.immediateValue.tensor.strings.values[0])
    return spec.outputs[0].name if spec.outputs else spec.type


def _lookup(names: dict[str, Var], name: str) -> Var:
    if name not in names:
        raise KeyError(f"variable {name!r} is used before it is defined")
    return names[name]


def _type_of(type_spec: Any, name: str) -> tuple[str, tuple[Any, ...]]:
    """(MIL dtype name, shape) of a ``ValueType``; unknown sizes become strings."""
    which = type_spec.WhichOneof("type")
    if which != "tensorType":
        return (which or "none"), ()
    tensor = type_spec.tensorType
    dtype = DTYPES.get(tensor.dataType, f"type{tensor.dataType}")
    shape = tuple(
        int(d.constant.size) if d.WhichOneof("dimension") == "constant" else f"{name}_d{i}"
        for i, d in enumerate(tensor.dimensions)
    )
    return dtype, shape


def decode_value(value: Any, blobs: BlobSource | None) -> Any:
    """A proto ``Value`` as coremltools' loader and ``const`` op give it (numpy array or scalar, str)."""
    which = value.type.WhichOneof("type")
    if which == "listType" or (which is None and value.immediateValue.HasField("list")):
        return [decode_value(item, blobs) for item in value.immediateValue.list.values]
    if which != "tensorType":
        return None
    dtype, shape = _type_of(value.type, "value")
    if value.WhichOneof("value") == "blobFileValue":
        if blobs is None:
            raise ValueError("a weight in weight.bin cannot be read without the package's weights folder")
        ref = value.blobFileValue
        array = blobs(ref.fileName).read(int(ref.offset), dtype, shape)
    else:
        array = _immediate(value.immediateValue.tensor, dtype, shape)
        if isinstance(array, str):
            return array
    if array.dtype in (np.int64, np.uint64):  # the const op keeps integers in int32 range
        array = np.clip(array, _INT32.min, _INT32.max).astype(np.int32)
    elif array.dtype == np.float64:
        array = array.astype(np.float32)
    if not shape:
        return array.reshape(())[()]  # a numpy scalar, as coremltools gives
    return array


def _immediate(tensor: Any, dtype: str, shape: tuple[Any, ...]) -> Any:
    kind = tensor.WhichOneof("value")
    values = getattr(tensor, kind).values if kind else []
    if dtype in _BYTES_TYPES:
        raw = bytes(values)
        if dtype in SUB_BYTE:
            count = int(np.prod(shape, dtype=np.int64))
            return _unpack(np.frombuffer(raw, np.uint8), SUB_BYTE[dtype], count, dtype == "int4").reshape(shape)
        return np.frombuffer(raw, _NUMPY[dtype]).reshape(shape)
    if dtype == "str":
        if not shape:
            return str(values[0])
        return np.array(list(values)).astype(np.str_).reshape(shape)
    if dtype not in _NUMPY:
        raise ValueError(f"a constant of type {dtype} cannot be read")
    return np.array(list(values)).astype(_NUMPY[dtype]).reshape(shape)


def all_ops(ops: list[Op]) -> Iterator[Op]:
    """Every op, including those in nested blocks."""
    for op in ops:
        yield op
        for block in op.blocks:
            yield from all_ops(block.operations)


class BlobFiles:
    """The package's weight files by name (``@model_path/weights/weight.bin``), mapped on first use."""

    def __init__(self, weights_dir: Path | None) -> None:
        self.weights_dir = weights_dir
        self._open: dict[str, BlobFile] = {}

    def __call__(self, file_name: str) -> BlobFile:
        base = file_name.split("/")[-1]
        if base not in self._open:
            if self.weights_dir is None:
                raise ValueError(f"the program reads {file_name} but the model has no weights folder")
            self._open[base] = BlobFile(self.weights_dir / base)
        return self._open[base]

    def close(self) -> None:
        for blob in self._open.values():
            blob.close()
        self._open.clear()


__all__ = ["Block", "BlobFiles", "Function", "Op", "Var", "all_ops", "decode_value", "read_function"]
