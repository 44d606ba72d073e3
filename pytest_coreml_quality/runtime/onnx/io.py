"""Turn ``predict()`` inputs into onnxruntime feeds and session outputs back into Core ML values.

The contract between the translators and this module:

* image inputs are float32 ``(1, C, H, W)`` raw pixel values 0..255 in the feature's
  colour-layout channel order (R,G,B / B,G,R / one gray channel); the graph applies the
  model's own scale/bias/mean-image preprocessing;
* multiarray inputs are float32 with the declared shape;
* image outputs are float32 ``(1, C, H, W)`` or ``(C, H, W)`` pixel values, which are
  clipped to 0..255, rounded and returned as PIL images ('L' or 'RGB'); GRAYSCALE_FLOAT16
  ones are returned unclipped as float ('F') images, as Core ML returns float16 buffers;
* multiarray outputs are cast to the declared dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from pytest_coreml_quality.errors import CoreMLQualityError
from pytest_coreml_quality.model import FeatureDescription, Model
from pytest_coreml_quality.output_checks import require_finite

_NUMPY_DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16, "int32": np.int32, "int8": np.int8}


def image_to_array(image: Any, feature: FeatureDescription, model: Model) -> np.ndarray:
    """A PIL image -> float32 ``(1, C, H, W)`` raw pixels in the feature's channel order."""
    if not isinstance(image, Image.Image):
        raise CoreMLQualityError(
            f"got a {type(image).__name__} for image input '{feature.name}'",
            path=model.path,
            field=f"input '{feature.name}'",
            expected="a PIL.Image.Image",
        )
    if feature.width and feature.height and image.size != (feature.width, feature.height):
        raise CoreMLQualityError(
            f"image for input '{feature.name}' is {image.size[0]}x{image.size[1]}",
            path=model.path,
            field=f"input '{feature.name}'",
            expected=f"{feature.width}x{feature.height} (Core ML does not resize images; resize before predict)",
        )
    if feature.channels == 1:
        if feature.color_layout == "GRAYSCALE_FLOAT16" and image.mode == "F":
            # A float16 pixel buffer takes the values as they are, fractions included.
            return np.ascontiguousarray(np.asarray(image, dtype=np.float16).astype(np.float32)[None, None])
        # Core ML converts colour images to luminance for grayscale inputs, as PIL's 'L' does.
        arr = np.asarray(image.convert("L"), dtype=np.float32)[None, None]
        return np.ascontiguousarray(arr)
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)  # RGBA/P/L/CMYK -> RGB, alpha dropped
    if feature.color_layout == "BGR":
        rgb = rgb[:, :, ::-1]
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])


def multiarray_to_array(value: Any, feature: FeatureDescription, model: Model) -> np.ndarray:
    """A numpy-like value -> float32 array of the declared shape (a size-preserving reshape is allowed)."""
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise CoreMLQualityError(
            f"cannot read the value for input '{feature.name}' as numbers ({exc})",
            path=model.path,
            field=f"input '{feature.name}'",
            expected="a numpy array",
        ) from None
    shape = tuple(feature.shape)
    if shape and arr.shape != shape:
        if arr.size != int(np.prod(shape)):
            raise CoreMLQualityError(
                f"array for input '{feature.name}' has shape {list(arr.shape)}",
                path=model.path,
                field=f"input '{feature.name}'",
                expected=f"shape {list(shape)}",
            )
        arr = arr.reshape(shape)
    return np.ascontiguousarray(arr)


def to_feeds(inputs: Mapping[str, Any], model: Model, graph_inputs: Mapping[str, tuple[Any, ...]]) -> dict[str, np.ndarray]:
    """Convert ``predict()`` inputs into onnxruntime feeds; complain about missing/unknown names."""
    feeds: dict[str, np.ndarray] = {}
    known = {f.name: f for f in model.inputs}
    unknown = sorted(set(inputs) - set(known))
    if unknown:
        raise CoreMLQualityError(
            f"predict() got unknown input(s) {', '.join(repr(u) for u in unknown)}",
            path=model.path,
            field="description.input",
            expected=f"inputs named {', '.join(repr(k) for k in known)}",
        )
    for name in graph_inputs:
        feature = known.get(name)
        if feature is None:  # pragma: no cover - translators only add declared inputs
            continue
        if name not in inputs:
            if feature.optional:
                continue
            raise CoreMLQualityError(
                f"predict() is missing input '{name}'", path=model.path, field="description.input",
                expected=f"a value for every input ({', '.join(repr(k) for k in known)})",
            )
        value = inputs[name]
        if feature.is_image:
            arr = image_to_array(value, feature, model)
        else:
            arr = multiarray_to_array(value, feature, model)
        expected = graph_inputs[name]
        if expected and all(isinstance(d, int) for d in expected) and arr.size == int(np.prod(expected)):
            arr = arr.reshape(expected)
        feeds[name] = arr
    return feeds


def array_to_image(arr: np.ndarray, feature: FeatureDescription) -> Image.Image:
    """float32 pixel values ``(1, C, H, W)``/``(C, H, W)``/``(H, W)`` -> PIL image, as Core ML returns it."""
    a = np.asarray(arr, dtype=np.float32)
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 2:
        a = a[None]
    if feature.color_layout == "GRAYSCALE_FLOAT16" and a.shape[0] == 1:
        # Core ML returns a float16 pixel buffer as a float ('F') image of the values themselves:
        # no clipping or rounding to 8 bits (a 0..1 matte would become 0s and 1s).
        return Image.fromarray(np.ascontiguousarray(a[0].astype(np.float16).astype(np.float32)), mode="F")
    pixels = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    if pixels.shape[0] == 1:
        return Image.fromarray(pixels[0])
    hwc = pixels.transpose(1, 2, 0)
    if feature.color_layout == "BGR":
        hwc = hwc[:, :, ::-1]
    return Image.fromarray(np.ascontiguousarray(hwc[:, :, :3]))


def from_outputs(values: Mapping[str, np.ndarray], model: Model) -> dict[str, Any]:
    """Session outputs -> Core ML-style outputs (PIL images, arrays in the declared dtype)."""
    out: dict[str, Any] = {}
    for feature in model.outputs:
        if feature.name not in values:
            continue
        value = values[feature.name]
        if feature.is_image:
            # Rounding to 8-bit pixels would turn NaN into a plausible 0: refuse it here.
            require_finite(value, model=model, output=feature.name)
            out[feature.name] = array_to_image(value, feature)
        elif feature.is_multiarray:
            dtype = _NUMPY_DTYPES.get(feature.dtype or "", np.float32)
            arr = np.asarray(value)
            if feature.shape and arr.shape != tuple(feature.shape) and arr.size == int(np.prod(feature.shape)):
                arr = arr.reshape(feature.shape)
            out[feature.name] = arr.astype(dtype, copy=False)
        else:
            out[feature.name] = np.asarray(value)
    return out
