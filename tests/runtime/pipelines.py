"""Tiny pipelines ending in (or made of) stages the onnx runtime cannot run, built from the
Core ML protobuf directly: a NeuralNetwork followed by non-maximum suppression, a Vision
feature print followed by a GLM classifier (what Create ML's image classifiers are), and a
NeuralNetwork followed by a custom model."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any


def _relu_network() -> Any:
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    b = NeuralNetworkBuilder([("image", datatypes.Array(3, 8, 8))], [("scores", datatypes.Array(3, 8, 8))])
    b.add_activation("relu", "RELU", "image", "scores")
    return b.spec


def _array(feature: Any, name: str, *shape: int) -> None:
    from coremltools.proto import Model_pb2

    feature.name = name
    feature.type.multiArrayType.shape.extend(shape)
    feature.type.multiArrayType.dataType = Model_pb2.ArrayFeatureType.FLOAT32


def _pipeline(stages: list[Any], kind: str = "pipeline") -> Any:
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.specificationVersion = 4
    holder = spec.pipeline if kind == "pipeline" else getattr(spec, kind).pipeline
    holder.models.extend(stages)
    spec.description.input.extend(stages[0].description.input)
    spec.description.output.extend(stages[-1].description.output)
    return spec


def _save(spec: Any, path: Path) -> Path:
    import coremltools as ct

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ct.utils.save_spec(spec, str(path))
    return path


def network_then_nms(path: Path) -> Path:
    from coremltools.proto import Model_pb2

    nms = Model_pb2.Model()
    nms.specificationVersion = 4
    nms.nonMaximumSuppression.iouThreshold = 0.5
    _array(nms.description.input.add(), "scores", 3, 8, 8)
    _array(nms.description.output.add(), "boxes", 4)
    return _save(_pipeline([_relu_network(), nms]), path)


def feature_print_then_glm(path: Path) -> Path:
    from coremltools.proto import Model_pb2

    fp = Model_pb2.Model()
    fp.specificationVersion = 4
    fp.visionFeaturePrint.scene.version = 1
    image = fp.description.input.add()
    image.name = "image"
    image.type.imageType.width = image.type.imageType.height = 299
    image.type.imageType.colorSpace = Model_pb2.ImageFeatureType.RGB
    _array(fp.description.output.add(), "features", 2048)
    glm = Model_pb2.Model()
    glm.specificationVersion = 4
    glm.glmClassifier.weights.add().value.extend([0.0] * 2048)
    glm.glmClassifier.offset.append(0.0)
    glm.glmClassifier.stringClassLabels.vector.extend(["cat", "dog"])
    glm.description.input.extend(fp.description.output)
    label = glm.description.output.add()
    label.name = "label"
    label.type.stringType.SetInParent()
    spec = _pipeline([fp, glm], "pipelineClassifier")
    spec.description.predictedFeatureName = "label"
    return _save(spec, path)


def network_then_custom_model(path: Path) -> Path:
    from coremltools.proto import Model_pb2

    custom = Model_pb2.Model()
    custom.specificationVersion = 4
    custom.customModel.className = "MattingRefiner"
    _array(custom.description.input.add(), "scores", 3, 8, 8)
    _array(custom.description.output.add(), "alpha", 1, 8, 8)
    return _save(_pipeline([_relu_network(), custom]), path)
