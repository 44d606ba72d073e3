"""Ground truths prepared ahead of scoring: during the model's load, and by Reference.prepare."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_coreml_quality.dataset import Dataset
from pytest_coreml_quality.evaluate import Evaluator
from pytest_coreml_quality.metrics import Reference, score_mask
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.overlap import THREAD_PREFIX, meanwhile
from pytest_coreml_quality.runtime.base import RuntimeOptions
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend
from tests.data.test_overlapped_evaluation import GOLDEN, TINYSEG, same_scores


def _helper_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def test_meanwhile_runs_alongside_the_block_and_stops_with_it() -> None:
    started, steps = threading.Event(), []

    def work(stopped: Any) -> None:
        started.set()
        while not stopped():
            steps.append(1)
            time.sleep(0.001)

    with meanwhile(work):
        assert started.wait(10)  # the work runs while the block does
    count = len(steps)
    time.sleep(0.02)
    assert len(steps) == count  # stopped and waited for on leaving the block
    assert not _helper_threads()


def test_meanwhile_drops_the_works_error_and_keeps_the_blocks() -> None:
    def broken(stopped: Any) -> None:
        raise ValueError("dropped")

    with meanwhile(broken):
        pass
    with pytest.raises(KeyError), meanwhile(lambda stopped: None):
        raise KeyError("the block's own error")
    assert not _helper_threads()


@pytest.mark.parametrize("shape", ["object", "empty", "full"])
def test_a_prepared_reference_scores_without_further_preparation(shape: str, monkeypatch: pytest.MonkeyPatch) -> None:
    yy, xx = np.mgrid[0:60, 0:80]
    mask = {"object": (np.hypot(yy - 30, xx - 40) < 15), "empty": np.zeros((60, 80), bool), "full": np.ones((60, 80), bool)}[shape]
    pred = np.clip(mask * 0.8 + np.random.default_rng(0).uniform(0, 0.3, mask.shape), 0, 1).astype(np.float32)
    expected = score_mask(pred, Reference(mask.astype(np.float32)))
    ref = Reference(mask.astype(np.float32)).prepare()
    prepared = dict(ref.__dict__)
    monkeypatch.setattr(Reference, "_distance_transforms", lambda self: pytest.fail("prepared twice"))
    got = score_mask(pred, ref)
    assert ref.__dict__.keys() == prepared.keys()  # nothing left to compute
    assert same_scores({"x": got}, {"x": expected})


class SlowLoad:
    """A backend whose load waits until the evaluator's ground truths are all prepared."""

    name = "onnx"

    def __init__(self, evaluator: Evaluator, cache: Path) -> None:
        self.evaluator, self.cache = evaluator, cache
        self.saw_prepared = False

    def load(self, model: Model, options: RuntimeOptions | None = None) -> Any:
        ids = set(self.evaluator.dataset.ids)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self.saw_prepared:
            refs = dict(self.evaluator._references)
            self.saw_prepared = refs.keys() == ids and all("importance" in r.__dict__ or not r.n_fg for r in refs.values())
            time.sleep(0.005)
        return OnnxBackend().load(model, RuntimeOptions(cache_dir=self.cache))


def test_ground_truths_are_prepared_while_the_model_loads(tmp_path: Path) -> None:
    dataset = Dataset.open(GOLDEN)
    evaluator = Evaluator(dataset)
    backend = SlowLoad(evaluator, tmp_path)
    result = evaluator.evaluate(backend=backend, model=Model.open(TINYSEG))  # type: ignore[arg-type]
    scores = result.per_image
    assert backend.saw_prepared
    assert not _helper_threads()
    # The same figures as scoring with ground truths prepared on first use.
    plain = Evaluator(dataset)
    predictions = result.predictions
    expected = {s.id: score_mask(predictions[s.id], plain.reference(s), threshold=plain.threshold) for s in dataset}
    assert same_scores(scores, expected)


@pytest.mark.parametrize("budget", [256 * 2**20, 0], ids=["kept", "no-budget"])
def test_a_further_variant_reuses_the_resized_photos(
    budget: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    dataset = Dataset.open(GOLDEN)
    predictor = OnnxBackend().load(Model.open(TINYSEG), RuntimeOptions(cache_dir=tmp_path))
    photo_resizes: list[tuple[int, int]] = []
    original = Image.Image.resize

    def counting(self: Image.Image, size: Any, *args: Any, **kwargs: Any) -> Image.Image:
        if self.mode == "RGB":
            photo_resizes.append(self.size)
        return original(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", counting)
    evaluator = Evaluator(dataset, resized_budget=budget)
    first = evaluator.evaluate(predictor, backend_id="variant-a")
    first_scores = first.per_image
    resized_once = len(photo_resizes)
    assert resized_once > 0  # the fixture photos are not at the model's input size
    second = evaluator.evaluate(predictor, backend_id="variant-b")  # another variant key, same input
    assert second is not first
    assert same_scores(second.per_image, first_scores)
    for sid in dataset.ids:
        np.testing.assert_array_equal(second.predictions[sid], first.predictions[sid])
    assert len(photo_resizes) == (resized_once if budget else 2 * resized_once)
