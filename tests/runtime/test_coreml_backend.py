"""The coreml backend against a recording fake coremltools: compile paths, compute units,
a fresh compiled path per cold round, evictions, and errors without tracebacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pytest_coreml_quality.errors import ModelFormatError
from pytest_coreml_quality.loadtime import time_plainly
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime import get_backend
from pytest_coreml_quality.runtime.base import RuntimeOptions
from pytest_coreml_quality.runtime.coreml import CoreMLBackend

from tests.conftest import FIXTURES
from tests.fake_coremltools import FakeCoreMLTools, install

MODEL = FIXTURES / "models" / "TinySeg.mlmodel"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeCoreMLTools:
    return install(monkeypatch, FakeCoreMLTools(onnx_cache=tmp_path / "onnx", outputs={"mask": np.zeros((1, 1, 4, 4))}))


def test_get_backend_gives_coreml_where_core_ml_runs(fake: FakeCoreMLTools) -> None:
    assert isinstance(get_backend("coreml"), CoreMLBackend)


@pytest.mark.parametrize("units", ["ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE"])
def test_warm_loads_compile_once_and_load_on_the_chosen_compute_units(fake: FakeCoreMLTools, tmp_path: Path, units: str) -> None:
    model = Model.open(MODEL)
    backend = CoreMLBackend()
    options = RuntimeOptions(cache_dir=tmp_path / "cache", compute_units=units)  # type: ignore[arg-type]
    first = backend.load(model, options)
    second = backend.load(model, options)
    persistent = str(backend.compiled_path(model, options))
    assert [c[0] for c in fake.compiles] == [str(MODEL)]  # compiled once, from the model file
    assert fake.loads == [(persistent, units), (persistent, units)]
    assert first.compiled_path == second.compiled_path == Path(persistent)
    out = first.predict({"image": object()})
    assert set(out) == {"mask"} and fake.predictions == [units]


def test_every_cold_round_compiles_to_a_fresh_path_and_the_old_ones_are_removed(fake: FakeCoreMLTools, tmp_path: Path) -> None:
    model = Model.open(MODEL)
    backend = CoreMLBackend()
    options = RuntimeOptions(cache_dir=tmp_path / "cache", compute_units="CPU_AND_NE")
    backend.load(model, options)  # a warm copy exists: cold rounds must not reuse it
    persistent = str(backend.compiled_path(model, options))
    time_plainly(backend, model, options, "cold", rounds=3)
    cold = [dest for _, dest in fake.compiles[1:]]
    assert len(cold) == 3 and len(set(cold)) == 3 and persistent not in cold
    assert [path for path, _ in fake.loads[1:]] == cold  # each round loaded what it had just compiled
    assert all(units == "CPU_AND_NE" for _, units in fake.loads)
    assert not Path(persistent).exists()  # evicted before the first cold round
    assert [Path(p).exists() for p in cold] == [False, False, True]  # each round removed the last one's copy
    backend.evict(model, options)
    assert not Path(cold[-1]).exists() and not backend.cold_dir(model, options).exists()


def test_warm_rounds_reuse_the_persistent_copy(fake: FakeCoreMLTools, tmp_path: Path) -> None:
    model = Model.open(MODEL)
    backend = CoreMLBackend()
    options = RuntimeOptions(cache_dir=tmp_path / "cache")
    time_plainly(backend, model, options, "warm", rounds=3)
    assert len(fake.compiles) == 1
    assert {path for path, _ in fake.loads} == {str(backend.compiled_path(model, options))}


def test_a_model_core_ml_cannot_compile_is_a_clear_error_and_leaves_nothing_behind(
    fake: FakeCoreMLTools, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(model: str, destination_path: str | None = None) -> str:
        Path(destination_path or "").mkdir(parents=True)  # a partial output, as a crash would leave
        raise RuntimeError("compiler error: unsupported layer")

    monkeypatch.setattr(fake.models.utils, "compile_model", refuse)
    model = Model.open(MODEL)
    backend = CoreMLBackend()
    options = RuntimeOptions(cache_dir=tmp_path / "cache")
    with pytest.raises(ModelFormatError, match="TinySeg.mlmodel.*Core ML cannot compile it.*unsupported layer"):
        backend.load(model, options)
    with pytest.raises(ModelFormatError, match="Core ML cannot compile it"):
        backend.load_cold(model, options)
    assert not backend.compiled_path(model, options).exists()
    assert list(backend.cold_dir(model, options).iterdir()) == []


def test_compute_units_change_the_prediction_cache_key_but_not_the_default_one() -> None:
    assert RuntimeOptions().cache_key() == "p=fp32"  # earlier caches stay valid
    keys = {RuntimeOptions(compute_units=u).cache_key() for u in ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")}  # type: ignore[arg-type]
    assert len(keys) == 4


def test_prediction_timing_warms_up_once_then_times_every_input() -> None:
    from pytest_coreml_quality.loadtime import time_predictions

    seen: list[int] = []

    class Counting:
        def predict(self, inputs: dict) -> dict:
            seen.append(inputs["i"])
            return {}

    assert time_predictions(Counting(), [{"i": 0}, {"i": 1}, {"i": 2}]) >= 0
    assert seen == [0, 0, 1, 2]
    with pytest.raises(ValueError, match="no inputs"):
        time_predictions(Counting(), [])
