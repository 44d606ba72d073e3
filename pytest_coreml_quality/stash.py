"""Where the run's :class:`QualitySession` lives in pytest's config stash.

Its own module so that the plugin, the generated items and the fixtures all reach the
session without importing one another.
"""

from __future__ import annotations

import pytest

from pytest_coreml_quality.session import QualitySession

SESSION_KEY = pytest.StashKey[QualitySession]()


def session_of(config: pytest.Config) -> QualitySession | None:
    """The run's session, or None before ``pytest_configure`` made it."""
    return config.stash.get(SESSION_KEY, None)
