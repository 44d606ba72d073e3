"""Tensor outputs: two workers needing the same variant split its images; results as one worker's."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_coreml_quality.dataset import Dataset
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.overlap import THREAD_PREFIX
from pytest_coreml_quality.preprocess import PreprocessSettings
from pytest_coreml_quality.runtime.base import RuntimeOptions
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend
from pytest_coreml_quality.tensors import TensorEvaluation

from ..conftest import FIXTURES
from .models import save_heatmap_model

SETTINGS = PreprocessSettings(output_kind="tensor")


class Counting:
    """A predictor that counts its calls and runs ``first_call`` before the first one."""

    def __init__(self, inner: Any, first_call: Any = None) -> None:
        self.inner, self.model, self.first_call, self.calls = inner, inner.model, first_call, 0

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        if self.calls == 0 and self.first_call is not None:
            self.first_call()
        self.calls += 1
        return self.inner.predict(inputs)


def test_two_workers_split_the_images_and_predict_each_once(tmp_path: Path) -> None:
    model = Model.open(save_heatmap_model(tmp_path / "Heat.mlmodel"))
    inner = OnnxBackend().load(model, RuntimeOptions(cache_dir=tmp_path / "compiled"))
    dataset = Dataset.open(FIXTURES / "golden")
    alone = TensorEvaluation(model, dataset, SETTINGS, "onnx", lambda: inner).outputs

    a_started, b_started = threading.Event(), threading.Event()

    def a_first() -> None:  # A holds its first chunk until B has claimed one of its own
        a_started.set()
        assert b_started.wait(30)

    predictors = [Counting(inner, a_first), Counting(inner, b_started.set)]
    workers = []
    for predictor in predictors:
        tev = TensorEvaluation(model, dataset, SETTINGS, "onnx", lambda p=predictor: p, cache_dir=tmp_path / "cache")
        tev.chunk_size = 4
        workers.append(tev)
    errors: list[BaseException] = []

    def run(tev: TensorEvaluation) -> None:
        try:
            tev.outputs  # noqa: B018
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(tev,)) for tev in workers]
    threads[0].start()
    assert a_started.wait(30)
    threads[1].start()
    for t in threads:
        t.join()
    assert not errors
    calls = [p.calls for p in predictors]
    assert sum(calls) == len(dataset) and min(calls) > 0
    for tev in workers:
        assert tev.cache_hits + tev.cache_misses == len(dataset)
        for name, per_image in alone.items():
            assert list(tev.outputs[name]) == list(per_image)
            for sid, arr in per_image.items():
                np.testing.assert_array_equal(tev.outputs[name][sid], arr)
    assert not [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


@pytest.mark.parametrize("bad", [1, 3])
def test_an_error_names_the_image_and_stores_nothing_after_it(tmp_path: Path, bad: int) -> None:
    from pytest_coreml_quality.output_checks import NonFiniteOutputError

    model = Model.open(save_heatmap_model(tmp_path / "Heat.mlmodel"))
    inner = OnnxBackend().load(model, RuntimeOptions(cache_dir=tmp_path / "compiled"))
    dataset = Dataset.open(FIXTURES / "golden")

    class NanOn:
        def __init__(self) -> None:
            self.model, self.calls = model, 0

        def predict(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
            self.calls += 1
            out = inner.predict(inputs)
            return {k: np.full_like(v, np.nan) for k, v in out.items()} if self.calls == bad else out

    tev = TensorEvaluation(model, dataset, SETTINGS, "onnx", NanOn, cache_dir=tmp_path / "cache")
    with pytest.raises(NonFiniteOutputError, match=f"for image '{dataset.ids[bad - 1]}'"):
        tev.outputs  # noqa: B018
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == bad - 1
    assert not [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]
