"""Workers beyond the number of variants help predict (helper items claim free chunks, never wait)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_coreml_quality.chunks import DEFAULT_CHUNK, chunk_size_for, fill_in_chunks, xdist_workers
from pytest_coreml_quality.dataset import Dataset
from pytest_coreml_quality.evaluate import Evaluator
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.preprocess import PreprocessSettings
from pytest_coreml_quality.runtime.base import RuntimeOptions
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend
from pytest_coreml_quality.sharing import Helper, needed_recipes, plan_helpers
from pytest_coreml_quality.tensors import TensorEvaluation

from .conftest import FIXTURES

TINYSEG = FIXTURES / "models" / "TinySeg.mlmodel"


# --- the plan: one helper per worker beyond the variants ---------------------------------------------------------


def test_no_helpers_when_every_worker_has_a_variant() -> None:
    assert plan_helpers(2, {"M": ["base", "q8"]}, {"M": ["base", "q8"]}) == []
    assert plan_helpers(2, {"M": ["base", "q8", "q4"]}, {"M": ["base", "q8", "q4"]}) == []


def test_one_variant_on_three_workers_gets_two_helpers_on_the_base() -> None:
    plan = plan_helpers(3, {"M": ["base"]}, {"M": ["base"]})
    assert [h.name for h in plan] == ["predict[base]", "predict[base-2]"]


def test_two_variants_on_eight_workers_fill_all_eight() -> None:
    plan = plan_helpers(8, {"M": ["base", "q8"]}, {"M": ["base", "q8"]})
    assert [h.name for h in plan] == [
        "predict[base]", "predict[q8]", "predict[base-2]", "predict[q8-2]", "predict[base-3]", "predict[q8-3]",
    ]


def test_helpers_take_the_models_in_turn_and_skip_swept_variants() -> None:
    groups = {"A": ["base", "q8"], "B": ["base", "q8-sweep", "q4-sweep"]}
    plan = plan_helpers(8, groups, {"A": ["base", "q8"], "B": ["base"]})
    assert [(h.model_key, h.first) for h in plan] == [("A", "base"), ("B", "base"), ("A", "q8")]


def test_a_helper_visits_its_own_variant_first_then_the_others_round() -> None:
    assert Helper("M", "q8").order(["base", "q8", "q4"]) == ["q8", "q4", "base"]


def test_helpers_predict_only_what_selected_items_score() -> None:
    selected = [("M", "size", "q4"), ("M", "quality", "q8"), ("N", "quality", "q4"), ("M", "load-cold", "q4")]
    assert needed_recipes(selected, "M") == {"q8", "base"}  # the base: q8's drift
    assert needed_recipes([("M", "size", "q8"), ("M", "load-warm", "base")], "M") == set()


# --- chunks: smaller with more workers; a helper fills free chunks and never waits -----------------------------------


@pytest.mark.parametrize(
    ("images", "workers", "expected"),
    [(36, 1, DEFAULT_CHUNK), (200, 2, DEFAULT_CHUNK), (36, 8, 3), (28, 3, 5), (5, 8, 1)],
)
def test_chunks_shrink_so_every_worker_finds_some(images: int, workers: int, expected: int) -> None:
    assert chunk_size_for(images, workers) == expected


def test_worker_count_comes_from_xdist() -> None:
    assert xdist_workers({}) == 1
    assert xdist_workers({"PYTEST_XDIST_WORKER_COUNT": "4"}) == 4
    assert xdist_workers({"PYTEST_XDIST_WORKER_COUNT": "junk"}) == 1


class Image:
    def __init__(self, n: int) -> None:
        self.image_hash = f"h{n}"


def test_helping_fills_the_free_chunks_and_leaves_held_ones(tmp_path: Path) -> None:
    images = [Image(n) for n in range(6)]
    done: set[str] = set()
    filled: list[list[str]] = []
    held = threading.Event()
    release = threading.Event()

    def hold_first_chunk() -> None:  # another worker busy with chunk 0
        fill_in_chunks(images, 2, "v", tmp_path, done=lambda i: i.image_hash in done,
                       fill=lambda chunk: (held.set(), release.wait(30)))

    other = threading.Thread(target=hold_first_chunk)
    other.start()
    assert held.wait(30)
    try:
        count = fill_in_chunks(
            images, 2, "v", tmp_path, done=lambda i: i.image_hash in done,
            fill=lambda chunk: filled.append([i.image_hash for i in chunk]), wait=False,
        )
    finally:
        release.set()
        other.join()
    assert count == 2
    assert filled == [["h2", "h3"], ["h4", "h5"]]  # returned without waiting for chunk 0


# --- a helper's predictions are the worker's: masks and tensors -------------------------------------------------------


class Counting:
    """A predictor that counts its calls and runs ``first_call`` before the first one."""

    def __init__(self, inner: Any, first_call: Any = None) -> None:
        self.inner, self.model, self.first_call, self.calls = inner, inner.model, first_call, 0
        self.backend_name, self.options = inner.backend_name, inner.options

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        if self.calls == 0 and self.first_call is not None:
            self.first_call()
        self.calls += 1
        return self.inner.predict(inputs)


@pytest.fixture(scope="module")
def golden() -> Dataset:
    return Dataset.open(FIXTURES / "golden")


@pytest.fixture(scope="module")
def inner(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return OnnxBackend().load(Model.open(TINYSEG), RuntimeOptions(cache_dir=tmp_path_factory.mktemp("compiled")))


def test_a_helper_predicts_the_chunks_a_busy_worker_has_not_claimed(golden: Dataset, inner: Any, tmp_path: Path) -> None:
    alone = Evaluator(golden, chunk_size=4).evaluate(inner)
    started, helped = threading.Event(), threading.Event()
    helper_predictor = Counting(inner)
    loads: list[int] = []

    def worker_first() -> None:  # the worker holds its first chunk until the helper is done
        started.set()
        assert helped.wait(60)

    worker_predictor = Counting(inner, worker_first)
    worker = Evaluator(golden, cache_dir=tmp_path, chunk_size=4).evaluate(worker_predictor)  # type: ignore[arg-type]
    helper = Evaluator(golden, cache_dir=tmp_path, chunk_size=4).evaluate(
        backend=_LoadCounting(helper_predictor, loads), model=inner.model, options=inner.options,
    )
    assert worker.key.digest() == helper.key.digest()  # the same cache entries and chunk locks
    scored = threading.Thread(target=lambda: worker.per_image)
    scored.start()
    try:
        assert started.wait(60)
        predicted = helper.predict_free_chunks()
    finally:
        helped.set()
        scored.join()
    assert worker_predictor.calls + helper_predictor.calls == len(golden)
    assert worker_predictor.calls == 4 and predicted == helper_predictor.calls == len(golden) - 4
    assert helper._predictor is None  # let go: the worker that scores the variant reads the cache
    for sid in golden.ids:
        np.testing.assert_array_equal(worker.predictions[sid], alone.predictions[sid])
    assert worker.summary == alone.summary
    # A helper that comes late finds every chunk done and loads nothing.
    late = Evaluator(golden, cache_dir=tmp_path, chunk_size=4).evaluate(backend=_LoadCounting(inner, loads), model=inner.model, options=inner.options)
    assert late.predict_free_chunks() == 0 and len(loads) == 1


class _LoadCounting:
    """A backend handing out one predictor, counting loads."""

    def __init__(self, predictor: Any, loads: list[int]) -> None:
        self.predictor, self.loads, self.name = predictor, loads, predictor.backend_name

    def load(self, model: Model, options: RuntimeOptions) -> Any:
        self.loads.append(1)
        return self.predictor


def test_a_helper_fills_the_tensor_cache_the_worker_reads(golden: Dataset, inner: Any, tmp_path: Path) -> None:
    settings = PreprocessSettings(output_kind="tensor")
    model = inner.model
    alone = TensorEvaluation(model, golden, settings, "onnx", lambda: inner).outputs
    helper = TensorEvaluation(model, golden, settings, "onnx", lambda: inner, cache_dir=tmp_path)
    assert helper.predict_free_chunks() == len(golden)
    worker = TensorEvaluation(model, golden, settings, "onnx", lambda: pytest.fail("everything is cached"), cache_dir=tmp_path)
    outputs = worker.outputs
    assert worker.cache_hits == len(golden) and worker.cache_misses == 0
    for name, per_image in alone.items():
        for sid, arr in per_image.items():
            np.testing.assert_array_equal(outputs[name][sid], arr)


def test_a_helper_predicts_again_a_damaged_mask_entry(golden: Dataset, inner: Any, tmp_path: Path) -> None:
    # A cache entry that exists but does not read back is not done: the helper predicts it again
    # (as the main path would), so the worker scoring the variant finds every entry usable.
    first = Evaluator(golden, cache_dir=tmp_path, chunk_size=4).evaluate(inner)
    assert first.predict_free_chunks() == len(golden)
    sample = next(iter(golden))
    entry = first.evaluator.cache.path(first.key.for_image(sample.image_hash))  # type: ignore[union-attr]
    entry.write_bytes(entry.read_bytes()[:-7])  # truncated: the file is there, the entry is not usable
    helper_predictor = Counting(inner)
    helper = Evaluator(golden, cache_dir=tmp_path, chunk_size=4).evaluate(helper_predictor)  # type: ignore[arg-type]
    assert helper.predict_free_chunks() == 1 == helper_predictor.calls
    notes: list[str] = []
    loads: list[int] = []
    worker = Evaluator(golden, cache_dir=tmp_path, chunk_size=4, note=notes.append).evaluate(
        backend=_LoadCounting(inner, loads), model=inner.model, options=inner.options,
    )
    assert len(worker.predictions) == len(golden)
    assert worker.timings.cache_hits == len(golden) and not loads and not notes


def test_a_helper_predicts_again_a_damaged_tensor_entry(golden: Dataset, inner: Any, tmp_path: Path) -> None:
    settings = PreprocessSettings(output_kind="tensor")
    first = TensorEvaluation(inner.model, golden, settings, "onnx", lambda: inner, cache_dir=tmp_path)
    assert first.predict_free_chunks() == len(golden)
    sample = next(iter(golden))
    entry = first.cache.path(first._entry(sample.image_hash, first.output_names[0]))  # type: ignore[union-attr]
    entry.write_bytes(b"not a sealed array")
    helper = TensorEvaluation(inner.model, golden, settings, "onnx", lambda: inner, cache_dir=tmp_path)
    assert helper.predict_free_chunks() == 1
    worker = TensorEvaluation(inner.model, golden, settings, "onnx", lambda: pytest.fail("everything is cached"), cache_dir=tmp_path)
    assert worker.outputs and worker.cache_hits == len(golden) and worker.cache_misses == 0


# --- end to end: one variant on three xdist workers ------------------------------------------------------------------

# In the inner run's xdist workers: log which worker predicted which images, and hold each chunk
# until three workers have predicted one (so a helper starting late still finds chunks to claim).
WORKER_LOG = """
import os, time
from pathlib import Path

