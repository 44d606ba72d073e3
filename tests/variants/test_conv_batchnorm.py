"""NeuralNetwork recipes on models with convolution followed by batch norm (issue 11 §4).

coremltools 9's own fold inside ``quantize_weights`` raises TypeError on such models; both
our fast path and the coremltools route now fold batch norms correctly first.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.base import RuntimeOptions
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend
from pytest_coreml_quality.variants.build import build_recipe
from pytest_coreml_quality.variants.nn_fusion import optimize_nn
from pytest_coreml_quality.variants.recipes import parse_recipe
from tests.variants.conftest import quiet
from tests.variants.test_nn_fast_quantize import assert_same_saved_model

ct = pytest.importorskip("coremltools")

C_IN, C, SIZE = 16, 32, 10


def _bn(b: Any, name: str, rng: np.random.Generator, source: str, out: str) -> None:
    b.add_batchnorm(name, C, gamma=rng.uniform(0.5, 1.5, C), beta=rng.uniform(-0.5, 0.5, C),
                    mean=rng.uniform(-0.5, 0.5, C), variance=rng.uniform(0.5, 1.5, C), input_name=source,
                    output_name=out, epsilon=1e-3)


def _save_conv_bn_model(path: Path) -> Path:
    """x[16,10,10] -> conv (bias) -> bn -> relu -> conv (no bias) -> bn -> scale
    -> deconv (2 groups) -> bn -> sigmoid: each conv/deconv is big enough (>2048 weights)
    for quantize_weights to select it."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    rng = np.random.default_rng(0)
    b = NeuralNetworkBuilder([("x", datatypes.Array(C_IN, SIZE, SIZE))], [("y", datatypes.Array(C, SIZE, SIZE))])

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))).astype(np.float32)

    b.add_convolution("conv1", C_IN, C, 3, 3, 1, 1, "same", 1, w(3, 3, C_IN, C), rng.standard_normal(C), True,
                      input_name="x", output_name="c1")
    _bn(b, "bn1", rng, "c1", "b1")
    b.add_activation("relu", "RELU", "b1", "r1")
    b.add_convolution("conv2", C, C, 3, 3, 1, 1, "same", 1, w(3, 3, C, C), None, False, input_name="r1",
                      output_name="c2")
    _bn(b, "bn2", rng, "c2", "b2")
    b.add_scale("scale", rng.uniform(0.5, 2, C), rng.uniform(-1, 1, C), True, input_name="b2", output_name="s2",
                shape_scale=[C, 1, 1], shape_bias=[C, 1, 1])
    b.add_convolution("deconv", C, C, 3, 3, 1, 1, "same", 2, w(3, 3, C, C // 2), None, False, input_name="s2",
                      output_name="d3", is_deconv=True, output_shape=[SIZE, SIZE])
    _bn(b, "bn3", rng, "d3", "b3")
    b.add_activation("sigmoid", "SIGMOID", "b3", "y")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ct.utils.save_spec(b.spec, str(path))
    return path


@pytest.fixture(scope="module")
def conv_bn_model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return Model.open(_save_conv_bn_model(tmp_path_factory.mktemp("conv-bn") / "ConvBN.mlmodel"))


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(5).uniform(-1, 1, (C_IN, SIZE, SIZE)).astype(np.float32)


def _predict(path: Path, x: np.ndarray, cache: Path) -> np.ndarray:
    return OnnxBackend().load(Model.open(path), RuntimeOptions(cache_dir=cache)).predict({"x": x})["y"]


def test_folding_batch_norms_keeps_the_predictions(conv_bn_model: Model, x: np.ndarray, tmp_path: Path) -> None:
    spec = ct.utils.load_spec(str(conv_bn_model.path))
    with quiet():
        fused = optimize_nn(spec.neuralNetwork.layers)
    kinds = [layer.WhichOneof("layer") for layer in spec.neuralNetwork.layers]
    # three batch norms folded, and the scale after the second one by coremltools' own fusion
    assert fused == 4 and "batchnorm" not in kinds and "scale" not in kinds
    folded = tmp_path / "folded.mlmodel"
    ct.utils.save_spec(spec, str(folded))
    base = _predict(conv_bn_model.path, x, tmp_path / "cache")
    assert np.abs(_predict(folded, x, tmp_path / "cache") - base).max() <= 1e-5


# Mean absolute difference of the sigmoid outputs (in [0, 1]) from the base model: measured
# 0.0016 at 8 bits and 0.031 at 4 bits, while skipping any one of the three batch norms
# moves them by 0.065 to 0.10.
@pytest.mark.parametrize(("recipe", "bound"), [("q8", 0.005), ("q4", 0.045)])
def test_q8_and_q4_build_on_conv_batchnorm_and_stay_close(
    conv_bn_model: Model, x: np.ndarray, tmp_path: Path, recipe: str, bound: float
) -> None:
    fast, slow = tmp_path / "fast.mlmodel", tmp_path / "coremltools.mlmodel"
    assert build_recipe(conv_bn_model, parse_recipe(recipe), fast) == "fast"
    assert build_recipe(conv_bn_model, parse_recipe(recipe), slow, fast_nn=False) == "coremltools"
    assert_same_saved_model(fast.read_bytes(), slow.read_bytes())
    assert Model.open(fast).size_bytes < conv_bn_model.size_bytes / 3
    base = _predict(conv_bn_model.path, x, tmp_path / "cache")
    variant = _predict(fast, x, tmp_path / "cache")
    assert np.abs(variant - base).mean() <= bound
