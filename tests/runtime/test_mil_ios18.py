"""The iOS18 fixture (``fixtures/models/TinySeg18.mlpackage``, CoreML8 opset) and two of its
iOS18-only compressed variants through the onnx backend, against TinySeg.mlpackage (iOS16)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.base import RuntimeOptions
from pytest_coreml_quality.variants import build_variant
from tests.runtime import mil_crosscheck

pytestmark = pytest.mark.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "fixtures" / "models"
GOLDEN = ROOT / "fixtures" / "golden" / "images"
SIZE = 128
SAMPLES = 6  # golden images, resized to the model's input


def _open(name: str) -> Model:
    path = MODELS / name
    if not path.exists():
        pytest.skip(f"fixtures/models/{name} is missing: run fixtures/make_fixtures.py")
    return Model.open(path)


@pytest.fixture(scope="module")
def onnx_backend():
    module = pytest.importorskip("pytest_coreml_quality.runtime.onnx.backend")
    return module.OnnxBackend()


@pytest.fixture(scope="module")
def options(tmp_path_factory: pytest.TempPathFactory) -> RuntimeOptions:
    return RuntimeOptions(cache_dir=tmp_path_factory.mktemp("onnx_ios18"))


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    paths = sorted(GOLDEN.glob("scene_*"))[:SAMPLES]
    out = []
    for path in paths:
        with Image.open(path) as img:
            out.append(ImageOps.exif_transpose(img).convert("RGB").resize((SIZE, SIZE), Image.Resampling.LANCZOS))
    return out


def _probabilities(backend, model: Model, options: RuntimeOptions, images: list[Image.Image]) -> np.ndarray:
    predictor = backend.load(model, options)
    try:
        outs = [predictor.predict({"x_1": image})["activation_out"] for image in images]
    finally:
        backend.evict(model, options)
    maps = [np.asarray(out.convert("L") if isinstance(out, Image.Image) else out, dtype=np.float32).reshape(SIZE, SIZE) for out in outs]
    return np.stack(maps) / 255.0


@pytest.fixture(scope="module")
def ios16_probabilities(onnx_backend, options, images) -> np.ndarray:
    return _probabilities(onnx_backend, _open("TinySeg.mlpackage"), options, images)


def test_ios18_fixture_matches_the_ios16_package(onnx_backend, options, images, ios16_probabilities) -> None:
    # Same fp16 weights and graph, only the opset differs: the 8-bit grayscale outputs agree
    # to one level, the 0.5 masks to a handful of border pixels.
    got = _probabilities(onnx_backend, _open("TinySeg18.mlpackage"), options, images)
    assert np.abs(got - ios16_probabilities).max() <= 1.5 / 255
    assert ((got > 0.5) != (ios16_probabilities > 0.5)).mean() < 0.001


@pytest.mark.parametrize(("recipe", "max_flip"), [("int4-block32", 0.005), ("prune50+pal4", 0.015)])
def test_ios18_variants_run_and_keep_the_mask(
    onnx_backend, options, images, ios16_probabilities, tmp_path_factory: pytest.TempPathFactory, recipe: str, max_flip: float
) -> None:
    # fp16 program with 4-bit (per-block / palettized sparse) weights: the probabilities move,
    # but the 0.5 masks differ from the iOS16 base in under 0.5 % (int4-block32) and 1.5 %
    # (prune50+pal4) of the pixels (measured 0.04 % and 0.36 % with coremltools 9).
    variant = build_variant(_open("TinySeg18.mlpackage"), recipe, tmp_path_factory.mktemp("ios18-variants"))
    mil_crosscheck.assert_same_translation(variant.open().path)  # the protobuf reader gives coremltools' graph
    got = _probabilities(onnx_backend, variant.open(), options, images)
    flips = ((got > 0.5) != (ios16_probabilities > 0.5)).mean()
    assert flips < max_flip, flips
    assert np.abs(got - ios16_probabilities).mean() < 0.02
