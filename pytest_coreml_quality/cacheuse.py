"""Which runs are using a cache directory, and clearing it without pulling entries from under them.

Every run that works on a cache directory holds a shared ``flock`` on
``<cache_dir>/.in-use.lock`` from start to finish (pytest-xdist workers each hold one
too). ``--coreml-cache-clear`` takes the same lock exclusively, so it waits until no other
run is reading or writing entries, then removes only what the plugin itself puts there
(:data:`CACHE_PARTS` and their lock files): a cache directory the user pointed at a folder
holding other files keeps those files. Without ``fcntl`` (Windows) runs are not coordinated.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from pytest_coreml_quality.cachefs import path_size, remove_path

try:
    import fcntl
except ImportError:  # pragma: no cover - not on the platforms CI runs
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".in-use.lock"
# What the session writes under its cache directory: built variants, compiled models,
# predictions, and the mask contracts decided on each model's first image.
CACHE_PARTS = ("variants", "compiled", "predictions", "masks")


class CacheUse:
    """A run's hold on a cache directory (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._fd: int | None = None

    def _lock(self, flags: int) -> None:
        if fcntl is None:
            return
        if self._fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(self._fd, flags)

    def hold(self) -> None:
        """Mark the directory as in use by this run (a shared lock, until :meth:`release`)."""
        self._lock(fcntl.LOCK_SH if fcntl else 0)

    def clear(self, waiting: Callable[[], None] | None = None, blocking: bool = True) -> int | None:
        """Remove every cache part once no other run uses the directory; return the bytes freed.

        ``waiting`` is called once if another run holds the directory and we have to wait.
        With ``blocking=False``, return None instead of waiting. Afterwards this run holds
        the directory (shared), as after :meth:`hold`.
        """
        if fcntl is not None:
            try:
                self._lock(fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not blocking:
                    return None
                if waiting is not None:
                    waiting()
                self._lock(fcntl.LOCK_EX)
        try:
            freed = 0
            for part in CACHE_PARTS:
                path = self.directory / part
                if path.exists():
                    freed += path_size(path)
                remove_path(path)
                remove_path(Path(f"{path}.lock"))
            return freed
        finally:
            self.hold()  # downgrade: other runs may start using the emptied directory

    def release(self) -> None:
        """Let go of the directory (closing the descriptor drops the lock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


__all__ = ["CACHE_PARTS", "CacheUse", "LOCK_NAME"]
