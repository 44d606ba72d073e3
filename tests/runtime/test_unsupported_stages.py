"""What cannot run on the onnx runtime says exactly what and why (issue 11 §4): pipeline
stages that are not NeuralNetworks, custom layers, TensorFlow-style control flow."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from pytest_coreml_quality.errors import UnsupportedModelError
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.base import RuntimeOptions
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend
from tests.runtime import mil_zoo, pipelines

ct = pytest.importorskip("coremltools")


def _load_error(path: Path, cache: Path) -> str:
    with pytest.raises(UnsupportedModelError) as info:
        OnnxBackend().load(Model.open(path), RuntimeOptions(cache_dir=cache))
    return str(info.value)


def test_non_maximum_suppression_stage(tmp_path: Path) -> None:
    path = pipelines.network_then_nms(tmp_path / "Detector.mlmodel")
    assert _load_error(path, tmp_path / "c") == (
        f"{path}: field 'pipeline.models': has 1 pipeline stage(s) the onnx runtime cannot run: "
        "stage 1 'nonMaximumSuppression' (outputs: boxes): non-maximum suppression (object-detection "
        "post-processing) has no ONNX translation here; the coreml backend on macOS runs it "
        "(expected pipeline stages that are NeuralNetworks)"
    )


def test_vision_feature_print_and_glm_classifier_stages(tmp_path: Path) -> None:
    path = pipelines.feature_print_then_glm(tmp_path / "Classifier.mlmodel")
    text = _load_error(path, tmp_path / "c")
    assert text.startswith(f"{path}: field 'pipelineClassifier.models': has 2 pipeline stage(s) the onnx runtime "
                           "cannot run: ")
    assert ("stage 0 'visionFeaturePrint' (outputs: features): a Vision feature print is built into Apple's "
            "operating systems (Apple-only): it needs the coreml backend on macOS; ") in text
    assert "stage 1 'glmClassifier' (outputs: label): GLM classifiers have no ONNX translation here" in text


def test_custom_model_stage_needs_its_swift_code(tmp_path: Path) -> None:
    path = pipelines.network_then_custom_model(tmp_path / "Matting.mlmodel")
    assert ("stage 1 'customModel' (outputs: alpha): a custom model (class MattingRefiner) needs its Swift "
            "implementation, which exists only in the app") in _load_error(path, tmp_path / "c")


def test_custom_layer_needs_its_swift_code(tmp_path: Path) -> None:
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder
    from coremltools.proto import NeuralNetwork_pb2

    b = NeuralNetworkBuilder([("x", datatypes.Array(3, 8, 8))], [("y", datatypes.Array(3, 8, 8))])
    params = NeuralNetwork_pb2.CustomLayerParams()
    params.className = "GuidedFilter"
    b.add_custom("refine", ["x"], ["y"], custom_proto_spec=params)
    path = tmp_path / "custom.mlmodel"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ct.utils.save_spec(b.spec, str(path))
    assert _load_error(path, tmp_path / "c") == (
        f"{path}: field 'neuralNetwork.layers': uses 1 layer(s) the onnx runtime cannot translate: 'custom' "
        "(layer 'refine'): a custom layer (class GuidedFilter) needs its Swift implementation, which exists only "
        "in the app (expected layers Core ML itself defines (a custom layer runs only inside the app that "
        "implements it))"
    )


def test_control_flow_ops_are_listed_by_op_type(tmp_path: Path) -> None:
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4))], opset_version=ct.target.iOS16)
    def prog(x: Any) -> Any:
        _, acc = mb.while_loop(_cond=lambda i, a: mb.less(x=i, y=3.0),
                               _body=lambda i, a: (mb.add(x=i, y=1.0), mb.mul(x=a, y=2.0)),
                               loop_vars=(mb.const(val=0.0), x))
        items = mb.list_write(ls=mb.make_list(init_length=2, dtype="fp32", elem_shape=[1, 4]), index=0, value=acc)
        return mb.identity(x=mb.list_read(ls=items, index=0), name="y")

    path = mil_zoo.save_program(prog, tmp_path / "loop.mlpackage")
    text = _load_error(path, tmp_path / "c")
    assert text.startswith(f"{path}: field 'mlProgram.main': uses 4 ML Program op(s) this runtime cannot "
                           "translate (op types: while_loop, make_list, list_write, list_read): while_loop '")
    assert ("; while_loop, make_list, list_write, list_read are TensorFlow-style control flow, which has no static "
            "ONNX graph (expected op types among the ") in text
    assert "pytest_coreml_quality" not in text.removeprefix(str(path))  # no module path
