"""Shared test helpers: paths to the project's fixtures, and small models built on demand."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"

# coremltools warns at import about optional frontends (sklearn, untested torch): noise here.
warnings.filterwarnings("ignore", module="coremltools")



def _import_what_the_plugin_imports_lazily() -> None:
    """Import coremltools, onnx, onnxruntime and every plugin module now, once.

    pytester restores ``sys.modules`` after each in-process run. Extension modules that
    register global state (torch's op libraries, protobuf descriptors in onnx) abort the
    process when they are imported a second time, so they must be in ``sys.modules``
    before the first pytester snapshot is taken.
    """
    import importlib
    import pkgutil

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import coremltools  # noqa: F401
        import coremltools.models.neural_network.quantization_utils  # noqa: F401
        import coremltools.optimize.coreml  # noqa: F401
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401

        try:  # the optional 'plot' extra
            import matplotlib
            import matplotlib.figure  # noqa: F401

            matplotlib.use("Agg", force=True)
        except ImportError:
            pass

        import pytest_coreml_quality

        for info in pkgutil.walk_packages(pytest_coreml_quality.__path__, "pytest_coreml_quality."):
            if info.name.endswith(".coreml"):
                continue  # the macOS backend imports coremltools' native bridge only where it exists
            importlib.import_module(info.name)


_import_what_the_plugin_imports_lazily()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The committed fixtures: models/ and golden/ made by fixtures/make_fixtures.py."""
    return FIXTURES


@pytest.fixture(scope="session")
def fixture_models_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "models"
