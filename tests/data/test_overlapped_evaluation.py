"""The overlapped evaluation loop gives exactly what a plain loop gives: results, order, errors, cache."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_coreml_quality.dataset import Dataset
from pytest_coreml_quality.errors import PreprocessError
from pytest_coreml_quality.evaluate import Evaluator, PredictionCache
from pytest_coreml_quality.metrics.scores import score_mask
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.output_checks import NonFiniteOutputError
from pytest_coreml_quality.overlap import THREAD_PREFIX, run_overlapped
from pytest_coreml_quality.preprocess import Preprocessor
from pytest_coreml_quality.runtime.base import RuntimeOptions
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "fixtures" / "golden"
TINYSEG = ROOT / "fixtures" / "models" / "TinySeg.mlmodel"


def overlap_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


@pytest.fixture(scope="module")
def fixture_set() -> Dataset:
    return Dataset.open(GOLDEN)


@pytest.fixture(scope="module")
def predictor(fixture_set: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Any:
    cache = tmp_path_factory.mktemp("compiled")
    return OnnxBackend().load(Model.open(TINYSEG), RuntimeOptions(cache_dir=cache))


class FailsOnCall:
    """Wraps a predictor; call number ``bad`` raises what the runtime raises on NaN (no image id)."""

    def __init__(self, inner: Any, bad: int, nan_output: bool = False) -> None:
        self.inner, self.bad, self.nan_output = inner, bad, nan_output
        self.model = inner.model
        self.backend_name, self.options = inner.backend_name, inner.options  # same cache key as ``inner``
        self.calls = 0

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        self.calls += 1
        out = self.inner.predict(inputs)
        if self.calls == self.bad:
            if not self.nan_output:
                raise NonFiniteOutputError(self.model, "mask", 1, 0, 4)
            out = {name: np.full_like(np.asarray(value, dtype=np.float32), np.nan) for name, value in out.items()}
        return out


def same_scores(got: Mapping[str, Any], expected: Mapping[str, Any]) -> bool:
    """Equal, value for value and curve for curve (bit for bit, no tolerance)."""
    return list(got) == list(expected) and all(
        dict(got[k].values) == dict(expected[k].values)
        and np.array_equal(got[k].f_curve, expected[k].f_curve)
        and np.array_equal(got[k].e_curve, expected[k].e_curve)
        for k in expected
    )


def plain_loop(dataset: Dataset, predictor: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """What the evaluation computed before it overlapped anything: one image after the other."""
    evaluator = Evaluator(dataset)
    pre = Preprocessor(predictor.model, evaluator.settings)
    masks, scores = {}, {}
    for s in dataset:
        masks[s.id] = pre.mask_from(predictor.predict(pre.prepare(s.image)), s.size, image=s.id)
        scores[s.id] = score_mask(masks[s.id], evaluator.reference(s), threshold=evaluator.threshold)
    return masks, scores


@pytest.fixture(scope="module")
def plain(fixture_set: Dataset, predictor: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    return plain_loop(fixture_set, predictor)


@pytest.mark.parametrize("cached", [False, True], ids=["no-cache", "cache"])
def test_results_are_those_of_a_plain_loop_on_the_fixture_set(
    fixture_set: Dataset, predictor: Any, tmp_path: Path, cached: bool, plain: tuple[dict[str, np.ndarray], dict[str, Any]]
) -> None:
    masks, scores = plain
    evaluator = Evaluator(fixture_set, cache_dir=tmp_path if cached else None, chunk_size=5)
    result = evaluator.evaluate(predictor)
    assert list(result.predictions) == list(fixture_set.ids)  # same order
    for sid in fixture_set.ids:
        np.testing.assert_array_equal(result.predictions[sid], masks[sid])
    assert list(result.per_image) == list(fixture_set.ids)
    assert same_scores(result.per_image, scores)
    assert not overlap_threads()
    if cached:  # and a second run reads exactly these masks back
        again = Evaluator(fixture_set, cache_dir=tmp_path).evaluate(FailsOnCall(predictor, bad=1))
        assert same_scores(again.per_image, scores) and again.timings.cache_hits == len(fixture_set)


@pytest.mark.parametrize("where", ["predict", "postprocess", "prepare"])
def test_an_error_on_the_third_image_names_it_and_leaves_the_first_two_cached(
    fixture_set: Dataset, predictor: Any, tmp_path: Path, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = fixture_set.ids
    failing = FailsOnCall(predictor, bad=3 if where != "prepare" else 0, nan_output=where == "postprocess")
    if where == "prepare":
        real = Preprocessor.prepare
        calls: list[Any] = []  # prepare runs in image order (the photo may come resized already)

        def prepare(self: Preprocessor, image: Any) -> Any:
            calls.append(image)
            if len(calls) == 3:
                raise PreprocessError("cannot prepare this one", field="image", expected="a photo")
            return real(self, image)

        monkeypatch.setattr(Preprocessor, "prepare", prepare)
    result = Evaluator(fixture_set, cache_dir=tmp_path, chunk_size=100).evaluate(failing)
    expected = PreprocessError if where == "prepare" else NonFiniteOutputError
    with pytest.raises(expected) as info:
        result.predictions
    if where != "prepare":
        assert f"for image '{ids[2]}'" in str(info.value)
    # Raised as the plain loop raised it, not shown as raised while handling another error.
    assert info.value.__cause__ is None and (info.value.__context__ is None or info.value.__suppress_context__)
    assert not overlap_threads()
    cache = PredictionCache(tmp_path)
    stored = [sid for sid in ids if cache.get(result.key.for_image(fixture_set.sample(sid).image_hash),
                                               fixture_set.sample(sid).mask.shape) is not None]
    assert stored == list(ids[:2])  # nothing after the failing image, even if the model ran ahead
    assert not list(tmp_path.rglob("*.tmp"))  # no half-written entry


def test_the_first_error_in_image_order_wins_and_no_thread_survives() -> None:
    finished: list[int] = []
    release = threading.Event()

    def prepare(i: int) -> int:
        if i == 2:
            raise ValueError("prepare 2")
        return i

    def finish(i: int, out: int) -> None:
        release.wait(5)  # still running when image 2's error reaches the caller
        if i == 1:
            raise KeyError("finish 1")
        finished.append(i)

    def predict(i: int, x: int) -> int:
        if i == 1:
            release.set()
        return x

    with pytest.raises(KeyError, match="finish 1"):
        run_overlapped(list(range(6)), prepare, predict, finish)
    assert finished == [0]
    assert not overlap_threads()


def test_prepared_and_unfinished_images_are_bounded() -> None:
    lock = threading.Lock()
    live, peak = 0, 0

    def prepare(i: int) -> int:
        nonlocal live, peak
        with lock:
            live += 1
            peak = max(peak, live)
        return i

    def finish(i: int, out: int) -> None:
        nonlocal live
        with lock:
            live -= 1

    run_overlapped(list(range(40)), prepare, lambda i, x: x, finish, ahead=2)
    # ahead prepared + the one running + ahead unfinished (+ one being handed over)
    assert peak <= 2 * 2 + 2
    assert live == 0


class Worker:
    """One of two 'workers' sharing a cache: its own evaluator and predictor, counting its calls."""

    def __init__(self, dataset: Dataset, inner: Any, cache: Path, first_call: Any = None) -> None:
        self.predictor = FailsOnCall(inner, bad=0)
        self.first_call = first_call
        self.model, self.backend_name, self.options = inner.model, inner.backend_name, inner.options
        self.result = Evaluator(dataset, cache_dir=cache, chunk_size=4).evaluate(self)  # type: ignore[arg-type]
        self.error: BaseException | None = None

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        if self.predictor.calls == 0 and self.first_call is not None:
            self.first_call()
        return self.predictor.predict(inputs)

    def run(self) -> None:
        try:
            self.result.per_image  # noqa: B018
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def test_two_workers_split_a_variants_images_and_predict_each_once(
    fixture_set: Dataset, predictor: Any, tmp_path: Path, plain: tuple[dict[str, np.ndarray], dict[str, Any]]
) -> None:
    a_started, b_started = threading.Event(), threading.Event()

    def a_first() -> None:  # A holds its first chunk until B has claimed one of its own
        a_started.set()
        assert b_started.wait(30)

    a = Worker(fixture_set, predictor, tmp_path, first_call=a_first)
    b = Worker(fixture_set, predictor, tmp_path, first_call=b_started.set)
    ta, tb = threading.Thread(target=a.run), threading.Thread(target=b.run)
    ta.start()
    assert a_started.wait(30)
    tb.start()
    ta.join()
    tb.join()
    assert a.error is None and b.error is None
    calls = (a.predictor.calls, b.predictor.calls)
    assert sum(calls) == len(fixture_set) and min(calls) > 0  # split, and each image predicted once overall
    masks, scores = plain
    for worker in (a, b):
        assert list(worker.result.predictions) == list(fixture_set.ids)
        for sid in fixture_set.ids:
            np.testing.assert_array_equal(worker.result.predictions[sid], masks[sid])
        assert same_scores(worker.result.per_image, scores)
        assert worker.result.timings.cache_hits + worker.result.timings.cache_misses == len(fixture_set)
