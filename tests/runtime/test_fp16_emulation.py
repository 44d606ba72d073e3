"""fp16 emulation (``GraphBuilder.build(emulate_fp16=True)``) rounds float values only."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto

from pytest_coreml_quality.runtime.onnx.builder import GraphBuilder


def _run(model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_integer_arithmetic_stays_integer_and_floats_are_rounded() -> None:
    # Index arithmetic as translated programs have it: topk's indices, an integer sum, a gather.
    b = GraphBuilder()
    x = b.add_input("x", TensorProto.FLOAT, [5])
    values, indices = b.node("TopK", [x, b.const(np.array([3], dtype=np.int64))], 2, name="top")
    shifted = b.node("Add", [indices, b.const(np.array([4000, 4000, 4001], dtype=np.int64))])
    picked = b.node("Gather", [x, indices], axis=0)
    scaled = b.node("Mul", [picked, b.const(np.array(1.0001, dtype=np.float32))])
    b.identity(shifted, "shifted")
    b.identity(scaled, "scaled")
    b.add_output("shifted", TensorProto.INT64, [3])
    b.add_output("scaled", TensorProto.FLOAT, [3])
    model = b.build(emulate_fp16=True)

    feed = np.array([0.3, 2.0004, -1.0, 1.3333, 0.5], dtype=np.float32)
    shifted_out, scaled_out = _run(model, {"x": feed})

    # Odd numbers above 2048 are not float16 numbers: integers rounded through fp16 would come out even.
    assert shifted_out.dtype == np.int64
    assert shifted_out.tolist() == [4001, 4003, 4005]
    # Floats are rounded after every op: the input, the product.
    x16 = feed.astype(np.float16).astype(np.float32)
    expected = (x16[[1, 3, 4]] * np.float32(np.float16(1.0001))).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(scaled_out, expected)
    assert not np.array_equal(scaled_out, feed[[1, 3, 4]] * np.float32(1.0001))


def test_unrounded_build_is_unchanged() -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorProto.FLOAT, [2])
    y = b.node("Mul", [x, b.const(np.array(3.0001, dtype=np.float32))])
    b.identity(y, "y")
    b.add_output("y", TensorProto.FLOAT, [2])
    (out,) = _run(b.build(), {"x": np.array([1.0, 2.0], dtype=np.float32)})
    np.testing.assert_array_equal(out, np.array([1.0, 2.0], dtype=np.float32) * np.float32(3.0001))
