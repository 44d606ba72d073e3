"""Turn golden-set photos into model inputs, and model outputs into masks, from the model itself.

Everything is read from the model's own input/output description (:class:`Model`):

* **Image inputs** get a PIL image of exactly the input's size (what Core ML requires),
  resized with LANCZOS by default (as the article does; configurable), stretched
  without keeping the aspect ratio. Colour inputs (RGB *and* BGR) get an RGB PIL image
  and grayscale inputs an ``L`` image: the runtime, like Core ML, swaps channels
  for BGR and applies the input's ``scale``/``bias`` itself, so they are *not*
  applied here (applying them twice was a classic way to get plausible wrong masks).
* **Flexible image sizes** follow ``size_policy``: ``"default"`` (the size the model
  declares as its default; same input size for every photo), ``"closest"`` (the
  enumerated size nearest to the photo's, in log scale; for ranges, the photo's own
  size clamped into the range) or ``"largest"`` (the largest enumerated size; for
  ranges, each dimension's upper bound, or the photo's size where unbounded).
* **Multiarray inputs** get float32 NCHW arrays of the declared shape, RGB channel
  order unless ``channel_order="BGR"``, normalised by ``normalization``:
  ``"0..1"`` (pixel/255, the default), ``"-0.5..0.5"`` (pixel/255 - 0.5),
  ``"-1..1"`` ((pixel/255 - 0.5) / 0.5), ``"0..255"`` (raw pixels), ``"imagenet"``
  ((pixel/255 - mean) / std with ImageNet statistics), or explicit
  ``"mean=0.5,0.5,0.5;std=0.25,0.25,0.25"`` (applied to pixel/255).
* **The mask output** is the output named ``output_name`` (``--coreml-output``), else
  the only image/multiarray output. Grayscale image outputs are divided by 255;
  multiarray outputs are probabilities (``output_kind="probabilities"``; values
  outside [0, 1] by more than 1e-3 are an error, not clipped away silently) or logits
  (``output_kind="logits"``: a sigmoid is applied).
* The mask is resized back to the photo's size with **bilinear interpolation on the
  float values** (no 8-bit rounding) and returned as float32 in [0, 1].
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from pytest_coreml_quality.errors import CoreMLQualityError, UnsupportedModelError
from pytest_coreml_quality.model import FeatureDescription, Model

SizePolicy = Literal["default", "closest", "largest"]
OutputKind = Literal["probabilities", "logits"]

RESAMPLE_FILTERS: dict[str, Image.Resampling] = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "nearest": Image.Resampling.NEAREST,
}

# name -> (scale applied to 0..255 pixels, per-channel mean, per-channel std), RGB order.
NAMED_NORMALIZATIONS: dict[str, tuple[float, tuple[float, ...], tuple[float, ...]]] = {
    "0..1": (1 / 255, (0.0,), (1.0,)),
    "-0.5..0.5": (1 / 255, (0.5,), (1.0,)),
    "-1..1": (1 / 255, (0.5,), (0.5,)),
    "0..255": (1.0, (0.0,), (1.0,)),
    "imagenet": (1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

# A probability output may overshoot [0, 1] by float rounding, not by more.
_PROBABILITY_TOLERANCE = 1e-3


class PreprocessError(CoreMLQualityError):
    """The preprocessing settings do not fit the model (bad option value, ambiguous output)."""


@dataclass(frozen=True)
class PreprocessSettings:
    """How photos become inputs and outputs become masks (see the module docstring)."""

    input_name: str | None = None
    output_name: str | None = None
    resample: str = "lanczos"
    size_policy: SizePolicy = "default"
    normalization: str = "0..1"
    channel_order: Literal["RGB", "BGR"] = "RGB"
    output_kind: OutputKind = "probabilities"

    def __post_init__(self) -> None:
        if self.resample not in RESAMPLE_FILTERS:
            raise PreprocessError(
                f"unknown resample filter {self.resample!r}", field="resample", expected=f"one of {', '.join(RESAMPLE_FILTERS)}"
            )
        if self.size_policy not in ("default", "closest", "largest"):
            raise PreprocessError(
                f"unknown size policy {self.size_policy!r}", field="size_policy", expected="default, closest or largest"
            )
        if self.output_kind not in ("probabilities", "logits"):
            raise PreprocessError(
                f"unknown output kind {self.output_kind!r}", field="output_kind", expected="probabilities or logits"
            )
        if self.channel_order not in ("RGB", "BGR"):
            raise PreprocessError(f"unknown channel order {self.channel_order!r}", field="channel_order", expected="RGB or BGR")
        parse_normalization(self.normalization)

    def cache_key(self) -> str:
        """A canonical string of every setting: part of the prediction cache key."""
        return json.dumps(asdict(self), sort_keys=True)


def parse_normalization(spec: str) -> tuple[float, tuple[float, ...], tuple[float, ...]]:
    """``(scale, mean, std)`` of a named or explicit normalisation (see the module docstring)."""
    if spec in NAMED_NORMALIZATIONS:
        return NAMED_NORMALIZATIONS[spec]
    parts = dict(p.split("=", 1) for p in spec.replace(" ", "").split(";") if "=" in p)
    try:
        mean = tuple(float(v) for v in parts["mean"].split(","))
        std = tuple(float(v) for v in parts["std"].split(","))
    except (KeyError, ValueError):
        raise PreprocessError(
            f"unknown normalization {spec!r}",
            field="normalization",
            expected=f"one of {', '.join(NAMED_NORMALIZATIONS)} or 'mean=a,b,c;std=d,e,f'",
        ) from None
    # A zero std divides by zero; NaN or infinity would turn every input into NaN or 0.
    finite = all(math.isfinite(v) for v in (*mean, *std))
    if len(mean) not in (1, 3) or len(std) not in (1, 3) or not finite or any(s == 0 for s in std):
        raise PreprocessError(
            f"bad normalization {spec!r}", field="normalization", expected="1 or 3 finite means and 1 or 3 finite non-zero stds"
        )
    return 1 / 255, mean, std


class Preprocessor:
    """Preprocessing and postprocessing for one model, following its own description."""

    def __init__(self, model: Model, settings: PreprocessSettings | None = None) -> None:
        self.model = model
        self.settings = settings or PreprocessSettings()
        self.input = self._pick_input()
        self.output = self._pick_output()

    # --- features ---------------------------------------------------------------------
    def _pick_input(self) -> FeatureDescription:
        if self.settings.input_name is not None:
            feature = self.model.input(self.settings.input_name)
        else:
            required = [f for f in self.model.inputs if not f.optional]
            if len(required) != 1:
                names = ", ".join(repr(f.name) for f in required)
                raise PreprocessError(
                    f"has {len(required)} required inputs ({names}); this plugin feeds one photo",
                    path=self.model.path,
                    field="description.input",
                    expected="a single image or multiarray input",
                )
            feature = required[0]
        if not (feature.is_image or feature.is_multiarray):
            raise UnsupportedModelError(
                f"input '{feature.name}' is a {feature.type}", path=self.model.path, expected="an image or multiarray input"
            )
        if feature.is_multiarray:
            self._array_layout(feature)  # fail now, not at the first photo
        return feature

    def _pick_output(self) -> FeatureDescription:
        if self.settings.output_name is not None:
            feature = self.model.output(self.settings.output_name)
            if not (feature.is_image or feature.is_multiarray):
                raise PreprocessError(
                    f"output '{feature.name}' is a {feature.type}",
                    path=self.model.path,
                    field="--coreml-output",
                    expected="an image or multiarray output",
                )
            return feature
        candidates = [f for f in self.model.outputs if f.is_image or f.is_multiarray]
        if len(candidates) != 1:
            names = ", ".join(f"'{f.name}' ({f.type})" for f in self.model.outputs) or "none"
            raise PreprocessError(
                f"has {len(candidates)} image/multiarray outputs: {names}; cannot tell which one is the mask",
                path=self.model.path,
                field="--coreml-output",
                expected="the name of the mask output",
            )
        return candidates[0]

    # --- input side -------------------------------------------------------------------
    def target_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """(width, height) the photo is resized to, for a photo of ``image_size``."""
        f = self.input
        if f.is_multiarray:
            _, _, h, w = self._array_layout(f)
            return w, h
        default = (f.width, f.height) if f.width and f.height else None
        policy = self.settings.size_policy
        if f.enumerated_sizes:
            sizes = list(f.enumerated_sizes)
            if policy == "largest":
                return max(sizes, key=lambda s: (s[0] * s[1], s))
            if policy == "closest":
                return min(sizes, key=lambda s: (_log_distance(s, image_size), s))
            return default if default in sizes else sizes[0]  # type: ignore[return-value]
        if f.size_ranges:
            (wmin, wmax), (hmin, hmax) = f.size_ranges
            if policy == "default" and default is not None:
                return default
            width, height = _clamp(image_size[0], wmin, wmax), _clamp(image_size[1], hmin, hmax)
            if policy == "largest":  # the upper bound of each bounded dimension
                width, height = (wmax if wmax > 0 else width), (hmax if hmax > 0 else height)
            return width, height
        if default is None:
            raise UnsupportedModelError(
                f"image input '{f.name}' declares no size", path=self.model.path, expected="a width and height"
            )
        return default

    def prepare(self, image: Image.Image) -> dict[str, Any]:
        """The ``predict`` input dict for one RGB photo."""
        size = self.target_size(image.size)
        resample = RESAMPLE_FILTERS[self.settings.resample]
        resized = image if image.size == size else image.resize(size, resample)
        f = self.input
        if f.is_image:
            if f.color_layout == "GRAYSCALE":
                return {f.name: resized.convert("L")}
            if f.color_layout == "GRAYSCALE_FLOAT16":
                return {f.name: resized.convert("F")}
            return {f.name: resized.convert("RGB")}
        return {f.name: self._to_array(resized)}

    def _array_layout(self, f: FeatureDescription) -> tuple[int, int, int, int]:
        """(N, C, H, W) of a multiarray input: NCHW or CHW with 1 or 3 channels."""
        shape = tuple(f.shape)
        if len(shape) == 3:
            shape = (1, *shape)
        if len(shape) != 4 or shape[0] != 1 or shape[1] not in (1, 3) or min(shape) <= 0:
            raise UnsupportedModelError(
                f"multiarray input '{f.name}' has shape {f.shape}",
                path=self.model.path,
                expected="(1, C, H, W) or (C, H, W) with C = 1 or 3",
            )
        return shape  # type: ignore[return-value]

    def _to_array(self, image: Image.Image) -> NDArray[np.float32]:
        _, channels, _, _ = self._array_layout(self.input)
        scale, mean, std = parse_normalization(self.settings.normalization)
        if channels == 1:
            pixels = np.asarray(image.convert("L"), dtype=np.float64)[None]
            mean, std = mean[:1], std[:1]
        else:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float64).transpose(2, 0, 1)
            if self.settings.channel_order == "BGR":
                pixels = pixels[::-1]
                mean, std = mean[::-1], std[::-1]
        m = np.asarray(mean, dtype=np.float64).reshape(-1, 1, 1)
        s = np.asarray(std, dtype=np.float64).reshape(-1, 1, 1)
        arr = (pixels * scale - m) / s
        return arr.astype(np.float32).reshape(self.input.shape)

    # --- output side ------------------------------------------------------------------
    def mask_from(self, outputs: Mapping[str, Any], image_size: tuple[int, int]) -> NDArray[np.float32]:
        """The float32 mask in [0, 1] at ``image_size`` (width, height) from ``predict``'s outputs."""
        name = self.output.name
        if name not in outputs:
            raise UnsupportedModelError(
                f"prediction has no output '{name}' (got {', '.join(map(repr, outputs)) or 'none'})", path=self.model.path
            )
        mask = self._to_probabilities(outputs[name])
        return resize_mask(mask, image_size)

    def _to_probabilities(self, value: Any) -> NDArray[np.float64]:
        name = self.output.name
        if isinstance(value, Image.Image):
            if value.mode in ("F", "I", "I;16"):
                arr = np.asarray(value, dtype=np.float64)
                # Float16 grayscale outputs hold 0..1 when the model says so; 8/16-bit hold 0..255/65535.
                arr = arr / 65535.0 if value.mode.startswith("I") else arr / 255.0
            else:
                arr = np.asarray(value.convert("L"), dtype=np.float64) / 255.0
            return arr
        arr = np.asarray(value, dtype=np.float64)
        squeezed = arr.reshape([d for d in arr.shape if d != 1]) if arr.ndim > 2 else arr
        if squeezed.ndim != 2:
            raise UnsupportedModelError(
                f"output '{name}' has shape {arr.shape}", path=self.model.path, expected="one mask channel, e.g. (1, 1, H, W)"
            )
        if self.settings.output_kind == "logits":
            with np.errstate(over="ignore"):
                return 1.0 / (1.0 + np.exp(-squeezed))
        if squeezed.size and (
            not np.isfinite(squeezed).all()
            or squeezed.min() < -_PROBABILITY_TOLERANCE
            or squeezed.max() > 1 + _PROBABILITY_TOLERANCE
        ):
            raise PreprocessError(
                f"output '{name}' has values in [{squeezed.min():.4g}, {squeezed.max():.4g}], not probabilities",
                path=self.model.path,
                field="output_kind",
                expected="probabilities in [0, 1], or output_kind='logits' to apply a sigmoid",
            )
        return np.clip(squeezed, 0.0, 1.0)


def resize_mask(mask: NDArray[Any], size: tuple[int, int]) -> NDArray[np.float32]:
    """Bilinear resize of a float mask to ``size`` (width, height), kept in [0, 1] float32."""
    arr = np.asarray(mask, dtype=np.float32)
    if (arr.shape[1], arr.shape[0]) != tuple(size):
        arr = np.asarray(Image.fromarray(arr, mode="F").resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    return np.clip(arr, 0.0, 1.0)


def _log_distance(size: tuple[int, int], target: tuple[int, int]) -> float:
    return abs(math.log(size[0] / target[0])) + abs(math.log(size[1] / target[1]))


def _clamp(value: int, low: int, high: int) -> int:
    value = max(value, low)
    return min(value, high) if high > 0 else value


__all__ = [
    "NAMED_NORMALIZATIONS",
    "PreprocessError",
    "PreprocessSettings",
    "Preprocessor",
    "RESAMPLE_FILTERS",
    "parse_normalization",
    "resize_mask",
]
