"""Tiny NeuralNetwork models whose outputs are not masks, built with coremltools' NeuralNetworkBuilder."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np


def _builder(inputs: list, outputs: list, mode: str | None = None):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from coremltools.models.neural_network import NeuralNetworkBuilder
    return NeuralNetworkBuilder(inputs, outputs, mode=mode, disable_rank5_shape_mapping=True)


def _conv(builder, name: str, src: str, dst: str, cin: int, cout: int, rng: np.random.Generator, k: int = 3) -> None:  # type: ignore[no-untyped-def]
    weights = rng.normal(0.0, 0.5, size=(k, k, cin, cout)).astype(np.float32)
    builder.add_convolution(
        name, kernel_channels=cin, output_channels=cout, height=k, width=k, stride_height=1, stride_width=1,
        border_mode="same", groups=1, W=weights, b=rng.normal(0.0, 0.1, size=cout).astype(np.float32), has_bias=True,
        input_name=src, output_name=dst,
    )


def _image_input(builder) -> None:  # type: ignore[no-untyped-def]
    builder.set_pre_processing_parameters(
        image_input_names=["img"], red_bias=-0.5, green_bias=-0.5, blue_bias=-0.5, image_scale=1 / 255
    )


def save_heatmap_model(path: Path, keypoints: int = 5, size: int = 24, seed: int = 0) -> Path:
    """RGB image in, (keypoints, size, size) heat maps out (two 3x3 convolutions): a pose estimator's shape."""
    import coremltools as ct
    from coremltools.models import datatypes

    rng = np.random.default_rng(seed)
    b = _builder([("img", datatypes.Array(3, size, size))], [("heatmaps", datatypes.Array(keypoints, size, size))])
    _conv(b, "conv1", "img", "h1", 3, 16, rng)
    b.add_activation("relu1", "RELU", "h1", "h1r")
    _conv(b, "conv2", "h1r", "heatmaps", 16, keypoints, rng)
    _image_input(b)
    ct.utils.save_spec(b.spec, str(path))
    return path


def save_two_output_model(path: Path, size: int = 24, seed: int = 1) -> Path:
    """RGB image in, a depth-like map ('depth', 1 channel) and an embedding-like tensor ('features', 8 channels) out."""
    import coremltools as ct
    from coremltools.models import datatypes

    rng = np.random.default_rng(seed)
    b = _builder(
        [("img", datatypes.Array(3, size, size))],
        [("depth", datatypes.Array(1, size, size)), ("features", datatypes.Array(8, size, size))],
    )
    _conv(b, "conv1", "img", "h1", 3, 16, rng)
    b.add_activation("relu1", "RELU", "h1", "h1r")
    _conv(b, "conv_depth", "h1r", "depth_raw", 16, 1, rng)
    b.add_activation("depth_scale", "LINEAR", "depth_raw", "depth", params=[10.0, 20.0])  # metres-like, far outside 0..1
    _conv(b, "conv_features", "h1r", "features", 16, 8, rng)
    _image_input(b)
    ct.utils.save_spec(b.spec, str(path))
    return path


def save_rgb_image_model(path: Path, size: int = 24, seed: int = 2) -> Path:
    """RGB image in, RGB image out (a 3x3 convolution, scaled back to 0..255): style transfer's shape."""
    import coremltools as ct
    from coremltools.models import datatypes

    rng = np.random.default_rng(seed)
    b = _builder([("img", datatypes.Array(3, size, size))], [("stylized", datatypes.Array(3, size, size))])
    _conv(b, "conv1", "img", "c1", 3, 3, rng)
    b.add_activation("sig", "SIGMOID", "c1", "s1")
    b.add_activation("to255", "LINEAR", "s1", "stylized", params=[255.0, 0.0])
    _image_input(b)
    spec = b.spec
    out = spec.description.output[0].type
    out.imageType.width, out.imageType.height = size, size
    out.imageType.colorSpace = ct.proto.FeatureTypes_pb2.ImageFeatureType.RGB
    ct.utils.save_spec(spec, str(path))
    return path


def save_classifier_model(path: Path, classes: int = 10, size: int = 24, seed: int = 3) -> Path:
    """RGB image in, a NeuralNetwork classifier out: 'classLabel' and a 'classLabelProbs' dictionary."""
    import coremltools as ct
    from coremltools.models import datatypes

    rng = np.random.default_rng(seed)
    b = _builder([("img", datatypes.Array(3, size, size))], [("out", datatypes.Array(classes))], mode="classifier")
    _conv(b, "conv1", "img", "h1", 3, 16, rng)
    b.add_activation("relu1", "RELU", "h1", "h1r")
    b.add_pooling("gap", height=1, width=1, stride_height=1, stride_width=1, layer_type="AVERAGE",
                  padding_type="VALID", input_name="h1r", output_name="pooled", is_global=True)
    b.add_flatten("flat", mode=0, input_name="pooled", output_name="flat")
    b.add_inner_product("fc", W=rng.normal(0.0, 2.0, size=(classes, 16)).astype(np.float32),
                        b=rng.normal(0.0, 0.5, size=classes).astype(np.float32), input_channels=16,
                        output_channels=classes, has_bias=True, input_name="flat", output_name="logits")
    b.add_softmax("softmax", input_name="logits", output_name="out")
    b.set_class_labels([f"class{i}" for i in range(classes)], predicted_feature_name="classLabel", prediction_blob="out")
    _image_input(b)
    ct.utils.save_spec(b.spec, str(path))
    return path
