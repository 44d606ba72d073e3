"""Tiny NeuralNetwork models, one per mask contract, built so their masks are known exactly.

Every model computes the same per-pixel logit ``z = W . rgb + b`` (a 1x1 convolution on
a 32x32 photo) and emits it in one contract:

* ``prob``: ``sigmoid(z)``, one channel (the reference);
* ``logits``: ``z``, one channel;
* ``two_softmax``: ``softmax([0, z])`` over two channels, whose channel 1 is ``sigmoid(z)``;
* ``two_logits``: ``[0, z]``, two channels of scores;
* ``hwc``: ``softmax([0, z])`` laid out (1, H, W, C);
* ``classmap``: ``argmax([0, z])`` as int32, i.e. class 1 where ``z > 0``;
* ``three``: ``[0, z, -z]``, three channels (``auto`` must refuse it);
* ``rgb_image``: a colour image output (style transfer; not a mask);
* ``array_rgb`` / ``array_bgr``: ``sigmoid(z)`` from a float32 multiarray input in RGB,
  and the same network expecting BGR (its weights reversed).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

SIZE = 32
# The logit's weights on 0..1 RGB: large enough that z crosses 0 inside the golden photos.
WEIGHTS = np.array([6.0, -9.0, 2.5], dtype=np.float32)
BIAS = 0.4
KINDS = ("prob", "logits", "two_softmax", "two_logits", "hwc", "classmap", "three", "rgb_image", "array_rgb", "array_bgr")


def save_mask_model(path: Path, kind: str) -> Path:
    """Save the ``kind`` model (see the module docstring) as a ``.mlmodel`` at ``path``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import coremltools as ct
        from coremltools.models import datatypes
        from coremltools.models.neural_network import NeuralNetworkBuilder

    assert kind in KINDS, kind
    out_shapes = {
        "prob": (1, SIZE, SIZE),
        "logits": (1, SIZE, SIZE),
        "two_softmax": (2, SIZE, SIZE),
        "two_logits": (2, SIZE, SIZE),
        "hwc": (1, SIZE, SIZE, 2),
        "classmap": (1, SIZE, SIZE),
        "three": (3, SIZE, SIZE),
        "rgb_image": (3, SIZE, SIZE),
        "array_rgb": (1, SIZE, SIZE),
        "array_bgr": (1, SIZE, SIZE),
    }
    builder = NeuralNetworkBuilder(
        [("img", datatypes.Array(3, SIZE, SIZE))], [("mask", datatypes.Array(*out_shapes[kind]))], disable_rank5_shape_mapping=True
    )
    weights = WEIGHTS[::-1] if kind == "array_bgr" else WEIGHTS
    # Channel 0 is a constant 0 score (zero weights, zero bias), channel 1 the logit z, channel 2 -z.
    rows = {1: [weights], 2: [np.zeros(3), weights], 3: [np.zeros(3), weights, -weights]}
    biases = {1: [BIAS], 2: [0.0, BIAS], 3: [0.0, BIAS, -BIAS]}
    channels = {"two_softmax": 2, "two_logits": 2, "hwc": 2, "classmap": 2, "three": 3, "rgb_image": 3}.get(kind, 1)
    w = np.asarray(rows[channels], dtype=np.float32).reshape(channels, 3, 1, 1)
    last = "mask" if kind in ("logits", "two_logits", "three", "rgb_image") else "z"
    builder.add_convolution(
        "conv", kernel_channels=3, output_channels=channels, height=1, width=1, stride_height=1, stride_width=1,
        border_mode="valid", groups=1, W=w.transpose(2, 3, 1, 0), b=np.asarray(biases[channels], dtype=np.float32),
        has_bias=True, input_name="img", output_name=last,
    )
    if kind in ("prob", "array_rgb", "array_bgr"):
        builder.add_activation("sigmoid", "SIGMOID", "z", "mask")
    elif kind == "two_softmax":
        builder.add_softmax("softmax", "z", "mask")
    elif kind == "hwc":
        builder.add_softmax("softmax", "z", "chw")
        builder.add_transpose("to_hwc", axes=(0, 2, 3, 1), input_name="chw", output_name="mask")
    elif kind == "classmap":
        builder.add_argmax("argmax", "z", "mask", axis=1, keepdims=True)
    if not kind.startswith("array"):
        builder.set_pre_processing_parameters(image_input_names=["img"], image_scale=1 / 255)
    spec = builder.spec
    out = spec.description.output[0].type
    if kind == "classmap":
        out.multiArrayType.dataType = ct.proto.FeatureTypes_pb2.ArrayFeatureType.INT32
    if kind == "rgb_image":
        out.imageType.width, out.imageType.height = SIZE, SIZE
        out.imageType.colorSpace = ct.proto.FeatureTypes_pb2.ImageFeatureType.RGB
    ct.utils.save_spec(spec, str(path))
    return path
