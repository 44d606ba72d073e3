"""Silence coremltools while it compresses: it print()s per-layer lines and draws tqdm bars.

The captured text is kept so that a failed build can show what coremltools said.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator


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
