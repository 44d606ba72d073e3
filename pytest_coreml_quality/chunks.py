"""Share one variant's images among workers: chunks claimed through the prediction cache's locks.

Workers (pytest-xdist processes, CI jobs sharing a cache directory, threads) that need
the predictions of the same variant at the same time split its images instead of one
computing them all while the others wait: each takes the next chunk no one holds
(a non-blocking try-lock per chunk), computes it and writes it to the cache; when every
unfinished chunk is held by someone else, it waits for those and reads them back. Each
image is predicted once overall, and since the cache is lossless the results do not
depend on which worker computed which image.

Chunk boundaries are fixed by the list of images and the worker count (not by what
happens to be missing), so every worker names the same chunks; the key of a chunk covers
its images, so a different list (another golden set, another shard) never shares a
chunk's lock. With more workers the chunks get smaller (:func:`chunk_size_for`), so that
every worker of a run finds chunks to claim.

A worker with nothing else to do may *help* (``wait=False``): it fills the chunks no one
holds and returns, leaving the chunks others hold to them (see :mod:`.sharing`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from pytest_coreml_quality.cachefs import build_lock, parts_digest, try_lock


class _Image(Protocol):
    @property
    def image_hash(self) -> str: ...


Item = TypeVar("Item", bound=_Image)

DEFAULT_CHUNK = 8  # images: one ISNet chunk is ~10 s of inference on 2 cores, worth a lock
CHUNKS_PER_WORKER = 2  # at least this many chunks per worker, so the last ones even out


def chunk_size_for(images: int, workers: int) -> int:
    """Images per chunk for ``images`` shared by ``workers`` processes: at most :data:`DEFAULT_CHUNK`,
    and small enough that each worker has about :data:`CHUNKS_PER_WORKER` chunks to claim."""
    if workers <= 1:
        return DEFAULT_CHUNK
    return max(1, min(DEFAULT_CHUNK, -(-images // (CHUNKS_PER_WORKER * workers))))


def xdist_workers(environ: Mapping[str, str] | None = None) -> int:
    """The pytest-xdist workers running side by side (``PYTEST_XDIST_WORKER_COUNT``; 1 without xdist)."""
    env = os.environ if environ is None else environ
    try:
        return max(1, int(env.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    except ValueError:
        return 1


def fill_in_chunks(
    items: Sequence[Item],
    size: int,
    variant_key: str,
    lock_dir: Path,
    done: Callable[[Item], bool],
    fill: Callable[[Sequence[Item]], None],
    wait: bool = True,
) -> int:
    """Make ``done`` true for every item, calling ``fill(chunk)`` only on chunks this worker holds.

    Each chunk has a lock in ``lock_dir`` named from ``variant_key`` and its images' hashes.
    A chunk whose lock is free is taken without waiting and filled; the chunks others hold
    are waited for afterwards, then filled too: ``fill(chunk)`` reads what others wrote and
    computes the rest (a worker that failed midway leaves work that the next holder does).
    ``wait=False`` (helping): fill the free chunks only and leave those held elsewhere to their
    holders, so ``done`` may still be false for some items. Returns the chunks this call filled.
    """
    size = max(1, size)
    chunks = [items[i : i + size] for i in range(0, len(items), size)]

    def lock(chunk: Sequence[Item]) -> Path:
        return lock_dir / parts_digest(variant_key, "chunk", *(item.image_hash for item in chunk))

    held_elsewhere = []
    filled = 0
    for chunk in chunks:
        if all(done(item) for item in chunk):
            continue
        with try_lock(lock(chunk)) as ours:
            if ours:
                fill(chunk)
                filled += 1
            else:
                held_elsewhere.append(chunk)
    if not wait:
        return filled
    for chunk in held_elsewhere:
        with build_lock(lock(chunk)):
            fill(chunk)
    return filled + len(held_elsewhere)
