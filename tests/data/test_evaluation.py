"""Evaluation: predictions cached losslessly and never recomputed, shared lazy results, drift."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pytest_coreml_quality.dataset import Dataset
from pytest_coreml_quality.evaluate import Evaluator, PredictionCache
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.preprocess import PreprocessSettings
from pytest_coreml_quality.runtime.base import RuntimeOptions


class EchoPredictor:
    """A fake model whose mask is the input's luminance (optionally dimmed): counts its calls."""

    backend_name = "fake"

    def __init__(self, model: Model, gain: float = 1.0) -> None:
        self.model = model
        self.gain = gain
        self.calls = 0
        self._lock = threading.Lock()

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.calls += 1
        gray = np.asarray(inputs["img"].convert("L"), dtype=np.float64) * self.gain
        return {"mask": Image.fromarray(np.clip(np.rint(gray), 0, 255).astype(np.uint8), "L")}


class CountingBackend:
    """A backend that loads EchoPredictors and counts loads."""

    name = "counting"

    def __init__(self) -> None:
        self.loads = 0
        self.predictors: list[EchoPredictor] = []

    def load(self, model: Model, options: RuntimeOptions | None = None) -> EchoPredictor:
        self.loads += 1
        self.predictors.append(EchoPredictor(model))
        return self.predictors[-1]

    def evict(self, model: Model, options: RuntimeOptions | None = None) -> None:
        pass


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """Photos whose luminance *is* their soft mask, so an echo model is a perfect model."""
    root = tmp_path_factory.mktemp("golden")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    yy, xx = np.mgrid[0:32, 0:32]
    for i in range(4):
        mask = np.clip(255 * (1.2 - np.hypot(xx - 8 - 4 * i, yy - 14) / 10), 0, 255).astype(np.uint8)
        Image.fromarray(mask, "L").convert("RGB").save(root / "images" / f"s{i}.png")
        Image.fromarray(mask, "L").save(root / "masks" / f"s{i}.png")
    # One photo that is not the model's size: resized in, and the mask resized back out.
    wide = np.zeros((32, 48), dtype=np.uint8)
    wide[8:24, 10:40] = 255
    Image.fromarray(wide, "L").convert("RGB").save(root / "images" / "wide.png")
    Image.fromarray(wide, "L").save(root / "masks" / "wide.png")
    return Dataset.open(root)


@pytest.fixture(scope="module")
def model_paths(tmp_path_factory: pytest.TempPathFactory, nn_model_builder) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("eval_models")
    base = nn_model_builder(d / "base.mlmodel", image_output=True)
    other = nn_model_builder(d / "other.mlmodel", image_output=True, size=(32, 32), color="BGR")
    copy = d / "copy_of_base.mlmodel"
    shutil.copy(base, copy)
    return {"base": base, "other": other, "copy": copy}


def test_a_perfect_model_scores_perfectly(golden: Dataset, model_paths: dict[str, Path]) -> None:
    result = Evaluator(golden, with_hce=False).evaluate(EchoPredictor(Model.open(model_paths["base"])))
    for sample in golden:
        pred = result.predictions[sample.id]
        assert pred.dtype == np.float32 and pred.shape == sample.mask.shape
    exact = [i for i in golden.ids if i != "wide"]
    for i in exact:
        assert result.per_image[i]["mae"] == pytest.approx(0.0, abs=1e-7)
        assert result.per_image[i]["iou"] == 1.0 and result.per_image[i]["dice"] == 1.0
    # The non-square photo went through two resizes: close, not exact.
    assert 0 < result.per_image["wide"]["mae"] < 0.05
    assert result.summary["iou"] > 0.95 and result.summary["loss255"] < 3


def test_predictions_are_cached_losslessly_and_never_recomputed(golden: Dataset, model_paths: dict[str, Path], tmp_path: Path) -> None:
    model = Model.open(model_paths["base"])
    first = EchoPredictor(model, gain=0.7)  # dimmed: soft values that are not 8-bit levels after resizing
    run1 = Evaluator(golden, cache_dir=tmp_path, with_hce=False).evaluate(first)
    preds1 = run1.predictions
    assert first.calls == len(golden)
    assert run1.timings.cache_misses == len(golden) and run1.timings.cache_hits == 0

    # A new evaluator (a new pytest run) with a fresh predictor of the same model bytes.
    second = EchoPredictor(Model.open(model_paths["copy"]), gain=0.7)
    run2 = Evaluator(golden, cache_dir=tmp_path, with_hce=False).evaluate(second)
    assert run2.summary == run1.summary
    assert second.calls == 0 and run2.timings.cache_hits == len(golden)
    for i in golden.ids:
        np.testing.assert_array_equal(run2.predictions[i], preds1[i])  # bit-exact: lossless
    stored = list((tmp_path / "predictions").rglob("*.mask"))
    assert len(stored) == len(golden)
    assert any(np.any(np.abs(p * 255 - np.rint(p * 255)) > 1e-3) for p in preds1.values())


