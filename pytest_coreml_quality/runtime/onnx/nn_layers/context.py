"""What a NeuralNetwork layer handler works with: the graph builder, static shapes, weights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from pytest_coreml_quality.errors import ModelFormatError, UnsupportedModelError
from pytest_coreml_quality.runtime.onnx.builder import GraphBuilder
from pytest_coreml_quality.runtime.onnx.nn_weights import weight_array

# Initializers up to this size are given to shape inference by value, so Reshape/Resize
# targets held in constants are propagated; bigger ones (weights) only by type and shape.
_SMALL = 64


class ShapeTracker:
    """Static shapes of every value in a graph under construction.

    NeuralNetwork specs rarely record intermediate shapes, yet several layers need them
    (padding amounts, flatten, output sizes). After each batch of new nodes we run ONNX
    shape inference on a tiny model holding just those nodes, so the cost stays linear
    in the number of layers even for a 176 MB network.
    """

    def __init__(self, builder: GraphBuilder) -> None:
        self.builder = builder
        self.types: dict[str, tuple[int, tuple[int, ...]]] = {}
        self._nodes_done = 0
        self._inits_done = 0
        self._small: dict[str, onnx.TensorProto] = {}

    def declare(self, name: str, elem_type: int, shape: Sequence[int]) -> None:
        self.types[name] = (elem_type, tuple(int(d) for d in shape))

    def shape(self, name: str) -> tuple[int, ...]:
        if name not in self.types:
            self._sync()
        if name not in self.types:
            raise KeyError(name)
        return self.types[name][1]

    def _sync(self) -> None:
        b = self.builder
        for init in b.initializers[self._inits_done:]:
            dims = tuple(int(d) for d in init.dims)
            self.types[init.name] = (init.data_type, dims)
            if int(np.prod(dims)) <= _SMALL:
                self._small[init.name] = init
        self._inits_done = len(b.initializers)
        nodes = b.nodes[self._nodes_done:]
        if not nodes:
            return
        produced = {o for n in nodes for o in n.output}
        needed = {i for n in nodes for i in n.input if i and i not in produced}
        inputs, inits = [], []
        for name in sorted(needed):
            if name in self._small:
                inits.append(self._small[name])
            elif name in self.types:
                et, shp = self.types[name]
                inputs.append(helper.make_tensor_value_info(name, et, list(shp)))
        outputs = [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in sorted(produced)]
        graph = helper.make_graph(list(nodes), "shapes", inputs, outputs, inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", b.opset)])
        model.ir_version = 9
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
        for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
            tt = vi.type.tensor_type
            if not tt.HasField("shape"):
                continue
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
            if -1 in dims:
                continue
            self.types[vi.name] = (tt.elem_type, dims)
        self._nodes_done = len(b.nodes)


class LayerContext:
    """Per-model state shared by every layer handler."""

    def __init__(self, builder: GraphBuilder, path: Path, spec_version: int) -> None:
        self.b = builder
        self.path = path
        self.spec_version = spec_version
        self.shapes = ShapeTracker(builder)
        self.layer: Any = None  # the layer being translated, for error messages

    # --- shapes ---------------------------------------------------------------------
    def shape(self, name: str) -> tuple[int, ...]:
        try:
            return self.shapes.shape(name)
        except (KeyError, onnx.shape_inference.InferenceError) as exc:
            raise self.format_error(f"the shape of its input could not be determined ({exc})") from None

    def rank(self, name: str) -> int:
        return len(self.shape(name))

    # --- weights --------------------------------------------------------------------
    def weights(self, wp: Any, shape: Sequence[int], field: str, axis: int = 0) -> np.ndarray:
        return weight_array(wp, shape, axis=axis, path=self.path, field=f"layer '{self.layer.name}' {field}")

    # --- helpers used by many handlers ----------------------------------------------
    def const(self, value: Any, dtype: Any = np.float32, name: str = "c") -> str:
        return self.b.const(np.asarray(value, dtype=dtype), name=f"{self.layer.name}_{name}")

    def ints(self, values: Sequence[int], name: str = "i") -> str:
        return self.b.const(np.asarray(list(values), dtype=np.int64), name=f"{self.layer.name}_{name}")

    def node(self, op: str, inputs: Sequence[str], outputs: int | Sequence[str] = 1, **attrs: Any) -> Any:
        return self.b.node(op, inputs, outputs, name=self.layer.name, **attrs)

    def reshape(self, x: str, shape: Sequence[int]) -> str:
        return self.node("Reshape", [x, self.ints(shape, "shape")])

    def channel_broadcast(self, values: np.ndarray, x_rank: int, name: str) -> str:
        """A per-channel (axis -3) vector as a constant that broadcasts against rank ``x_rank``."""
        v = np.asarray(values, np.float32).reshape(-1)
        if v.size == 1:
            return self.const(v.reshape(()), name=name)
        return self.const(v.reshape((v.size, 1, 1)), name=name) if x_rank >= 3 else self.const(v, name=name)

    def chw_broadcast(self, values: np.ndarray, shape: Sequence[int], name: str) -> str:
        """A ``[1]``/``[C]``/``[1,H,W]``/``[C,H,W]`` parameter as a constant broadcastable on axes -3..-1."""
        shape = [int(d) for d in shape] or [1]
        v = np.asarray(values, np.float32)
        if len(shape) == 1:
            shape = [shape[0], 1, 1]
        return self.const(v.reshape(shape), name=name)

    # --- errors ---------------------------------------------------------------------
    def format_error(self, message: str, field: str | None = None, expected: str | None = None) -> ModelFormatError:
        where = f"layer '{self.layer.name}' ({self.layer.WhichOneof('layer')})"
        return ModelFormatError(message, path=self.path, field=f"{where}{'.' + field if field else ''}", expected=expected)

    def unsupported(self, message: str, expected: str | None = None) -> UnsupportedModelError:
        where = f"layer '{self.layer.name}' ({self.layer.WhichOneof('layer')})"
        return UnsupportedModelError(message, path=self.path, field=where, expected=expected)
