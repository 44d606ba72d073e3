"""Shared test helpers: paths to the project's fixtures, and small models built on demand."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"

# coremltools warns at import about optional frontends (sklearn, untested torch): noise here.
warnings.filterwarnings("ignore", module="coremltools")

# Import coremltools (and through it torch) before any pytester run: pytester restores
# sys.modules after each in-process run, and torch aborts when its C++ op libraries are
# imported a second time.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import coremltools  # noqa: F401


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The committed fixtures: models/ and golden/ made by fixtures/make_fixtures.py."""
    return FIXTURES


@pytest.fixture(scope="session")
def fixture_models_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "models"
