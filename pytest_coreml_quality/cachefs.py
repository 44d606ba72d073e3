"""Crash-safe cache primitives shared by every on-disk cache of the project.

Every cache entry is written into a temporary sibling and renamed into place, so a run
that is killed midway never leaves a half-written entry that a later run would trust.
Builds that are expensive take a file lock so that pytest-xdist workers (or two CI jobs
sharing a cache directory) build each entry once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from pytest_coreml_quality.cachecheck import space_error

_CHUNK = 1 << 20


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp makes the file private (0600); give it what a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        full = space_error(exc, target, len(data))
        if full is not None:
            raise full from None
        raise
    return target


def _umask() -> int:
    # The only portable way to read the umask is to set it; put it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path (file or directory) to build; move it to ``path`` on success.

    The temporary path lives next to the target (same filesystem, so the final rename is
    atomic) and carries the target's suffix, because coremltools decides the format of a
    saved model (``.mlmodel`` file or ``.mlpackage`` directory) from the suffix.
    On any exception the partial output is removed and ``path`` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    tmp = scratch / target.name
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"build produced nothing at {tmp}")
        remove_path(target)
        os.replace(tmp, target)
    except OSError as exc:
        # A full disk mid-build: say so once, with the directory, instead of a raw ENOSPC.
        full = space_error(exc, target, None)
        if full is None:
            raise
        shutil.rmtree(scratch, ignore_errors=True)
        raise full from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def remove_path(path: str | os.PathLike[str]) -> None:
    """Remove a file or a directory tree if it exists."""
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


@contextlib.contextmanager
def build_lock(path: str | os.PathLike[str], timeout: float = -1) -> Iterator[None]:
    """Hold an inter-process lock tied to the cache entry ``path`` (``<path>.lock``)."""
    lock_path = Path(str(path) + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path), timeout=timeout):
        yield


def hash_path(path: str | os.PathLike[str], algorithm: str = "blake2b") -> str:
    """Content hash of a file or a directory tree (relative names and bytes of every file).

    Independent of the path, timestamps and permissions, so copies of one model hash alike.
    """
    p = Path(path)
    h = hashlib.new(algorithm)
    if p.is_dir():
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            rel = f.relative_to(p).as_posix().encode("utf-8")
            h.update(len(rel).to_bytes(8, "little"))
            h.update(rel)
            h.update(f.stat().st_size.to_bytes(8, "little"))
            _update_from_file(h, f)
    else:
        _update_from_file(h, p)
    return h.hexdigest()


def _update_from_file(h: "hashlib._Hash", f: Path) -> None:
    with open(f, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)


def path_size(path: str | os.PathLike[str]) -> int:
    """Bytes on disk of a file, or of every file under a directory (an ``.mlpackage``)."""
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size
