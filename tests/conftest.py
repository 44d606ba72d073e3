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
        import scipy.ndimage  # noqa: F401  # weighted F-measure and SSIM import it lazily

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


XDIST_VARIABLES = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")


@pytest.fixture
def plain_run_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inner (pytester) runs behave like a user's plain run, even when this suite runs under xdist.

    xdist marks its workers through the environment, and pytest-benchmark disables itself
    when it sees that; the in-process inner runs would inherit it.
    """
    for name in XDIST_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def failure_sections(result: pytest.RunResult) -> str:
    """An inner run's output without its short summary lines, whose length follows the terminal width."""
    return "\n".join(line for line in result.stdout.lines if not line.startswith(("FAILED ", "ERROR ")))


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache directory per test module: variants and translations are built once, as in real CI."""
    return tmp_path_factory.mktemp("coreml-cache")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The committed fixtures: models/ and golden/ made by fixtures/make_fixtures.py."""
    return FIXTURES


@pytest.fixture(scope="session")
def fixture_models_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "models"
