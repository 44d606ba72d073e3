"""Keep coremltools' import-time environment notices out of the user's test output.

On import, coremltools logs that its native Core ML bridge is missing (always true off
macOS, where this plugin runs models itself) and that installed torch / scikit-learn
versions are untested. None of it concerns the user's model, and it would precede every
pytest run. Everything else coremltools logs passes through unchanged.
"""

from __future__ import annotations

import logging

_IRRELEVANT = (
    "Failed to load _ML",  # libcoremlpython exists only on macOS
    "has not been tested with coremltools",
    "is not supported. Minimum required version",
)


class _ImportNoticeFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in _IRRELEVANT)


_FILTER = _ImportNoticeFilter()


def silence_coremltools_import_notices() -> None:
    """Install the filter on the ``coremltools`` logger (idempotent; costs no import)."""
    logger = logging.getLogger("coremltools")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
