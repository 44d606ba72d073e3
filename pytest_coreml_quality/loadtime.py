"""Cold and warm model loads, timed through pytest-benchmark or a plain timer.

Cold: the backend's compiled cache is evicted first and the load starts from the model
file (``load_cold``): Core ML compiles a fresh ``.mlmodelc`` from the ``.mlmodel`` and loads
it; the onnx backend reads and parses the file into a new ``Model``, hashes it, translates,
optimises and creates the session. Warm: the cache is primed, so loading reuses the
compiled model, as an app's second launch does. Work a backend does after a cold load that
is not loading (the onnx backend's zero-input probe, one prediction) runs outside the timed
call, through the backend's ``finish_load``.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.base import Backend, RuntimeOptions

Temperature = Literal["cold", "warm"]


def loader(
    backend: Backend, model: Model, options: RuntimeOptions, temperature: Temperature
) -> tuple[Callable[[], Any], Callable[[], None], Callable[[], None]]:
    """``(load, setup, finish)`` for timed rounds: ``setup`` evicts (cold) or primes (warm) the
    cache before a round; ``finish`` completes the loads timed so far (untimed): call it after
    the last round. ``setup`` calls it too, so every round's load is completed before the next."""

    # A cold load starts from the file and must not hit a cache that outlives eviction
    # (Core ML keeps device specialisation by path; the onnx backend reuses the parsed spec
    # and the memoised hash): backends provide ``load_cold`` for it.
    load_cold = getattr(backend, "load_cold", None)
    finish_load = getattr(backend, "finish_load", None)
    loaded: list[Any] = []

    def load() -> Any:
        if temperature == "cold" and load_cold is not None:
            predictor = load_cold(model, options)
        else:
            predictor = backend.load(model, options)
        loaded.append(predictor)
        return predictor

    def finish() -> None:
        while loaded:
            predictor = loaded.pop()
            if finish_load is not None:
                finish_load(predictor)
            del predictor

    def setup() -> None:
        finish()
        if temperature == "cold":
            backend.evict(model, options)
        else:
            backend.load(model, options)  # primes the compiled cache; the timed load reuses it
        gc.collect()  # the previous round's predictor must not be freed inside the timed call

    return load, setup, finish


BENCHMARK_TIMER = "pytest-benchmark"
PLAIN_TIMER = "perf_counter (pytest-benchmark disabled)"


def time_with_benchmark(
    benchmark: Any, backend: Backend, model: Model, options: RuntimeOptions, temperature: Temperature, rounds: int
) -> tuple[float, str]:
    """Median load time through pytest-benchmark's ``pedantic``, and which timer took it.

    When pytest-benchmark is disabled (``--benchmark-disable``, xdist), it calls the
    function once without timing it, and warns if it is never called: that one call
    runs the plain timer instead.
    """
    if getattr(benchmark, "disabled", False):
        samples: list[float] = []
        benchmark.pedantic(lambda: samples.append(time_plainly(backend, model, options, temperature, rounds)), rounds=1, iterations=1)
        return samples[0], PLAIN_TIMER
    load, setup, finish = loader(backend, model, options, temperature)
    benchmark.extra_info.update({"coreml_load": temperature, "model": model.name})
    benchmark.pedantic(load, setup=setup, rounds=rounds, iterations=1, warmup_rounds=0)
    finish()
    return float(benchmark.stats.stats.median), BENCHMARK_TIMER


def time_plainly(backend: Backend, model: Model, options: RuntimeOptions, temperature: Temperature, rounds: int) -> float:
    """Median of ``rounds`` loads with ``time.perf_counter`` (used when pytest-benchmark is off)."""
    load, setup, finish = loader(backend, model, options, temperature)
    samples = []
    for _ in range(rounds):
        setup()
        start = time.perf_counter()
        load()
        samples.append(time.perf_counter() - start)
    finish()
    return statistics.median(samples)


def time_predictions(predictor: Any, inputs: Sequence[Mapping[str, Any]]) -> float:
    """Median milliseconds of one ``predict`` per input set (one untimed warm-up call first).

    The warm-up keeps one-off first-call work (Core ML's lazy allocations, onnxruntime's
    arena growth) out of the median, as Xcode's performance report does.
    """
    if not inputs:
        raise ValueError("no inputs to time predictions on")
    predictor.predict(inputs[0])
    samples = []
    for features in inputs:
        start = time.perf_counter()
        predictor.predict(features)
        samples.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(samples)
