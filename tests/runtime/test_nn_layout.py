"""The translated graph keeps onnxruntime's blocked (NCHWc) layout across concat and add.

onnxruntime's NCHWc pass reorders a convolution network into its blocked layout once and
keeps it across Concat, Add, pooling and Resize, but only for the op forms it recognises
(``Concat`` with ``axis=1``, ``Add``). A Concat written with ``axis=-3`` (the same thing on
a rank-4 blob) cost two layout reorders per Concat: about a tenth of ISNet's inference.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.base import RuntimeOptions
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend, translate

ct = pytest.importorskip("coremltools")
from coremltools.models import datatypes  # noqa: E402
from coremltools.models.neural_network import NeuralNetworkBuilder  # noqa: E402

C, H, W = 16, 12, 12  # a multiple of every NCHWc block size (8 on AVX2, 16 on AVX-512)


def _conv(b: NeuralNetworkBuilder, name: str, cin: int, inp: str, seed: int) -> None:
    w = np.random.default_rng(seed).normal(0, 0.2, (3, 3, cin, C)).astype(np.float32)
    b.add_convolution(name, kernel_channels=cin, output_channels=C, height=3, width=3, stride_height=1,
                      stride_width=1, border_mode="same", groups=1, W=w, b=np.zeros(C, np.float32),
                      has_bias=True, input_name=inp, output_name=name)


def concat_add_model(tmp_path: Path) -> Model:
    """conv-relu, conv, concat of both, conv, residual add, conv: a U-Net's building blocks."""
    b = NeuralNetworkBuilder([("data", datatypes.Array(C, H, W))], [("out", datatypes.Array(C, H, W))])
    _conv(b, "c1", C, "data", 1)
    b.add_activation("r1", "RELU", "c1", "r1")
    _conv(b, "c2", C, "r1", 2)
    b.add_activation("r2", "RELU", "c2", "r2")
    b.add_elementwise("cat", ["r1", "r2"], "cat", mode="CONCAT")
    _conv(b, "c3", 2 * C, "cat", 3)
    b.add_elementwise("sum", ["c3", "r1"], "sum", mode="ADD")
    _conv(b, "out", C, "sum", 4)
    path = tmp_path / "unet_block.mlmodel"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ct.utils.save_spec(b.spec, str(path))
    return Model.open(path)


def test_concat_and_add_use_the_forms_onnxruntime_keeps_blocked(tmp_path: Path) -> None:
    proto = translate(concat_add_model(tmp_path), RuntimeOptions())
    ops = {n.op_type: n for n in proto.graph.node}
    axis = next(a.i for a in ops["Concat"].attribute if a.name == "axis")
    assert axis == 1
    assert "Sum" not in ops and "Add" in ops


def test_optimised_graph_has_no_layout_reorders_between_convolutions(tmp_path: Path) -> None:
    import onnxruntime as ort

    model = concat_add_model(tmp_path)
    predictor = OnnxBackend().load(model, RuntimeOptions(cache_dir=tmp_path / "cache"))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(predictor.graph_path), so, providers=["CPUExecutionProvider"])
    import onnx

    graph = onnx.load(str(tmp_path / "optimised.onnx"), load_external_data=False).graph
    nchwc = Counter(n.op_type for n in graph.node if n.domain == "com.microsoft.nchwc")
    if not nchwc["Conv"]:
        pytest.skip("this CPU has no NCHWc convolution kernels (onnxruntime uses them on x86 with AVX2 or later)")
    # Into the blocked layout once at the input and out once at the output, nothing in between.
    assert nchwc["ReorderInput"] <= 1 and nchwc["ReorderOutput"] <= 1, dict(nchwc)
