"""A small helper to assemble ONNX graphs with unique names and constant initializers.

Translators (``neuralnetwork.py`` for NeuralNetwork specs, ``mlprogram.py`` for ML
Programs) only call :class:`GraphBuilder`; they never touch ``onnx.helper`` bookkeeping.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 18

_SAFE = re.compile(r"[^A-Za-z0-9_.:/-]")


class ExternalWeights:
    """Initializers written to one file as ONNX external data, each as soon as it is added.

    A translator then never holds the graph's weights itself: each tensor's bytes go to
    the file when the translator hands it over and the proto only names the file, the
    offset and the length. The file must sit next to the graph file it is saved with
    (ONNX locations are relative to the model's directory).
    """

    MIN_BYTES = 1024  # smaller tensors (shapes, scalars) stay inline
    _ALIGN = 4096  # page-aligned offsets, so onnxruntime can map the data rather than copy it

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file = open(self.path, "w+b")  # noqa: SIM115 - closed by close()/build()

    def accepts(self, arr: np.ndarray) -> bool:
        return arr.nbytes >= self.MIN_BYTES and arr.dtype.kind in "fiub"

    def write(self, arr: np.ndarray, name: str) -> onnx.TensorProto:
        """Append ``arr`` and return its initializer (which holds no data itself)."""
        data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<") if arr.dtype.kind in "fiu" else arr.dtype)
        f = self._file
        f.seek(0, os.SEEK_END)
        offset = -(-f.tell() // self._ALIGN) * self._ALIGN
        f.seek(offset)
        f.write(memoryview(data.reshape(-1)).cast("B"))
        tensor = onnx.TensorProto()
        tensor.name = name
        tensor.dims.extend(int(d) for d in arr.shape)
        tensor.data_type = helper.np_dtype_to_tensor_dtype(data.dtype)
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", self.path.name), ("offset", str(offset)), ("length", str(data.nbytes))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        return tensor

    def read(self, tensor: onnx.TensorProto) -> np.ndarray:
        """The data of an initializer written here."""
        info = {e.key: e.value for e in tensor.external_data}
        dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
        self._file.flush()
        count = int(info["length"]) // np.dtype(dtype).itemsize
        return np.fromfile(self.path, dtype=dtype, count=count, offset=int(info["offset"])).reshape(tuple(tensor.dims))

    def overwrite(self, tensor: onnx.TensorProto, arr: np.ndarray) -> None:
        """Replace an initializer's data in place (same dtype and size)."""
        info = {e.key: e.value for e in tensor.external_data}
        self._file.seek(int(info["offset"]))
        self._file.write(memoryview(np.ascontiguousarray(arr).reshape(-1)).cast("B"))

    @staticmethod
    def holds(tensor: onnx.TensorProto) -> bool:
        return tensor.data_location == onnx.TensorProto.EXTERNAL

    def close(self) -> None:
        self._file.close()


class GraphBuilder:
    """Accumulate nodes, initializers, inputs and outputs of one ONNX graph.

    With ``external``, initializers of :attr:`ExternalWeights.MIN_BYTES` or more are
    written to that file as they are added (see :class:`ExternalWeights`); the built
    model refers to them and must be saved into the file's directory.
    """

    def __init__(self, name: str = "coreml", opset: int = OPSET, external: ExternalWeights | None = None) -> None:
        self.name = name
        self.opset = opset
        self.external = external
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._used: set[str] = set()
        self._const_cache: dict[tuple[str, bytes, tuple[int, ...]], str] = {}

    # --- names ----------------------------------------------------------------------
    def unique(self, base: str) -> str:
        """Return ``base`` (sanitised) or ``base_N`` so that no two values share a name."""
        base = _SAFE.sub("_", base) or "v"
        name, i = base, 1
        while name in self._used:
            name = f"{base}_{i}"
            i += 1
        self._used.add(name)
        return name

    def reserve(self, name: str) -> str:
        """Claim an exact name (a graph input/output name from the Core ML spec)."""
        if name in self._used:
            raise ValueError(f"name {name!r} is already used in the graph")
        self._used.add(name)
        return name

    # --- graph pieces ---------------------------------------------------------------
    def const(self, value: Any, name: str = "const", dtype: Any | None = None) -> str:
        """Add an initializer; identical small constants are shared."""
        arr = np.asarray(value, dtype=dtype) if dtype is not None else np.asarray(value)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        key = None
        if arr.size <= 64:
            key = (arr.dtype.str, arr.tobytes(), arr.shape)
            if key in self._const_cache:
                return self._const_cache[key]
        out = self.unique(name)
        if self.external is not None and self.external.accepts(arr):
            self.initializers.append(self.external.write(arr, out))
        else:
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(arr), out))
        if key is not None:
            self._const_cache[key] = out
        return out

    def node(
        self,
        op_type: str,
        inputs: Sequence[str],
        outputs: int | Sequence[str] = 1,
        name: str | None = None,
        domain: str = "",
        **attrs: Any,
    ) -> Any:
        """Add a node; return its output name (one output) or the list of output names.

        ``outputs`` is a count (names are generated from ``name``/``op_type``) or explicit
        names (already reserved or fresh). Empty strings in ``inputs`` mark omitted
        optional inputs, as in ONNX.
        """
        base = name or op_type.lower()
        if isinstance(outputs, int):
            out_names = [self.unique(base if outputs == 1 else f"{base}_out{i}") for i in range(outputs)]
        else:
            out_names = [o if o in self._used else self.reserve(o) for o in outputs]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(
            helper.make_node(op_type, list(inputs), out_names, name=self.unique(f"{base}_node"), domain=domain, **attrs)
        )
        return out_names[0] if len(out_names) == 1 else out_names

    def add_input(self, name: str, elem_type: int, shape: Sequence[int | str | None]) -> str:
        self.reserve(name)
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def add_output(self, name: str, elem_type: int, shape: Sequence[int | str | None] | None = None) -> str:
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, None if shape is None else list(shape)))
        return name

    def identity(self, src: str, dst: str) -> str:
        """Copy ``src`` to the exact name ``dst`` (for graph outputs)."""
        return self.node("Identity", [src], [dst], name=f"{dst}_identity")

    # --- finishing ------------------------------------------------------------------
    def build(self, emulate_fp16: bool = False, doc: str = "", release: bool = False) -> onnx.ModelProto:
        """Assemble the ``ModelProto``.

        With ``emulate_fp16`` every float32 node output is rounded through float16
        (``Cast`` to fp16 and back), which is what fp16 compute does after each op; float
        graph inputs and float weights are rounded too, as Core ML feeds fp16 compute units
        fp16 inputs and weights. ``build`` may be called once per builder.

        With ``release`` the initializers are moved into the model one at a time and dropped
        from the builder, so a large model's weights are never held twice (the builder
        cannot build again afterwards).
        """
        initializers = list(self.initializers)
        if emulate_fp16:
            exact = _non_float_outputs(self)  # before the inputs are routed through their rounded copies
            nodes = _round_inputs_to_fp16(self) + _round_outputs_to_fp16(self, exact)
            initializers = _round_initializers_to_fp16(self)
        else:
            nodes = list(self.nodes)
        # Initializers go in after make_model: make_graph and make_model each copy the graph.
        graph = helper.make_graph(nodes, self.name, self.inputs, self.outputs, [])
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", self.opset)],
            producer_name="pytest-coreml-quality",
            doc_string=doc,
        )
        target = model.graph.initializer
        for i, init in enumerate(initializers):
            target.add().CopyFrom(init)
            if release:
                initializers[i] = None  # type: ignore[call-overload]
                if i < len(self.initializers):
                    self.initializers[i] = None  # type: ignore[call-overload]
        if release:
            self.initializers = []
            self._const_cache.clear()
        if self.external is not None:
            self.external.close()
        # onnxruntime supports a bounded IR version; pin it to one every supported release reads.
        model.ir_version = min(model.ir_version, 9)
        return model


