"""The cross-check of the ML Program reader: the protobuf view and coremltools' MIL loader
must give the same ONNX graph (nodes, initializer bytes, inputs and outputs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from onnx import numpy_helper

from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.onnx.builder import GraphBuilder
from pytest_coreml_quality.runtime.onnx.mlprogram import translate_mlprogram


def translate_with(path: Path, reader: str, emulate_fp16: bool = False) -> Any:
    """The ModelProto of the package at ``path`` read by ``reader`` ("proto" or "coremltools")."""
    builder = GraphBuilder(name=path.stem)
    translate_mlprogram(Model.open(path), builder, reader=reader)
    return builder.build(emulate_fp16=emulate_fp16)


def _value_infos(values: Any) -> list[tuple[str, int, list[Any]]]:
    # Sizes known only at run time are named differently by the two readers (coremltools
    # numbers its symbols process-wide); only whether a dimension is fixed, and its size, matter.
    out = []
    for vi in values:
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else "?" for d in t.shape.dim] if t.HasField("shape") else None
        out.append((vi.name, t.elem_type, dims))
    return out


def assert_same_graph(ours: Any, reference: Any) -> None:
    """Same nodes in the same order, same initializers (name, type, shape, bytes), same I/O."""
    g, r = ours.graph, reference.graph
    assert _value_infos(g.input) == _value_infos(r.input)
    assert _value_infos(g.output) == _value_infos(r.output)
    assert len(g.node) == len(r.node)
    for a, b in zip(g.node, r.node):
        assert a.SerializeToString() == b.SerializeToString(), f"node {a.name} differs:\n{a}\nvs\n{b}"
    assert [i.name for i in g.initializer] == [i.name for i in r.initializer]
    for a, b in zip(g.initializer, r.initializer):
        x, y = numpy_helper.to_array(a), numpy_helper.to_array(b)
        assert a.data_type == b.data_type and x.shape == y.shape, a.name
        assert x.tobytes() == y.tobytes(), f"initializer {a.name} differs"


def assert_same_translation(path: Path, emulate_fp16: bool = False) -> Any:
    """Translate ``path`` with both readers, check the graphs are the same; return ours."""
    ours = translate_with(path, "proto", emulate_fp16)
    assert_same_graph(ours, translate_with(path, "coremltools", emulate_fp16))
    return ours


def run(proto: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)
