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
* **Multiarray inputs** get float32 arrays of the declared shape, laid out NCHW or NHWC
  (``input_layout``: ``"auto"`` reads it from the shape, where a channel axis of 1 or 3
  tells; ``"NCHW"``/``"NHWC"`` say it where the shape does not), RGB channel
  order unless ``channel_order="BGR"``, normalised by ``normalization``:
  ``"0..1"`` (pixel/255, the default), ``"-0.5..0.5"`` (pixel/255 - 0.5),
  ``"-1..1"`` ((pixel/255 - 0.5) / 0.5), ``"0..255"`` (raw pixels), ``"imagenet"``
  ((pixel/255 - mean) / std with ImageNet statistics), or explicit
  ``"mean=0.5,0.5,0.5;std=0.25,0.25,0.25"`` (applied to pixel/255).
* **The mask output** is the output named ``output_name`` (``--coreml-output``), else
  the only image/multiarray output. Grayscale image outputs are divided by 255 (colour
  image outputs are not masks and are refused); multiarray outputs are read by the
  ``mask`` contract (:mod:`pytest_coreml_quality.masks`: ``auto``, ``prob``, ``logits``,
  ``channel:K``, ``class:K``). A Preprocessor left on ``auto`` decides on the first
  output it sees; the plugin decides once per model, from the base model, and passes
  the decided contract.
* The mask is resized back to the photo's size with **bilinear interpolation on the
  float values** (no 8-bit rounding) and returned as float32 in [0, 1];
  ``normalize_predictions=True`` then stretches it to span [0, 1] (the published
  protocol, as PySODMetrics does).
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

from pytest_coreml_quality.errors import PreprocessError, UnsupportedModelError
from pytest_coreml_quality.masks import MaskSpec, decide_auto, parse_mask_spec, read_mask, stretch
from pytest_coreml_quality.model import FeatureDescription, Model
from pytest_coreml_quality.output_checks import require_finite

SizePolicy = Literal["default", "closest", "largest"]
InputLayout = Literal["auto", "NCHW", "NHWC"]

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



