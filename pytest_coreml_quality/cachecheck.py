"""Is the cache directory usable, and what to say when the disk fills up mid-run.

:func:`check_cache_dir` runs once at start, so a cache directory that is a regular file,
lies under one, is read-only or sits on a full disk is one usage error instead of a raw
``NotADirectoryError`` / ``PermissionError`` / ``ENOSPC`` traceback in every item.
:func:`space_error` turns a full disk while writing one cache entry into a
:class:`CacheSpaceError` naming the directory and the space the entry needed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

from pytest_coreml_quality.errors import CoreMLQualityError

# Errors that mean "no room left": the disk itself, or the user's quota on it.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# Bytes written by the start-up probe: one filesystem block, enough to hit a full disk.
_PROBE_BYTES = 4096


class CacheSpaceError(CoreMLQualityError):
    """The disk (or quota) holding the cache directory filled up while writing an entry."""


def check_cache_dir(path: Path) -> str | None:
    """Create ``path`` if needed and prove it writable; return what is wrong, or None.

    The answer is a phrase to follow the directory's name ("is a regular file, ..."),
    so the caller can say which option set it.
    """
    existing = next((p for p in (path, *path.parents) if p.exists() or p.is_symlink()), None)
    if existing is not None and existing.is_symlink() and not existing.exists():
        where = "is" if existing == path else f"lies under {existing}, which is"
        return f"{where} a symbolic link to a missing target ({os.readlink(existing)})"
    if existing is not None and not existing.is_dir():
        if existing == path:
            return "is a regular file, not a directory"
        return f"lies under {existing}, which is a regular file, not a directory"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot be created ({_reason(exc)})"
    # os.access answers for the real user; root passes it, so the probe below still writes.
    if not os.access(path, os.W_OK | os.X_OK):
        return "is not writable (permission denied)"
    try:
        fd, probe = tempfile.mkstemp(prefix=".coreml-quality-probe-", dir=path)
    except OSError as exc:
        return f"is not writable ({_reason(exc)})"
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(b"\0" * _PROBE_BYTES)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        return f"is not writable ({_reason(exc)})"
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)
    return None


def space_error(exc: BaseException, target: Path, needed: int | None) -> CacheSpaceError | None:
    """A :class:`CacheSpaceError` for ``exc`` if it says the disk is full, else None.

    ``needed`` is the size of the entry being written (None when unknown, e.g. a build
    that stopped halfway): the message tells the user how much to free.
    """
    if not isinstance(exc, OSError) or exc.errno not in NO_SPACE_ERRNOS:
        return None
    directory = target.parent
    what = "disk quota exceeded" if exc.errno == errno.EDQUOT else "no space left on the device"
    need = f"{_size(needed)} needed" if needed is not None else "its size is unknown"
    free = _free_bytes(directory)
    have = f", {_size(free)} free" if free is not None else ""
    return CacheSpaceError(
        f"{what} while writing the cache entry {target.name} ({need}{have}); free some space or "
        "point --coreml-cache-dir at a larger disk. Nothing was half-written.",
        path=directory,
    )


def _reason(exc: OSError) -> str:
    if exc.errno in NO_SPACE_ERRNOS:
        return "no space left on the device"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or str(exc)


def _free_bytes(directory: Path) -> int | None:
    for p in (directory, *directory.parents):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(p).free
    return None


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} bytes"
    return f"{n / 1e3:.1f} KB" if n < 1_000_000 else f"{n / 1e6:.1f} MB"


__all__ = ["CacheSpaceError", "NO_SPACE_ERRNOS", "check_cache_dir", "space_error"]
