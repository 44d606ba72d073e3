"""What a timed cold load includes on the onnx backend (issue 14 §6).

A cold round starts from the model file: it reads and parses the spec into a new
``Model``, hashes the bytes for the cache key, translates, optimises and creates the
session. A warm round reuses the cached optimised graph and the opened model. The
zero-input probe of a new entry runs after the timed call (it is one prediction).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_coreml_quality import model as model_module
from pytest_coreml_quality.loadtime import loader, time_plainly, time_with_benchmark
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.base import RuntimeOptions
from pytest_coreml_quality.runtime.onnx import backend as onnx_backend
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend

TINY = Path(__file__).resolve().parents[2] / "fixtures" / "models" / "TinySeg.mlmodel"


class Counts:
    """How often a round read the spec, hashed the file, translated and probed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.spec_reads = self.hashes = self.translations = self.probes = 0
        read, digest = model_module._load_spec, model_module.hash_path
        translate, probe = onnx_backend.translate, onnx_backend.probe

        def counted_read(*args: Any) -> Any:
            self.spec_reads += 1
            return read(*args)

        def counted_hash(p: Path) -> str:
            self.hashes += 1
            return digest(p)

        def counted_translate(m: Model, o: RuntimeOptions, **kwargs: Any) -> Any:
            self.translations += 1
            return translate(m, o, **kwargs)

        def counted_probe(m: Model, s: Any) -> None:
            self.probes += 1
            probe(m, s)

        monkeypatch.setattr(model_module, "_load_spec", counted_read)
        monkeypatch.setattr(model_module, "hash_path", counted_hash)
        monkeypatch.setattr(onnx_backend, "translate", counted_translate)
        monkeypatch.setattr(onnx_backend, "probe", counted_probe)

    def reset(self) -> None:
        self.spec_reads = self.hashes = self.translations = self.probes = 0

    def as_tuple(self) -> tuple[int, int, int, int]:
        return self.spec_reads, self.hashes, self.translations, self.probes


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Counts:
    return Counts(monkeypatch)


def test_every_cold_round_rereads_the_file_and_translates_and_warm_rounds_do_not(
    counts: Counts, fresh_cache: Path
) -> None:
    model = Model.open(TINY)
    assert model.content_hash  # the opened model has its hash memoised, as in a plugin run
    options = RuntimeOptions(cache_dir=fresh_cache)
    backend = OnnxBackend()
    counts.reset()
    time_plainly(backend, model, options, "cold", rounds=2)
    # (spec reads, file hashes, translations, probes): every round from the file, each new entry probed
    assert counts.as_tuple() == (2, 2, 2, 2)
    counts.reset()
    time_plainly(backend, model, options, "warm", rounds=2)
    assert counts.as_tuple() == (0, 0, 0, 0)  # the cached graph and the opened model are reused


def test_a_cold_round_loads_a_new_model_and_probes_only_after_the_timed_call(counts: Counts, fresh_cache: Path) -> None:
    model = Model.open(TINY)
    load, setup, finish = loader(OnnxBackend(), model, RuntimeOptions(cache_dir=fresh_cache), "cold")
    setup()
    counts.reset()
    predictor = load()  # what the clock measures
    assert predictor.model is not model and predictor.model.spec is not model.spec
    assert predictor.model.path == model.path
    assert counts.as_tuple() == (1, 1, 1, 0) and predictor.probe_pending
    finish()
    assert counts.probes == 1 and not predictor.probe_pending
    finish()  # completing twice does not probe twice
    assert counts.probes == 1


class _Benchmark:
    """The part of pytest-benchmark's fixture the load timer uses: pedantic rounds with setup."""

    disabled = False

    def __init__(self) -> None:
        self.extra_info: dict[str, Any] = {}
        self.stats = type("S", (), {"stats": type("T", (), {"median": 0.5})()})()

    def pedantic(self, target: Any, setup: Any, rounds: int, iterations: int, warmup_rounds: int) -> Any:
        result = None
        for _ in range(rounds):
            setup()
            result = target()
        return result


def test_the_benchmark_timer_completes_every_cold_round_too(counts: Counts, fresh_cache: Path) -> None:
    model = Model.open(TINY)
    # Hashed before counting, as in a plugin run: whether an earlier test in this process left
    # the hash memoised must not change the count (it made this test order-dependent).
    assert model.content_hash
    counts.reset()
    seconds, _ = time_with_benchmark(_Benchmark(), OnnxBackend(), model, RuntimeOptions(cache_dir=fresh_cache),
                                     "cold", rounds=3)
    assert seconds == 0.5
    assert counts.as_tuple() == (3, 3, 3, 3)  # the last round's probe ran after pedantic returned