@dataclass(frozen=True)
class PreprocessSettings:
    """How photos become inputs and outputs become masks (see the module docstring)."""

    input_name: str | None = None
    output_name: str | None = None
    resample: str = "lanczos"
    size_policy: SizePolicy = "default"
    normalization: str = "0..1"
    channel_order: Literal["RGB", "BGR"] = "RGB"
    input_layout: InputLayout = "auto"
    mask: str = "auto"  # a --coreml-mask value, see pytest_coreml_quality.masks
    normalize_predictions: bool = False
    # 'mask', or a tensor kind (catalogue.TENSOR_KINDS): outputs compared raw, none refused as "not a mask".
    output_kind: str = "mask"

    def __post_init__(self) -> None:
        if self.resample not in RESAMPLE_FILTERS:
            raise PreprocessError(
                f"unknown resample filter {self.resample!r}", field="resample", expected=f"one of {', '.join(RESAMPLE_FILTERS)}"
            )
        if self.size_policy not in ("default", "closest", "largest"):
            raise PreprocessError(
                f"unknown size policy {self.size_policy!r}", field="size_policy", expected="default, closest or largest"
            )
        parse_mask_spec(self.mask)
        if self.input_layout not in ("auto", "NCHW", "NHWC"):
            raise PreprocessError(f"unknown input layout {self.input_layout!r}", field="input_layout", expected="auto, NCHW or NHWC")
        if self.channel_order not in ("RGB", "BGR"):
            raise PreprocessError(f"unknown channel order {self.channel_order!r}", field="channel_order", expected="RGB or BGR")
        parse_normalization(self.normalization)

    def cache_key(self) -> str:
        """A canonical string of every setting: part of the prediction cache key."""
        settings = asdict(self)
        if settings["output_kind"] == "mask":  # masks keep the keys they had before tensor kinds existed
            del settings["output_kind"]
        return json.dumps(settings, sort_keys=True)


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
        # The mask contract; 'auto' is replaced by what the first output decides.
        self.mask_spec: MaskSpec = parse_mask_spec(self.settings.mask)
        self.mask_note: str | None = None

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
        if self.settings.output_kind != "mask":  # tensors: read by pytest_coreml_quality.tensors, every output
            return self.tensor_outputs()[0]
        if self.settings.output_name is not None:
            feature = self.model.output(self.settings.output_name)
            if not (feature.is_image or feature.is_multiarray):
                raise PreprocessError(
                    f"output '{feature.name}' is a {feature.type}",
                    path=self.model.path,
                    field="--coreml-output",
                    expected="an image or multiarray output",
                )
            return self._refuse_colour_image(feature)
        candidates = [f for f in self.model.outputs if f.is_image or f.is_multiarray]
        if len(candidates) != 1:
            names = ", ".join(f"'{f.name}' ({f.type})" for f in self.model.outputs) or "none"
            raise PreprocessError(
                f"has {len(candidates)} image/multiarray outputs: {names}; cannot tell which one is the mask",
                path=self.model.path,
                field="--coreml-output",
                expected="the name of the mask output",
            )
        return self._refuse_colour_image(candidates[0])

    def tensor_outputs(self) -> list[FeatureDescription]:
        """The outputs compared as tensors: the one ``--coreml-output`` names, else every image/multiarray output."""
        if self.settings.output_name is not None:
            return [self.model.output(self.settings.output_name)]
        if self.settings.output_kind == "classifier":  # the class-probability dictionary
            found = [f for f in self.model.outputs if f.type == "dictionary"]
        else:
            found = [f for f in self.model.outputs if f.is_image or f.is_multiarray]
        if not found:
            names = ", ".join(f"'{f.name}' ({f.type})" for f in self.model.outputs) or "none"
            raise UnsupportedModelError(
                f"has no image/multiarray output to compare: {names}", path=self.model.path, expected="an image or multiarray output"
            )
        return found

    def _refuse_colour_image(self, feature: FeatureDescription) -> FeatureDescription:
        # Its luminance would score as a plausible but meaningless mask.
        if feature.is_image and feature.channels == 3:
            raise UnsupportedModelError(
                f"output '{feature.name}' is an {feature.color_layout} image output: not a mask; "
                "this looks like style transfer or super-resolution, compared with the base model's image "
                "by --coreml-output-kind=tensor",
                path=self.model.path,
                expected="a grayscale image or multiarray mask output (--coreml-output names it)",
            )
        return feature

    @property
    def input_layout(self) -> str:
        """NCHW or NHWC for a multiarray input (see ``input_layout`` in the settings)."""
        shape = tuple(self.input.shape)
        return self._input_layout(self.input, (1, *shape) if len(shape) == 3 else shape)

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
        """(N, C, H, W) of a multiarray input laid out NCHW/CHW or NHWC/HWC, with 1 or 3 channels."""
        shape = tuple(f.shape)
        if len(shape) == 3:
            shape = (1, *shape)
        expected = "(1, C, H, W), (C, H, W), (1, H, W, C) or (H, W, C) with C = 1 or 3"
        if len(shape) != 4 or shape[0] != 1 or min(shape) <= 0:
            raise UnsupportedModelError(f"multiarray input '{f.name}' has shape {f.shape}", path=self.model.path, expected=expected)
        layout = self._input_layout(f, shape)
        n, a, b, c = shape
        return (n, a, b, c) if layout == "NCHW" else (n, c, a, b)

    def _input_layout(self, f: FeatureDescription, shape: tuple[int, ...]) -> str:
        """NCHW or NHWC: as set, else read from which axis can hold 1 or 3 channels."""
        chw_ok, hwc_ok = shape[1] in (1, 3), shape[3] in (1, 3)
        layout = self.settings.input_layout
        if layout == "auto":
            if chw_ok and hwc_ok:
                raise PreprocessError(
                    f"multiarray input '{f.name}' has shape {f.shape}: its channels may be first or last",
                    path=self.model.path,
                    field="--coreml-input-layout",
                    expected="NCHW or NHWC",
                )
            layout = "NHWC" if hwc_ok else "NCHW"
        if not (chw_ok if layout == "NCHW" else hwc_ok):
            raise UnsupportedModelError(
                f"multiarray input '{f.name}' has shape {f.shape}, not {layout} with 1 or 3 channels",
                path=self.model.path,
                expected="(1, C, H, W) or (C, H, W) for NCHW, (1, H, W, C) or (H, W, C) for NHWC, with C = 1 or 3",
            )
        return layout

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
        if self.input_layout == "NHWC":
            arr = arr.transpose(1, 2, 0)
        return arr.astype(np.float32).reshape(self.input.shape)

    # --- output side ------------------------------------------------------------------
    def mask_from(
        self, outputs: Mapping[str, Any], image_size: tuple[int, int], image: str | None = None
    ) -> NDArray[np.float32]:
        """The float32 mask in [0, 1] at ``image_size`` (width, height) from ``predict``'s outputs.

        ``image`` (the sample id) is named in the error when the output holds NaN or infinities.
        """
        name = self.output.name
        if name not in outputs:
            raise UnsupportedModelError(
                f"prediction has no output '{name}' (got {', '.join(map(repr, outputs)) or 'none'})", path=self.model.path
            )
        require_finite(outputs[name], model=self.model, output=name, image=image)
        mask = resize_mask(self._to_probabilities(outputs[name]), image_size)
        return stretch(mask) if self.settings.normalize_predictions else mask

    def _to_probabilities(self, value: Any) -> NDArray[np.float64]:
        name = self.output.name
        if isinstance(value, Image.Image):
            if len(value.getbands()) >= 3:
                raise UnsupportedModelError(
                    f"output '{name}' is an {value.mode} image output: not a mask", path=self.model.path, expected="a grayscale mask"
                )
            if self.mask_spec.kind == "class" and value.mode != "F":
                # A class-index map: the pixel values are the classes, read by the contract below.
                return read_mask(np.asarray(value), self.mask_spec, name)
            if value.mode in ("I", "I;16"):
                return np.asarray(value, dtype=np.float64) / 65535.0
            if value.mode != "F":
                return np.asarray(value.convert("L"), dtype=np.float64) / 255.0
            # A float (GRAYSCALE_FLOAT16) image holds the model's values themselves, in whatever
            # range the model emits: read like a one-channel array, under the --coreml-mask contract
            # ('auto' takes values in [0, 1] as probabilities and refuses anything else).
            value = np.asarray(value, dtype=np.float32)
        if self.mask_spec.kind == "auto":
            self.mask_spec, self.mask_note = decide_auto(value, name)
        return read_mask(value, self.mask_spec, name)


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
