"""Keep coremltools' noise out of the user's test output.

* Import-time notices: coremltools logs that its native Core ML bridge is missing (always
  true off macOS, where this plugin runs models itself) and that installed torch /
  scikit-learn versions are untested. None of it concerns the user's model, and it would
  precede every pytest run; everything else coremltools logs passes through unchanged.
* While it compresses, it print()s per-layer lines and draws tqdm bars:
  :func:`quiet_coremltools` captures them, keeping the text so that a failed build can
  show what coremltools said.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator

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


class CapturedOutput:
    """What coremltools wrote to stdout/stderr during one build."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.text.strip().splitlines()[-lines:])


@contextlib.contextmanager
def quiet_coremltools() -> Iterator[CapturedOutput]:
    """Redirect stdout/stderr into a buffer, hide warnings and tqdm bars, mute its logger."""
    captured = CapturedOutput()
    logger = logging.getLogger("coremltools")
    old_level = logger.level
    old_tqdm = os.environ.get("TQDM_DISABLE")
    # tqdm >= 4.66 honours TQDM_DISABLE for bars created while it is set.
    os.environ["TQDM_DISABLE"] = "1"
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(captured.stream), contextlib.redirect_stderr(
            captured.stream
        ):
            warnings.simplefilter("ignore")
            yield captured
    finally:
        logger.setLevel(old_level)
        if old_tqdm is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old_tqdm
