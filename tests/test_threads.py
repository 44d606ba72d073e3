"""Under pytest-xdist each worker's onnxruntime sessions use that worker's share of the cores."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pytest_coreml_quality.runtime import intra_op_threads
from pytest_coreml_quality.runtime.onnx import backend as onnx_backend
from tests.conftest import FIXTURES

MODEL = FIXTURES / "models" / "TinySegArray.mlmodel"  # a multiarray mask: the start-up runs it to read the mask


@pytest.mark.parametrize(
    ("cores", "workers", "requested", "expected"),
    [
        (16, None, None, 16),  # no xdist: every core
        (16, "4", None, 4),
        (16, "3", None, 5),  # whole threads, rounded down
        (2, "4", None, 1),  # never 0
        (16, "4", 7, 7),  # --coreml-threads wins
        (8, "junk", None, 8),  # an unreadable worker count is one worker
    ],
)
def test_threads_are_the_cores_divided_by_the_workers(
    monkeypatch: pytest.MonkeyPatch, cores: int, workers: str | None, requested: int | None, expected: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    env = {} if workers is None else {"PYTEST_XDIST_WORKER_COUNT": workers}
    assert intra_op_threads(requested, env) == expected


class SessionOptionsSpy:
    """Records every OnnxBackend built and the intra-op threads of every session it configures."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.constructed: list[int | None] = []
        self.sessions: list[int] = []
        real_init, real_options = onnx_backend.OnnxBackend.__init__, onnx_backend.OnnxBackend._session_options
        spy = self

        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            real_init(self, *args, **kwargs)
            spy.constructed.append(self.intra_op_threads)

        def options(self: Any, level: str) -> Any:
            so = real_options(self, level)
            spy.sessions.append(so.intra_op_num_threads)
            return so

        monkeypatch.setattr(onnx_backend.OnnxBackend, "__init__", init)
        monkeypatch.setattr(onnx_backend.OnnxBackend, "_session_options", options)


@pytest.mark.parametrize(("flag", "expected"), [(None, 3), ("--coreml-threads=2", 2)])
def test_a_workers_sessions_get_its_share_of_the_cores(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flag: str | None, expected: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(12)), raising=False)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "4")  # as in one of 4 xdist workers on 12 cores
    spy = SessionOptionsSpy(monkeypatch)
    pytester.makepyfile("def test_nothing(): pass")
    args = [f"--coreml-model={MODEL}", f"--coreml-dataset={FIXTURES / 'golden'}", f"--coreml-cache-dir={tmp_path / 'c'}",
            "-p", "no:cacheprovider", "-k", "test_nothing"]
    result = pytester.runpytest(*args, *([flag] if flag else []))
    result.assert_outcomes(passed=1)
    assert spy.constructed == [expected]
    assert spy.sessions and set(spy.sessions) == {expected}


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_bad_thread_counts_are_usage_errors(pytester: pytest.Pytester, value: str) -> None:
    pytester.makepyfile("def test_never_runs(): pass")
    result = pytester.runpytest(f"--coreml-model={MODEL}", f"--coreml-threads={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--coreml-threads / ini 'coreml_threads': got '{value}', expected a whole number >= 1*"])
    assert "Traceback" not in result.stderr.str()


def test_thread_counts_far_above_the_cores_are_usage_errors(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # 5000 threads per session on 2 cores never finished: onnxruntime's threads only waited for each other.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    pytester.makepyfile("def test_never_runs(): pass")
    result = pytester.runpytest(f"--coreml-model={MODEL}", "--coreml-threads=9")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--coreml-threads / ini 'coreml_threads': got '9', more than 4 threads for each of "
                                 "this process's 2 core(s); expected a whole number from 1 to 8*"])
    assert "Traceback" not in result.stderr.str()
    result = pytester.runpytest(f"--coreml-model={MODEL}", "--coreml-threads=8", "-k", "test_never_runs", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK


def test_the_thread_count_can_be_set_in_the_ini_file(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ncoreml_threads = none\n")
    pytester.makepyfile("def test_never_runs(): pass")
    result = pytester.runpytest(f"--coreml-model={MODEL}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*coreml_threads': got 'none', expected a whole number >= 1*"])


def test_predictions_do_not_depend_on_the_thread_count(tmp_path: Path) -> None:
    """Why the thread count is not in the prediction cache key: workers with different shares share masks."""
    import numpy as np

    from pytest_coreml_quality.dataset import Dataset
    from pytest_coreml_quality.evaluate import Evaluator
    from pytest_coreml_quality.model import Model
    from pytest_coreml_quality.runtime.base import RuntimeOptions

    dataset = Dataset.open(FIXTURES / "golden")
    model = Model.open(FIXTURES / "models" / "TinySeg.mlmodel")
    runs = [
        Evaluator(dataset).evaluate(onnx_backend.OnnxBackend(intra_op_threads=n).load(model, RuntimeOptions(cache_dir=tmp_path))).predictions
        for n in (1, 2)
    ]
    assert all(np.array_equal(runs[0][sid], runs[1][sid]) for sid in dataset.ids)