# Ops whose outputs are not float tensors (or are exact copies) need no rounding.
_NO_ROUND = {"Shape", "Size", "Cast", "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose",
             "Concat", "Split", "Slice", "Gather", "Constant", "ConstantOfShape", "ArgMax", "ArgMin",
             "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Not", "And", "Or", "NonZero",
             "MaxPool", "Tile", "Expand", "Pad", "DepthToSpace", "SpaceToDepth"}


def _non_float_outputs(b: GraphBuilder) -> set[str]:
    """Node outputs that ONNX type inference finds to be something other than float32.

    Integer and bool values (indices, shapes, counts) are exact on fp16 hardware too, and a
    Cast of them to float would hand the next op a type it does not take. Outputs whose type
    inference cannot tell are left out, so they are rounded as float as before.
    """
    declared = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in b.initializers if t is not None]
    graph = helper.make_graph(list(b.nodes), b.name, list(b.inputs) + declared, list(b.outputs))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", b.opset)])
    model.ir_version = min(model.ir_version, 9)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - inference is an aid here; without it every output is rounded
        return set()
    known = list(inferred.graph.value_info) + list(inferred.graph.output)
    return {v.name for v in known if v.type.tensor_type.elem_type not in (TensorProto.UNDEFINED, TensorProto.FLOAT)}


