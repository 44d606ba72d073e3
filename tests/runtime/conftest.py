"""Shared fixtures for the runtime tests (NeuralNetwork and ML Program translators, backends)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from pytest_coreml_quality.runtime.base import RuntimeOptions

# coremltools' conversion warnings (untested torch version, deprecated NeuralNetwork) are noise here.
warnings.filterwarnings("ignore", module="coremltools")


def require_torch() -> None:
    """Skip the calling test when torch (a test-only dependency) is not installed."""
    pytest.importorskip("torch", reason="torch builds the model zoo; install the 'test' extra")


@pytest.fixture(scope="session")
def runtime_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compiled-model cache directory for the whole session (translations are reused)."""
    return tmp_path_factory.mktemp("runtime-cache")


@pytest.fixture
def fresh_cache(tmp_path: Path) -> Path:
    """An empty cache directory for tests that look at cache behaviour."""
    d = tmp_path / "cache"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def fp32_options(runtime_cache: Path) -> RuntimeOptions:
    return RuntimeOptions(cache_dir=runtime_cache)


@pytest.fixture(scope="session")
def fp16_options(runtime_cache: Path) -> RuntimeOptions:
    return RuntimeOptions(precision="fp16", cache_dir=runtime_cache)
