"""Models for the variant tests: built once per session, plus the committed fixture models."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_coreml_quality.model import Model
from tests.variants.tiny_models import save_mlprogram_model, save_nn_model

FIXTURE_MODELS = Path(__file__).resolve().parents[2] / "fixtures" / "models"


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("variant-models")


@pytest.fixture(scope="session")
def nn_model(models_dir: Path) -> Model:
    """A NeuralNetwork .mlmodel with four 3x3 convs (about 57k fp32 weights)."""
    return Model.open(save_nn_model(models_dir / "Tiny.mlmodel"))


@pytest.fixture(scope="session")
def mlprogram_model(models_dir: Path) -> Model:
    """The same network as an iOS18 ML Program (every optimize.coreml recipe applies)."""
    return Model.open(save_mlprogram_model(models_dir / "Tiny.mlpackage", ios=18))


@pytest.fixture(scope="session")
def mlprogram_ios16_model(models_dir: Path) -> Model:
    """An iOS16 ML Program: recipes that need iOS18 ops must be refused up front."""
    return Model.open(save_mlprogram_model(models_dir / "Tiny16.mlpackage", ios=16))


def fixture_model(name: str) -> Model:
    """A committed fixture model, or skip while fixtures/make_fixtures.py has not made it."""
    path = FIXTURE_MODELS / name
    if not path.exists():
        pytest.skip(f"fixture model {path} not generated yet")
    return Model.open(path)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def nn_weights(path: Path) -> dict[tuple[str, str], np.ndarray]:
    """Every conv weight/bias of a NeuralNetwork file, dequantized with coremltools' helper."""
    import coremltools as ct
    from coremltools.models.neural_network.quantization_utils import _dequantize_wp

    spec = ct.utils.load_spec(str(path))
    out: dict[tuple[str, str], np.ndarray] = {}
    for layer in spec.neuralNetwork.layers:
        if layer.WhichOneof("layer") != "convolution":
            continue
        conv = layer.convolution
        shapes = {
            "weights": (conv.outputChannels, conv.kernelChannels, *conv.kernelSize),
            "bias": (conv.outputChannels,),
        }
        for field, shape in shapes.items():
            wp = getattr(conv, field)
            if len(wp.rawValue):
                _dequantize_wp(wp, shape)  # fills floatValue back from the quantized bytes
            if len(wp.float16Value):
                values = np.frombuffer(wp.float16Value, dtype=np.float16).astype(np.float32)
            else:
                values = np.array(wp.floatValue, dtype=np.float32)
            if values.size:
                out[(layer.name, field)] = values.reshape(shape)
    return out


def mlprogram_weights(path: Path) -> dict[tuple[str, str], np.ndarray]:
    """Every weight of an ML Program, decompressed by ``optimize.coreml.decompress_weights``.

    Keyed by (consuming op name, its parameter name), so base and variant line up.
    """
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    with quiet():
        dense = cto.decompress_weights(ct.models.MLModel(str(path), skip_model_load=True))
        meta = cto.get_weights_metadata(dense, weight_threshold=0)
    out: dict[tuple[str, str], Any] = {}
    for name, md in meta.items():
        for child in md.child_ops:
            param = next(k for k, v in child.params_name_mapping.items() if v == name)
            out[(child.name, param)] = np.asarray(md.val, dtype=np.float32)
    return out
