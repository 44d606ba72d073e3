"""Keep onnxruntime's transient weight copies out of the resident set (glibc's malloc only).

While a session is created, onnxruntime copies every weight and reorders it for its blocked
(NCHWc) convolutions, freeing the intermediate buffers as it goes. glibc's malloc serves
buffers of up to its dynamic mmap threshold (which grows to 32 MiB once a large block is
freed) from its heap, and the freed holes between live blocks stay resident: creating the
ISNet package's session peaked at 279 MiB for 168 MiB of weights. With a fixed small
threshold every large buffer is a mapping of its own, returned to the system when freed,
and the peak is 194 MiB (figures: NOTES-m.md). Elsewhere (macOS, musl) both helpers do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# During a session's creation: glibc's initial threshold, but fixed (no dynamic growth).
_LOAD_MMAP_THRESHOLD = 128 * 1024
# Afterwards: the ceiling glibc's dynamic threshold reaches in a process that has freed a large
# block (any model's first inference does), and the trim threshold it pairs with it, so the
# rest of the run allocates as it would have without this module.
_RUN_MMAP_THRESHOLD = 32 * 1024 * 1024
_RUN_TRIM_THRESHOLD = 2 * _RUN_MMAP_THRESHOLD

_libc: Any = None


def _glibc() -> Any:
    """glibc's handle, or None off glibc (only glibc has mallopt's thresholds and malloc_trim)."""
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
            try:
                _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                _libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                _libc.malloc_trim.argtypes = [ctypes.c_size_t]
            except (OSError, AttributeError):
                _libc = False
    return _libc or None


def release_free_memory() -> None:
    """Return the heap's free pages to the system (after a build's scratch work is freed)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@contextmanager
def large_blocks_mapped() -> Iterator[None]:
    """Within the block, every allocation above 128 KiB is its own mapping (freed = returned)."""
    libc = _glibc()
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_THRESHOLD, _LOAD_MMAP_THRESHOLD)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _RUN_MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, _RUN_TRIM_THRESHOLD)
        libc.malloc_trim(0)
