"""The project's committed NeuralNetwork fixtures run through the onnx backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.base import RuntimeOptions
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend

MODELS = Path(__file__).resolve().parents[2] / "fixtures" / "models"


def _open(name: str) -> Model:
    path = MODELS / name
    if not path.exists():
        pytest.skip(f"{path} has not been generated (fixtures/make_fixtures.py)")
    return Model.open(path)


def test_tinyseg_image_model_returns_a_mask_image(fp32_options: RuntimeOptions) -> None:
    model = _open("TinySeg.mlmodel")
    feature = model.inputs[0]
    photo = Image.fromarray((np.random.default_rng(0).random((feature.height, feature.width, 3)) * 255).astype(np.uint8))
    out = OnnxBackend().load(model, fp32_options).predict({feature.name: photo})
    mask = out[model.outputs[0].name]
    assert isinstance(mask, Image.Image) and mask.mode == "L" and mask.size == (feature.width, feature.height)
    assert np.asarray(mask).std() > 0  # a constant mask would mean the network did not run


def test_tinyseg_array_model_returns_probabilities(fp32_options: RuntimeOptions) -> None:
    model = _open("TinySegArray.mlmodel")
    feature = model.inputs[0]
    x = np.random.default_rng(1).random(feature.shape, dtype=np.float32) - 0.5
    mask = OnnxBackend().load(model, fp32_options).predict({feature.name: x})[model.outputs[0].name]
    assert mask.shape == tuple(model.outputs[0].shape or mask.shape)
    assert 0.0 <= float(mask.min()) and float(mask.max()) <= 1.0 and float(mask.std()) > 0
