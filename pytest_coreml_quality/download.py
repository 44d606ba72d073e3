"""Download size: how many bytes a variant takes when served zipped (deflate).

Apps that fetch their model at first launch ship it as a zip of the ``.mlmodel`` file
or of the ``.mlpackage`` directory; weights that compress well (pruned zeros, small
palettes) cost less to download than their size on disk says. The size is measured by
writing that zip with :mod:`zipfile` into a sink that only counts bytes, so it is
exactly the length of the real archive without holding it in memory.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

from pytest_coreml_quality.cachefs import atomic_write_text

CACHE_SUBDIR = "download"
_ZIP_CHUNK = 16 << 20  # bytes per zlib call (see zip_size)


class _CountingSink(io.RawIOBase):
    """A seekable write-only stream that keeps no data, only the furthest byte written.

    Seekable on purpose: zipfile then rewrites local headers in place instead of adding
    data descriptors, which is what it does when writing a zip file on disk.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pos = 0
        self.size = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        n = len(memoryview(data))
        self._pos += n
        self.size = max(self.size, self._pos)
        return n

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self.size}[whence]
        self._pos = base + offset
        return self._pos


def archive_members(path: Path) -> list[tuple[Path, str]]:
    """(file, name in the archive) for a model file or every file of a package, sorted.

    Names start with the model's own name (``TinySeg.mlpackage/Manifest.json``), as
    when a user zips the model in a file browser.
    """
    path = Path(path)
    if path.is_file():
        return [(path, path.name)]
    members = [(f, f.relative_to(path.parent).as_posix()) for f in path.rglob("*") if f.is_file()]
    return sorted(members, key=lambda member: member[1])


def zip_size(path: str | os.PathLike[str]) -> int:
    """Bytes of the deflate zip of ``path`` (a model file or package directory).

    Exactly what ``ZipFile.write`` would produce (same headers, and deflate's output does
    not depend on how its input is split), but fed in large chunks: ``ZipFile.write``
    hands zlib 8 KB at a time, and each call takes the GIL back, so a zip running in a
    thread next to Python-heavy work (a sweep zips variant k while it builds k+1) would
    wait for the GIL thousands of times. zlib releases the GIL while it compresses.
    """
    sink = _CountingSink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:  # type: ignore[arg-type]
        for source, name in archive_members(Path(path)):
            info = zipfile.ZipInfo.from_file(source, arcname=name)  # as ZipFile.write makes it
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(source, "rb") as src, archive.open(info, "w") as dest:
                while chunk := src.read(_ZIP_CHUNK):
                    dest.write(chunk)
    return sink.size


def cached_zip_size(path: str | os.PathLike[str], content_hash: str, cache_dir: str | os.PathLike[str]) -> int:
    """:func:`zip_size`, remembered under ``cache_dir`` by the model's content hash.

    Deflating a 176 MB model takes seconds: a run that measured it once does not again.
    """
    entry = Path(cache_dir) / CACHE_SUBDIR / f"{content_hash}.json"
    try:
        size = json.loads(entry.read_text("utf-8"))["zip_bytes"]
        if isinstance(size, int) and size > 0:
            return size
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent or damaged: measure again and rewrite it
    size = zip_size(path)
    try:
        atomic_write_text(entry, json.dumps({"zip_bytes": size}))
    except OSError:
        pass  # a read-only cache only costs the measurement next time
    return size
