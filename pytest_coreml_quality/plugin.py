"""pytest glue: options, ini keys, markers, the run-wide session and the report header.

Everything of substance lives in the core modules; this file only translates pytest's
world (config, items, fixtures) into calls of the core and errors into UsageError.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_coreml_quality.errors import CoreMLQualityError
from pytest_coreml_quality.session import QualitySession
from pytest_coreml_quality.settings import OPTIONS, SettingError, resolve

SESSION_KEY = pytest.StashKey[QualitySession]()

MARKERS = {
    "coreml_quality": "coreml_quality(max_mae=None, min_iou=None, max_drift=None, metric=None, variants=None): "
    "assert quality thresholds for Core ML model variants.",
    "coreml_size": "coreml_size(max_mb=None, max_ratio=None): assert size on disk of Core ML model variants.",
    "coreml_load": "coreml_load(max_cold_s=None, max_warm_s=None, min_speedup=None): "
    "assert cold and warm load times of Core ML model variants.",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("coreml-quality", "Core ML model quality (pytest-coreml-quality)")
    for spec in OPTIONS:
        kwargs: dict[str, object] = {"dest": spec.dest, "metavar": spec.metavar, "help": spec.help}
        if spec.multiple:
            kwargs["action"] = "append"
        group.addoption(spec.flag, **kwargs)
        parser.addini(spec.ini, spec.help, type="linelist" if spec.multiple else "string")


def pytest_configure(config: pytest.Config) -> None:
    for doc in MARKERS.values():
        config.addinivalue_line("markers", doc)
    try:
        settings = resolve(
            config.getoption,
            config.getini,
            invocation_dir=Path(config.invocation_params.dir),
            rootdir=config.rootpath,
        )
        # Only touch the disk (pytest's cache dir) when there is a model to work on.
        default_cache = _default_cache_dir(config) if settings.active else config.rootpath
        session = QualitySession.start(settings, default_cache_dir=default_cache)
    except (SettingError, CoreMLQualityError) as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[SESSION_KEY] = session


def pytest_report_header(config: pytest.Config) -> list[str]:
    session = config.stash.get(SESSION_KEY, None)
    return session.header_lines() if session is not None else []


def _default_cache_dir(config: pytest.Config) -> Path:
    """A folder inside pytest's own cache dir, so ``--cache-clear`` users know where it is."""
    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("coreml-quality"))
    return config.rootpath / ".pytest_cache" / "d" / "coreml-quality"