def _round_outputs_to_fp16(b: GraphBuilder, exact: set[str]) -> list[onnx.NodeProto]:
    """Every node, each float output followed by a Cast through fp16 (outputs in ``exact`` are not rounded)."""
    graph_outputs = {o.name for o in b.outputs}
    out: list[onnx.NodeProto] = []
    rename: dict[str, str] = {}
    for n in b.nodes:
        for i, x in enumerate(n.input):
            if x in rename:
                n.input[i] = rename[x]
        out.append(n)
        if n.op_type in _NO_ROUND or n.domain:
            continue
        for o in n.output:
            if not o or o in exact:
                continue
            half = b.unique(f"{o}_fp16")
            back = b.unique(f"{o}_r16")
            out.append(helper.make_node("Cast", [o], [half], name=b.unique(f"{half}_node"), to=TensorProto.FLOAT16))
            out.append(helper.make_node("Cast", [half], [back], name=b.unique(f"{back}_node"), to=TensorProto.FLOAT))
            if o in graph_outputs:
                # Keep the graph output's name: route the rounded value into it.
                raw = b.unique(f"{o}_raw")
                n.output[list(n.output).index(o)] = raw
                out[-2].input[0] = raw
                out[-1].output[0] = o
            else:
                rename[o] = back
    return out


# Inputs of these ops are sizes/scales, not data: rounding them could change output shapes.
_SHAPE_INPUT_OPS = {"Resize", "Upsample"}


def _round_inputs_to_fp16(b: GraphBuilder) -> list[onnx.NodeProto]:
    """Cast float graph inputs through fp16 at the top of the graph; consumers read the rounded copy."""
    out: list[onnx.NodeProto] = []
    for vi in b.inputs:
        if vi.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        half = b.unique(f"{vi.name}_in_fp16")
        back = b.unique(f"{vi.name}_in_r16")
        out.append(helper.make_node("Cast", [vi.name], [half], name=b.unique(f"{half}_node"), to=TensorProto.FLOAT16))
        out.append(helper.make_node("Cast", [half], [back], name=b.unique(f"{back}_node"), to=TensorProto.FLOAT))
        for n in b.nodes:
            for i, x in enumerate(n.input):
                if x == vi.name:
                    n.input[i] = back
    return out


def _round_initializers_to_fp16(b: GraphBuilder) -> list[onnx.TensorProto]:
    """float32 weights rounded to the nearest fp16 value (still stored as float32)."""
    skip = {x for n in b.nodes if n.op_type in _SHAPE_INPUT_OPS for x in n.input}
    out = []
    for init in b.initializers:
        if init.data_type != TensorProto.FLOAT or init.name in skip:
            out.append(init)
            continue
        if b.external is not None and b.external.holds(init):
            b.external.overwrite(init, b.external.read(init).astype(np.float16).astype(np.float32))
            out.append(init)
            continue
        arr = numpy_helper.to_array(init)
        out.append(numpy_helper.from_array(arr.astype(np.float16).astype(np.float32), init.name))
    return out
