"""The files a run writes (JSON and HTML reports, a saved baseline): checked before any work.

A report path that cannot be written is found at start, as a usage error, instead of
losing every report at the end of a long run; a path that would overwrite something the
user owns (the model, a golden-set file, another report, the baseline being compared
against) is refused outright.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from pytest_coreml_quality.errors import CoreMLQualityError

EXPECTED = "a writable file path that is not the model, a golden-set file or another report"


def check_output_paths(outputs: Mapping[str, Path], protected: Mapping[str, Iterable[Path]]) -> None:
    """Raise one :class:`CoreMLQualityError` naming every output path that cannot or must not be written.

    ``outputs`` maps an option name (``--coreml-report-json``) to its path; ``protected``
    maps a description ("the model", "a golden-set file") to paths that must survive the run.
    A path inside a protected directory (an ``.mlpackage``) is refused too.
    """
    problems: list[str] = []
    owned: list[tuple[Path, str]] = [(_real(p), what) for what, paths in protected.items() for p in paths]
    seen: dict[Path, str] = {}
    for flag, path in outputs.items():
        real = _real(path)
        problem = _unwritable(path) or _clash(real, owned) or (f"is also given as {seen[real]}" if real in seen else None)
        if problem:
            problems.append(f"{flag}={path}: {problem}")
        seen.setdefault(real, flag)
    if problems:
        raise CoreMLQualityError("report paths: " + "; ".join(problems), expected=EXPECTED)


def _real(path: Path) -> Path:
    try:
        return Path(os.path.realpath(path))
    except (OSError, RuntimeError):  # a symlink loop: compared as written
        return Path(os.path.abspath(path))


def _unwritable(path: Path) -> str | None:
    """Why ``path`` cannot be written as a file, or None."""
    if path.is_dir():
        return "is a directory"
    if path.exists() and not os.access(path, os.W_OK):
        return "exists and is not writable"
    ancestor = path.parent
    while not ancestor.exists():
        if ancestor.is_symlink():  # a dangling link in the way
            return f"{ancestor} is a broken symbolic link"
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot create files in {ancestor} (not writable)"
    return None


def _clash(real: Path, owned: list[tuple[Path, str]]) -> str | None:
    for other, what in owned:
        if real == other:
            return f"would overwrite {what} ({other})"
        if other.is_dir() and other in real.parents:
            return f"lies inside {what} ({other})"
    return None
