"""Real-world failures end to end (issue 11 §4, §6, §7): what a user sees through pytest."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import FIXTURES

MODEL = FIXTURES / "models" / "TinySeg.mlmodel"
GOLDEN = FIXTURES / "golden"


@pytest.fixture(autouse=True)
def plain_run_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inner runs behave like a user's plain run, even when this suite runs under xdist."""
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)


def test_without_the_cacheprovider_nothing_is_written_under_pytest_cache(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_cache = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(user_cache))
    result = pytester.runpytest(f"--coreml-model={MODEL}", f"--coreml-dataset={GOLDEN}", "--coreml-load-rounds=1",
                                "-p", "no:cacheprovider", "-p", "no:randomly")
    assert result.ret == 0, result.stdout.str()
    assert not (pytester.path / ".pytest_cache").exists()
    # The documented place: the user cache directory, shared with the onnx backend's default.
    written = user_cache / "pytest-coreml-quality"
    assert any(written.rglob("*")), "the run cached nothing"
    assert f"{written}" in result.stdout.str()  # the report header says where the cache is
