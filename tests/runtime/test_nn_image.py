"""Image models through the whole path: PIL image in, scale/bias preprocessing, image out."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch", reason="torch builds the test models (test extra)")

from torch import nn  # noqa: E402

from pytest_coreml_quality.errors import CoreMLQualityError  # noqa: E402
from pytest_coreml_quality.model import Model  # noqa: E402
from pytest_coreml_quality.runtime.base import RuntimeOptions  # noqa: E402
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend  # noqa: E402

SIZE = 32
SCALE = 1 / 255.0
BIAS = {"RGB": [-0.5, -0.25, 0.1], "BGR": [0.2, -0.4, -0.1], "GRAYSCALE": [-0.3]}


class TinySeg(nn.Module):
    """conv -> relu -> conv -> sigmoid * 255: a mask in 0..255 like ISNet's image output."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.c1 = nn.Conv2d(channels, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.c2(torch.relu(self.c1(x))) * 3) * 255


def _convert(layout: str, path: Path) -> tuple[Path, nn.Module]:
    import coremltools as ct

    channels = 1 if layout == "GRAYSCALE" else 3
    module = TinySeg(channels).eval()
    bias = BIAS[layout] if channels == 3 else BIAS[layout][0]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, torch.rand(1, channels, SIZE, SIZE))
        ml = ct.convert(
            traced,
            convert_to="neuralnetwork",
            inputs=[ct.ImageType(name="image", shape=(1, channels, SIZE, SIZE), scale=SCALE, bias=bias,
                                 color_layout=getattr(ct.colorlayout, layout))],
            outputs=[ct.ImageType(name="mask", color_layout=ct.colorlayout.GRAYSCALE)],
        )
    ml.save(str(path))
    return path, module


@pytest.fixture(scope="module")
def image_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, nn.Module]]:
    d = tmp_path_factory.mktemp("nn-image")
    return {layout: _convert(layout, d / f"seg_{layout}.mlmodel") for layout in BIAS}


def _photo(seed: int = 0) -> Image.Image:
    rgb = (np.random.default_rng(seed).random((SIZE, SIZE, 3)) * 255).astype(np.uint8)
    return Image.fromarray(rgb)


def _reference(module: nn.Module, pixels_chw: np.ndarray, layout: str) -> np.ndarray:
    bias = np.asarray(BIAS[layout], np.float32).reshape(-1, 1, 1)
    x = pixels_chw.astype(np.float32) * np.float32(SCALE) + bias
    with torch.no_grad():
        y = module(torch.from_numpy(x[None])).numpy()[0, 0]
    return np.clip(np.rint(y), 0, 255)


@pytest.mark.parametrize("layout", sorted(BIAS))
def test_image_in_image_out_matches_pytorch(layout: str, image_models: dict, fp32_options: RuntimeOptions) -> None:
    path, module = image_models[layout]
    model = Model.open(path)
    photo = _photo()
    rgb = np.asarray(photo).transpose(2, 0, 1)
    if layout == "BGR":
        pixels = rgb[::-1]
    elif layout == "GRAYSCALE":
        pixels = np.asarray(photo.convert("L"))[None]
    else:
        pixels = rgb
    out = OnnxBackend().load(model, fp32_options).predict({"image": photo})
    mask = out["mask"]
    assert isinstance(mask, Image.Image) and mask.mode == "L" and mask.size == (SIZE, SIZE)
    ref = _reference(module, pixels, layout)
    diff = np.abs(np.asarray(mask, np.float32) - ref)
    # Rounding x.5 values may go either way after float noise: at most one grey level.
    assert diff.max() <= 1
    assert np.mean(diff == 0) > 0.95


def test_rgba_and_grayscale_photos_are_converted_like_core_ml(image_models: dict, fp32_options: RuntimeOptions) -> None:
    path, _ = image_models["RGB"]
    predictor = OnnxBackend().load(Model.open(path), fp32_options)
    photo = _photo(1)
    rgba = photo.convert("RGBA")
    assert np.array_equal(np.asarray(predictor.predict({"image": rgba})["mask"]),
                          np.asarray(predictor.predict({"image": photo})["mask"]))
    gray = photo.convert("L")
    assert np.array_equal(np.asarray(predictor.predict({"image": gray})["mask"]),
                          np.asarray(predictor.predict({"image": gray.convert("RGB")})["mask"]))


def test_wrong_image_size_is_a_clear_error(image_models: dict, fp32_options: RuntimeOptions) -> None:
    path, _ = image_models["RGB"]
    predictor = OnnxBackend().load(Model.open(path), fp32_options)
    with pytest.raises(CoreMLQualityError) as info:
        predictor.predict({"image": _photo().resize((SIZE + 8, SIZE))})
    text = str(info.value)
    assert path.name in text and "'image'" in text and f"{SIZE + 8}x{SIZE}" in text and f"{SIZE}x{SIZE}" in text


def test_missing_and_unknown_inputs_are_clear_errors(image_models: dict, fp32_options: RuntimeOptions) -> None:
    path, _ = image_models["RGB"]
    predictor = OnnxBackend().load(Model.open(path), fp32_options)
    with pytest.raises(CoreMLQualityError, match="missing input 'image'"):
        predictor.predict({})
    with pytest.raises(CoreMLQualityError, match="unknown input.*'photo'"):
        predictor.predict({"image": _photo(), "photo": _photo()})
    with pytest.raises(CoreMLQualityError, match="PIL.Image"):
        predictor.predict({"image": np.zeros((SIZE, SIZE, 3))})
