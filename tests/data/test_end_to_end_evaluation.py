"""The fixture models on the fixture golden set, through the real onnx runtime."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from pytest_coreml_quality.dataset import Dataset
from pytest_coreml_quality.evaluate import Evaluator
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.preprocess import PreprocessSettings
from pytest_coreml_quality.runtime.base import RuntimeOptions


@pytest.fixture(scope="module")
def onnx_backend():
    module = pytest.importorskip("pytest_coreml_quality.runtime.onnx.backend")
    return module.OnnxBackend()


@pytest.fixture(scope="module")
def fixture_model(fixture_models_dir: Path):
    def open_model(name: str) -> Model:
        path = fixture_models_dir / name
        if not path.exists():
            pytest.skip(f"fixtures/models/{name} is missing: run fixtures/make_fixtures.py")
        return Model.open(path)

    return open_model


@pytest.fixture(scope="module")
def runtime_options(tmp_path_factory: pytest.TempPathFactory) -> RuntimeOptions:
    return RuntimeOptions(cache_dir=tmp_path_factory.mktemp("onnx_cache"))


@pytest.fixture(scope="module")
def tinyseg_result(golden_set: Dataset, onnx_backend, fixture_model, runtime_options, tmp_path_factory):
    evaluator = Evaluator(golden_set, cache_dir=tmp_path_factory.mktemp("predictions"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = evaluator.evaluate(backend=onnx_backend, model=fixture_model("TinySeg.mlmodel"), options=runtime_options)
        result.summary
    return evaluator, result


@pytest.mark.parametrize(
    ("name", "normalization"),
    [
        ("TinySeg.mlmodel", "0..1"),
        ("TinySeg.mlpackage", "0..1"),
        ("TinySeg18.mlpackage", "0..1"),
        ("TinySegArray.mlmodel", "-0.5..0.5"),
        ("TinySegArray.mlpackage", "-0.5..0.5"),
    ],
)
def test_fixture_models_match_the_pytorch_reference_iou(
    name: str, normalization: str, golden_set: Dataset, onnx_backend, fixture_model, runtime_options, fixture_models_dir: Path
) -> None:
    # fixtures/models/tinyseg_metrics.json holds the PyTorch model's IoU on the golden set,
    # computed with the same protocol (EXIF, LANCZOS, pixel/255 - 0.5, bilinear back, 0.5).
    # Image by image: a photo read without its EXIF rotation, or scaled twice, would miss by far.
    model = fixture_model(name)
    reference_file = fixture_models_dir / "tinyseg_metrics.json"
    if not reference_file.exists():
        pytest.skip("fixtures/models/tinyseg_metrics.json is missing")
    reference = json.loads(reference_file.read_text())
    evaluator = Evaluator(golden_set, settings=PreprocessSettings(normalization=normalization))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = evaluator.evaluate(backend=onnx_backend, model=model, options=runtime_options)
        per_image = result.per_image
    assert set(per_image) == set(reference["per_image_iou"])
    for sample_id, expected in reference["per_image_iou"].items():
        assert per_image[sample_id]["iou"] == pytest.approx(expected, abs=2e-3), sample_id
    assert result.summary["iou"] == pytest.approx(reference["iou_mean_per_image"], abs=1e-3)


def test_array_variant_agrees_with_the_image_variant(tinyseg_result, golden_set, onnx_backend, fixture_model, runtime_options) -> None:
    evaluator, image_result = tinyseg_result
    array_evaluator = Evaluator(golden_set, settings=PreprocessSettings(normalization="-0.5..0.5"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        array_result = array_evaluator.evaluate(
            backend=onnx_backend, model=fixture_model("TinySegArray.mlmodel"), options=runtime_options
        )
        drift = array_result.drift(image_result)
    # Same network: only the image output's 8-bit rounding separates the two.
    assert drift.summary["max_abs_diff"] < 0.02
    assert drift.summary["flip_share"] < 0.005
    assert array_result.summary["iou"] == pytest.approx(image_result.summary["iou"], abs=0.01)


def test_cached_predictions_skip_the_runtime(tinyseg_result, golden_set, fixture_model, runtime_options) -> None:
    evaluator, first = tinyseg_result

    class NoBackend:
        name = "onnx"

        def load(self, model, options=None):  # pragma: no cover - failing is the point
            raise AssertionError("the runtime was loaded although every prediction is cached")

        def evict(self, model, options=None) -> None:
            pass

    again = Evaluator(golden_set, cache_dir=evaluator.cache_dir)
    result = again.evaluate(backend=NoBackend(), model=fixture_model("TinySeg.mlmodel"), options=runtime_options)
    assert result.summary == first.summary

