"""Share one variant's images among workers: chunks claimed through the prediction cache's locks.

Workers (pytest-xdist processes, CI jobs sharing a cache directory, threads) that need
the predictions of the same variant at the same time split its images instead of one
computing them all while the others wait: each takes the next chunk no one holds
(a non-blocking try-lock per chunk), computes it and writes it to the cache; when every
unfinished chunk is held by someone else, it waits for those and reads them back. Each
image is predicted once overall, and since the cache is lossless the results do not
depend on which worker computed which image.

Chunk boundaries are fixed by the list of images (not by what happens to be missing),
so every worker names the same chunks; the key of a chunk covers its images, so a
different list (another golden set, another shard) never shares a chunk's lock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TypeVar

Item = TypeVar("Item")

DEFAULT_CHUNK = 8  # images: one ISNet chunk is ~10 s of inference on 2 cores, worth a lock


def fill_in_chunks(
    items: Sequence[Item],
    size: int,
    done: Callable[[Item], bool],
    claim: Callable[[Sequence[Item]], AbstractContextManager[bool]],
    wait: Callable[[Sequence[Item]], AbstractContextManager[object]],
    fill: Callable[[Sequence[Item]], None],
) -> None:
    """Make ``done`` true for every item, calling ``fill(chunk)`` only on chunks this worker holds.

    ``claim(chunk)`` tries the chunk's lock without waiting (giving whether it is ours),
    ``wait(chunk)`` takes it waiting; ``fill(chunk)`` reads what others wrote and computes
    the rest (a worker that failed midway leaves work that the next holder does).
    """
    size = max(1, size)
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    held_elsewhere = []
    for chunk in chunks:
        if all(done(item) for item in chunk):
            continue
        with claim(chunk) as ours:
            if ours:
                fill(chunk)
            else:
                held_elsewhere.append(chunk)
    for chunk in held_elsewhere:
        with wait(chunk):
            fill(chunk)