@pytest.mark.parametrize("change", ["settings", "model", "backend"])
def test_any_key_change_reruns(golden: Dataset, model_paths: dict[str, Path], tmp_path: Path, change: str) -> None:
    Evaluator(golden, cache_dir=tmp_path, with_hce=False).evaluate(EchoPredictor(Model.open(model_paths["base"]))).predictions
    settings = PreprocessSettings(resample="bicubic") if change == "settings" else PreprocessSettings()
    model = Model.open(model_paths["other" if change == "model" else "base"])
    predictor = EchoPredictor(model)
    if change == "backend":
        predictor.backend_name = "another"  # type: ignore[misc]
    Evaluator(golden, settings=settings, cache_dir=tmp_path, with_hce=False).evaluate(predictor).predictions
    assert predictor.calls == len(golden)


def test_only_damaged_entries_are_recomputed(golden: Dataset, model_paths: dict[str, Path], tmp_path: Path) -> None:
    model = Model.open(model_paths["base"])
    Evaluator(golden, cache_dir=tmp_path, with_hce=False).evaluate(EchoPredictor(model)).predictions
    victim = sorted((tmp_path / "predictions").rglob("*.mask"))[0]
    victim.write_bytes(victim.read_bytes()[:40])
    again = EchoPredictor(model)
    notes: list[str] = []
    result = Evaluator(golden, cache_dir=tmp_path, with_hce=False, note=notes.append).evaluate(again)
    result.predictions
    assert len(notes) == 1 and "1 damaged entry ignored and recomputed" in notes[0]
    assert again.calls == 1 and result.timings.cache_hits == len(golden) - 1


def test_backend_is_not_even_loaded_when_everything_is_cached(golden: Dataset, model_paths: dict[str, Path], tmp_path: Path) -> None:
    model = Model.open(model_paths["base"])
    backend = CountingBackend()
    result = Evaluator(golden, cache_dir=tmp_path, with_hce=False).evaluate(backend=backend, model=model)
    assert backend.loads == 0  # lazy: nothing happens until a value is asked for
    result.summary
    assert backend.loads == 1 and backend.predictors[0].calls == len(golden)
    fp16 = RuntimeOptions(precision="fp16")
    again = Evaluator(golden, cache_dir=tmp_path, with_hce=False)
    again.evaluate(backend=backend, model=model).summary
    assert backend.loads == 1
    again.evaluate(backend=backend, model=model, options=fp16).summary  # other numbers: other key
    assert backend.loads == 2


def test_two_callers_share_one_run(golden: Dataset, model_paths: dict[str, Path]) -> None:
    evaluator = Evaluator(golden, with_hce=False)
    predictor = EchoPredictor(Model.open(model_paths["base"]))
    a = evaluator.evaluate(predictor)
    b = evaluator.evaluate(EchoPredictor(Model.open(model_paths["copy"])))
    assert a is b
    threads = [threading.Thread(target=lambda: a.summary) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert predictor.calls == len(golden)


def test_drift_against_the_base(golden: Dataset, model_paths: dict[str, Path]) -> None:
    evaluator = Evaluator(golden, with_hce=False)
    base = evaluator.evaluate(EchoPredictor(Model.open(model_paths["base"])))
    same = base.drift(base)
    assert same.summary["max_abs_diff"] == 0.0 and same.summary["flip_share"] == 0.0
    assert same.summary["psnr"] == float("inf") and same.summary["iou"] == 1.0
    dim = EchoPredictor(Model.open(model_paths["other"]), gain=0.8)
    drift = evaluator.evaluate(dim).drift(base)
    assert 0.15 < drift.summary["max_abs_diff"] <= 0.21  # 20% dimmer at the brightest pixels
    assert 0 < drift.summary["flip_share"] < 0.5
    assert 10 < drift.summary["psnr"] < 60
    assert set(drift.per_image) == set(golden.ids)
    assert evaluator.evaluate(dim).drift(base) is drift  # memoised


def test_cache_ignores_entries_of_the_wrong_shape(tmp_path: Path) -> None:
    cache = PredictionCache(tmp_path)
    cache.put("abcd", np.ones((4, 6), dtype=np.float32))
    assert cache.get("abcd", (4, 6)) is not None
    assert cache.get("abcd", (6, 4)) is None
    assert cache.get("missing", (4, 6)) is None


def test_evaluate_needs_a_predictor_or_a_backend(golden: Dataset) -> None:
    with pytest.raises(TypeError):
        Evaluator(golden).evaluate()


def test_bad_settings_fail_before_the_model_is_loaded(golden: Dataset, model_paths: dict[str, Path]) -> None:
    from pytest_coreml_quality.errors import ModelFormatError

    backend = CountingBackend()
    evaluator = Evaluator(golden, settings=PreprocessSettings(output_name="img"), with_hce=False)
    with pytest.raises(ModelFormatError, match="no output named 'img'"):
        evaluator.evaluate(backend=backend, model=Model.open(model_paths["base"])).summary
    assert backend.loads == 0


def test_bare_onnx_predictors_key_their_backend_and_precision(tmp_path: Path) -> None:
    """A predictor handed to evaluate() directly must not share cache entries across precisions."""
    from pytest_coreml_quality.evaluate import predictor_backend_key
    from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend

    model = Model.open(Path(__file__).resolve().parents[2] / "fixtures" / "models" / "TinySegArray.mlmodel")
    keys = {
        predictor_backend_key(OnnxBackend().load(model, RuntimeOptions(precision=precision, cache_dir=tmp_path)))  # type: ignore[arg-type]
        for precision in ("fp32", "fp16")
    }
    assert keys == {"onnx[p=fp32]", "onnx[p=fp16]"}
