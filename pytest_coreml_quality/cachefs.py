"""Crash-safe cache primitives shared by every on-disk cache of the project.

Every cache entry is written into a temporary sibling and renamed into place, so a run
that is killed midway never leaves a half-written entry that a later run would trust.
Builds that are expensive take a file lock so that pytest-xdist workers (or two CI jobs
sharing a cache directory) build each entry once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

from pytest_coreml_quality.cachecheck import space_error

if TYPE_CHECKING:
    import numpy as np

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


def _lock_path(path: str | os.PathLike[str]) -> str:
    """The lock file of the cache entry ``path`` (``<path>.lock``), its folder made if missing."""
    lock_path = Path(f"{os.fspath(path)}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    return str(lock_path)


@contextlib.contextmanager
def build_lock(path: str | os.PathLike[str], timeout: float = -1) -> Iterator[None]:
    """Hold an inter-process lock tied to the cache entry ``path`` (``<path>.lock``)."""
    with FileLock(_lock_path(path), timeout=timeout):
        yield


@contextlib.contextmanager
def try_lock(path: str | os.PathLike[str]) -> Iterator[bool]:
    """Take the lock of :func:`build_lock` if it is free, without waiting: yields whether we hold it.

    Lets workers share a list of jobs: each claims the jobs no one else holds, then waits
    (with :func:`build_lock`) only for the ones others are doing.
    """
    lock = FileLock(_lock_path(path), blocking=False)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


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


# --- content digests: every cache entry carries one, bound to its key -------------------------
#
# A digest covers the entry's key and the bytes of its files, so a damaged file, a file
# copied in from another entry (same size or not) and a whole entry copied under another
# key all fail verification; the caller then treats the entry as a miss and rebuilds it.

DIGEST_FILE = "digest.json"
ABSENT = "absent"  # what entry_problem says when there is simply no entry (a plain miss)

# Files hashed in this process, keyed by everything that changes when a file is rewritten
# (inode, size, mtime, ctime): a warm load of a 176 MB model hashes its weights once per
# process. Files changed very recently are never memoised, because a rewrite within one
# timestamp tick would keep the same stamps (git's "racily clean" problem): a tick is at
# most 10 ms on Linux and macOS, but whole seconds on some filesystems (FAT, network mounts).
_FILE_DIGESTS: dict[tuple[int, int, int, int, int], bytes] = {}
_FILE_DIGESTS_LOCK = threading.Lock()
_RACY_SECONDS = 0.05
_RACY_SECONDS_COARSE = 2.0


def parts_digest(*parts: str) -> str:
    """A cache key from text parts (each NUL-terminated, so ("ab", "c") and ("a", "bc") differ)."""
    h = hashlib.blake2b(digest_size=20)
    for part in parts:
        h.update(part.encode("utf-8") + b"\0")
    return h.hexdigest()


def keyed_digest(key: str, entry: str | os.PathLike[str], names: Sequence[str]) -> str:
    """blake2b over ``key`` and, per name, the name and the content of ``entry/name`` (file or tree).

    Raises ``OSError`` when a named file is missing or unreadable.
    """
    h = hashlib.blake2b(digest_size=32)
    _update_text(h, key)
    root = Path(entry)
    for name in names:
        _update_text(h, name)
        top = root / name
        files = sorted(x for x in top.rglob("*") if x.is_file()) if top.is_dir() else [top]
        for f in files:
            _update_text(h, f.relative_to(root).as_posix())
            h.update(_file_digest(f))
    return h.hexdigest()


def _update_text(h: "hashlib._Hash", text: str) -> None:
    data = text.encode("utf-8")
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)


def _file_digest(f: Path) -> bytes:
    st = f.stat()
    # No path in the key: an entry renamed into place keeps its files' inodes and stamps,
    # so the digest computed while writing it is reused by the first load.
    stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    with _FILE_DIGESTS_LOCK:
        known = _FILE_DIGESTS.get(stamp)
    if known is not None:
        return known
    h = hashlib.blake2b(digest_size=32)
    h.update(st.st_size.to_bytes(8, "little"))
    _update_from_file(h, f)
    digest = h.digest()
    if not _racy(st):
        with _FILE_DIGESTS_LOCK:
            _FILE_DIGESTS[stamp] = digest
    return digest


def _racy(st: os.stat_result) -> bool:
    """Whether a file changed so recently that its stamps may not tell a rewrite apart."""
    newest = max(st.st_mtime_ns, st.st_ctime_ns)
    coarse = newest % 1_000_000 == 0  # no sub-millisecond part: a filesystem with coarse timestamps
    return time.time() - newest / 1e9 < (_RACY_SECONDS_COARSE if coarse else _RACY_SECONDS)


def write_entry_digest(entry: str | os.PathLike[str], key: str, names: Sequence[str]) -> None:
    """Write ``entry/digest.json`` for the files ``names``; call it on the entry before it is renamed into place."""
    record = {"key": key, "files": list(names), "blake2b": keyed_digest(key, entry, names)}
    atomic_write_text(Path(entry) / DIGEST_FILE, json.dumps(record, indent=1))


def entry_problem(entry: str | os.PathLike[str], key: str, required: Sequence[str] = ()) -> str | None:
    """None when ``entry`` is complete and matches its digest; else what is wrong with it.

    :data:`ABSENT` when there is no entry at all (a plain miss, nothing to report).
    ``required`` names files the entry must hold (they must also be covered by the digest).
    """
    root = Path(entry)
    if not root.is_dir():
        return ABSENT
    try:
        record = json.loads((root / DIGEST_FILE).read_text("utf-8"))
        names = [str(n) for n in record["files"]]
        stored, owner = str(record["blake2b"]), str(record["key"])
    except FileNotFoundError:
        return f"its {DIGEST_FILE} is missing"
    except (OSError, ValueError, KeyError, TypeError):
        return f"its {DIGEST_FILE} is unreadable"
    if owner != key:
        return "it was copied from another entry"
    missing = [n for n in required if n not in names or not (root / n).exists()]
    missing += [n for n in names if n not in missing and not (root / n).exists()]
    if missing:
        return f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing"
    try:
        actual = keyed_digest(key, root, names)
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or type(exc).__name__})"
    if actual != stored:
        return "its content does not match its digest"
    return None


_SEAL_MAGIC = b"CMQSEAL1"
_SEAL_BYTES = 32


def seal(key: str, payload: bytes) -> bytes:
    """``payload`` prefixed with a digest of (key, payload): one file that verifies itself."""
    return _SEAL_MAGIC + _payload_digest(key, payload) + payload


def unseal(key: str, data: bytes) -> bytes | None:
    """The payload of a :func:`seal`-ed blob written for ``key``; None if damaged or written for another key."""
    head = len(_SEAL_MAGIC) + _SEAL_BYTES
    if len(data) < head or not data.startswith(_SEAL_MAGIC):
        return None
    payload = data[head:]
    if data[len(_SEAL_MAGIC) : head] != _payload_digest(key, payload):
        return None
    return payload


def read_sealed_array(path: Path, key: str) -> tuple["np.ndarray | None", str | None]:
    """A numpy array stored :func:`seal`-ed at ``path`` for ``key``.

    ``(array, None)`` on a hit, ``(None, None)`` when absent (never written, or removed by a
    concurrent cache clear), ``(None, why)`` when the entry is unusable.
    """
    import io

    import numpy as np

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"unreadable ({exc.strerror or type(exc).__name__})"
    payload = unseal(key, data)
    if payload is None:
        return None, "its content does not match its digest"
    try:
        return np.load(io.BytesIO(payload), allow_pickle=False), None
    except Exception:  # sealed but malformed: written by a bug, not worth trusting
        return None, "not an array"


def _payload_digest(key: str, payload: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=_SEAL_BYTES)
    _update_text(h, key)
    h.update(payload)
    return h.digest()


Note = Callable[[str], None]


class CacheRepairWarning(UserWarning):
    """A damaged cache entry was found and rebuilt (shown when no note callback is given)."""


def report_repair(note: Note | None, line: str) -> None:
    """Say one line about a repaired cache entry: through ``note``, else as a warning."""
    if note is not None:
        note(line)
    else:
        warnings.warn(CacheRepairWarning(line), stacklevel=3)