LOG = Path({log!r})


def pytest_configure(config):
    if not hasattr(config, "workerinput"):
        return  # the controller runs in the test's own process: leave its classes alone
    from pytest_coreml_quality.evaluate import EvaluationResult

    real = EvaluationResult._compute
    deadline = []

    def compute(self, missing, found):
        real(self, missing, found)
        if not missing:
            return
        (LOG / f"{{os.environ['PYTEST_XDIST_WORKER']}}-{{missing[0].id}}").write_text(str(len(missing)))
        deadline.append(deadline[0] if deadline else time.monotonic() + 20)
        while len({{p.name.split("-")[0] for p in LOG.iterdir()}}) < 3 and time.monotonic() < deadline[0]:
            time.sleep(0.05)

    EvaluationResult._compute = compute
"""


def test_one_variant_on_three_workers_is_predicted_by_all_three(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytest.importorskip("xdist")
    log = tmp_path / "predicted"
    log.mkdir()
    pytester.makeconftest(WORKER_LOG.format(log=str(log)))
    common = [f"--coreml-model={TINYSEG}", f"--coreml-dataset={FIXTURES / 'golden'}", "-p", "no:randomly", "-k", "not load"]
    shared = run_json(pytester, tmp_path / "n3.json", *common, f"--coreml-cache-dir={tmp_path / 'c3'}", "-n", "3", "--dist", "loadgroup", "-v")
    shared.assert_outcomes(passed=4)  # size, quality and two helpers
    shared.stdout.fnmatch_lines_random(["*PASSED*::predict[[]base[]]*", "*PASSED*::predict[[]base-2[]]*"])
    per_worker: dict[str, int] = {}
    for entry in log.iterdir():
        worker = entry.name.split("-")[0]
        per_worker[worker] = per_worker.get(worker, 0) + int(entry.read_text())
    assert sorted(per_worker) == ["gw0", "gw1", "gw2"]  # more workers than variants predicted images
    assert sum(per_worker.values()) == len(Dataset.open(FIXTURES / "golden"))  # each image once
    alone = run_json(pytester, tmp_path / "n1.json", *common, f"--coreml-cache-dir={tmp_path / 'c1'}")
    alone.assert_outcomes(passed=2)
    assert figures(tmp_path / "n3.json") == figures(tmp_path / "n1.json")


def run_json(pytester: pytest.Pytester, out: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*args, f"--coreml-report-json={out}")


def figures(path: Path) -> Any:
    """Every model's figures in the JSON report (metrics, per-image values, size ...)."""
    import json

    models = json.loads(path.read_text())["models"]
    assert len(models["TinySeg.mlmodel"]["variants"]["base"]["per_image"]) == len(Dataset.open(FIXTURES / "golden"))
    return models
