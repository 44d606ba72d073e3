"""Image-input ML Programs through the whole path: PIL image in, the program's own
scale/bias ops, grayscale image out (``sigmoid * 255``), via the onnx backend and via the
raw translator runner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch builds the ML Program test models (test-only dependency)")

import torch
from PIL import Image
from torch import nn

from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.base import RuntimeOptions
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend
from tests.runtime import mil_zoo

pytestmark = pytest.mark.filterwarnings("ignore")

SIZE = 32
SCALE = 1 / 255
BIAS = {"RGB": [-0.5, -0.4, -0.3], "BGR": [-0.3, -0.5, -0.2]}


class MaskNet(nn.Module):
    """A tiny segmentation net whose output is a probability map scaled to 0..255."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _pool_up(torch.relu(self.c1(x)))
        return torch.sigmoid(self.c2(y) * 3) * 255


def _pool_up(x: torch.Tensor) -> torch.Tensor:
    """Max pool then bilinear upsample back, plus the input: an ISNet-like skip."""
    pooled = nn.functional.max_pool2d(x, 2)
    return nn.functional.interpolate(pooled, scale_factor=2, mode="bilinear", align_corners=False) + x


@pytest.fixture(scope="module")
def mask_net() -> nn.Module:
    torch.manual_seed(5)
    return MaskNet().eval()


@pytest.fixture(scope="module")
def image_models(tmp_path_factory: pytest.TempPathFactory, mask_net: nn.Module) -> dict[tuple[str, str], Path]:
    import coremltools as ct

    root = tmp_path_factory.mktemp("mil_image")
    out = {}
    for layout, precision in (("RGB", "fp16"), ("BGR", "fp32")):
        image = ct.ImageType(
            name="x_1", shape=(1, 3, SIZE, SIZE), scale=SCALE, bias=BIAS[layout], color_layout=getattr(ct.colorlayout, layout)
        )
        mask = ct.ImageType(name="activation_out", color_layout=ct.colorlayout.GRAYSCALE)
        out[(layout, precision)] = mil_zoo.convert(
            mask_net, (1, 3, SIZE, SIZE), root / f"img_{layout}_{precision}.mlpackage", precision, inputs=[image], outputs=[mask]
        )
    return out


def _photo(seed: int = 2) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
    return Image.fromarray(small).resize((SIZE, SIZE), Image.BILINEAR)


def _reference(net: nn.Module, photo: Image.Image, layout: str) -> np.ndarray:
    pixels = np.asarray(photo, dtype=np.float32).transpose(2, 0, 1)  # RGB
    if layout == "BGR":
        pixels = pixels[::-1]
    x = pixels[None] * SCALE + np.asarray(BIAS[layout], dtype=np.float32).reshape(1, 3, 1, 1)
    return mil_zoo.torch_out(net, np.ascontiguousarray(x, dtype=np.float32))[0, 0]


@pytest.mark.parametrize("layout,precision", [("RGB", "fp16"), ("BGR", "fp32")])
def test_image_program_through_backend(layout: str, precision: str, image_models: Any, mask_net: nn.Module, tmp_path: Path) -> None:
    model = Model.open(image_models[(layout, precision)])
    assert model.input("x_1").preprocessing.bias == pytest.approx(BIAS[layout])
    predictor = OnnxBackend().load(model, RuntimeOptions(cache_dir=tmp_path))
    photo = _photo()
    out = predictor.predict({"x_1": photo})["activation_out"]
    assert isinstance(out, Image.Image) and out.mode == "L" and out.size == (SIZE, SIZE)
    ref = _reference(mask_net, photo, layout)
    expected = np.clip(np.round(ref), 0, 255)
    got = np.asarray(out, dtype=np.float32)
    # Rounding to 8-bit pixels: off by at most one level (fp16 programs: values near x.5 may flip).
    assert np.abs(got - expected).max() <= 1
    assert got.std() > 5  # a real mask, not a constant image


def test_image_program_raw_pixels(image_models: Any, mask_net: nn.Module) -> None:
    """The translated graph takes raw 0..255 pixels in layout order and applies scale/bias itself."""
    photo = _photo(7)
    pixels = np.asarray(photo, dtype=np.float32).transpose(2, 0, 1)[::-1][None]  # BGR
    got = mil_zoo.run(image_models[("BGR", "fp32")], {"x_1": np.ascontiguousarray(pixels)})["activation_out"]
    ref = _reference(mask_net, photo, "BGR")
    assert np.abs(got[0, 0] - ref).max() <= 255 * 1e-4


# --- float16 grayscale images (matting models: GRAYSCALE_FLOAT16 in and out) ---------------------


class MatteNet(nn.Module):
    """One gray channel in, a 0..1 matte out (no * 255: a float16 image holds the value itself)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.c2(torch.relu(self.c1(x / 64 - 2))))


@pytest.fixture(scope="module")
def float16_matte(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    import coremltools as ct

    torch.manual_seed(9)
    net = MatteNet().eval()
    image = ct.ImageType(name="x_1", shape=(1, 1, SIZE, SIZE), color_layout=ct.colorlayout.GRAYSCALE_FLOAT16)
    matte = ct.ImageType(name="matte", color_layout=ct.colorlayout.GRAYSCALE_FLOAT16)
    path = tmp_path_factory.mktemp("mil_f16") / "matte.mlpackage"
    return mil_zoo.convert(net, (1, 1, SIZE, SIZE), path, "fp16", inputs=[image], outputs=[matte]), net


def test_float16_grayscale_output_is_a_float_image(float16_matte: Any, tmp_path: Path) -> None:
    """Core ML returns a GRAYSCALE_FLOAT16 output as a float ('F') image of the values themselves;
    it was rounded to 8 bits, turning a 0..1 matte into 0s and 1s."""
    path, net = float16_matte
    photo = _photo(4).convert("F")
    out = OnnxBackend().load(Model.open(path), RuntimeOptions(cache_dir=tmp_path)).predict({"x_1": photo})["matte"]
    assert isinstance(out, Image.Image) and out.mode == "F" and out.size == (SIZE, SIZE)
    ref = mil_zoo.torch_out(net, np.asarray(photo, dtype=np.float32)[None, None])[0, 0]
    got = np.asarray(out, dtype=np.float32)
    assert np.abs(got - ref).max() < 4e-3  # float16 arithmetic
    assert got.std() > 0.005  # a matte, not a constant


def test_float16_grayscale_output_is_read_as_a_matte(float16_matte: Any, tmp_path: Path) -> None:
    from pytest_coreml_quality.preprocess import PreprocessSettings, Preprocessor

    path, net = float16_matte
    model = Model.open(path)
    pre = Preprocessor(model, PreprocessSettings())
    photo = _photo(6)
    outputs = OnnxBackend().load(model, RuntimeOptions(cache_dir=tmp_path)).predict(pre.prepare(photo))
    mask = pre.mask_from(outputs, photo.size)
    ref = mil_zoo.torch_out(net, np.asarray(photo.convert("F"), dtype=np.float32)[None, None])[0, 0]
    assert np.abs(mask - ref).max() < 4e-3  # the values themselves, not divided by 255


def test_float16_image_models_do_not_reuse_masks_cached_by_older_versions(float16_matte: Any) -> None:
    """Masks cached before float16 images were read as values hold the 8-bit reading: another key."""
    from pytest_coreml_quality.evaluate import _read_salt

    from tests.conftest import FIXTURES

    assert _read_salt(Model.open(float16_matte[0])) != ""
    assert _read_salt(Model.open(FIXTURES / "models" / "TinySeg.mlpackage")) == ""  # other keys unchanged
