"""One variant's per-image results through the on-disk cache, the golden set split among workers.

Masks (:class:`.evaluate.EvaluationResult`) and raw outputs (:class:`.tensors.TensorEvaluation`)
take the same path: read what the cache holds, note the damaged entries in one line, then
fill the rest chunk by chunk under each chunk's lock (:func:`.chunks.fill_in_chunks`), reading
what other workers wrote meanwhile and predicting what is still missing. A helper worker
(:meth:`CachedRun.predict_free_chunks`, see :mod:`.sharing`) fills only the chunks no one holds,
and counts an image as done by the same test as the main path: its entries read back usable
(a damaged entry is predicted again, not left for the scoring worker to redo).

A subclass says only what is particular to it: its images, where its cache and locks are,
and how one image's entries are read, checked and computed (:class:`CachedRun`'s hooks).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, Protocol, TypeVar

from pytest_coreml_quality.cachefs import Note, report_repair
from pytest_coreml_quality.chunks import fill_in_chunks
from pytest_coreml_quality.dataset import Sample
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.base import Predictor

Found = TypeVar("Found")  # what a run has read or computed so far (the subclass's own store)


class Tally(Protocol):
    """Where a run counts the images read from the cache and the images it predicted."""

    cache_hits: int
    cache_misses: int


@dataclass(frozen=True)
class CacheSetup:
    """A variant's place in the on-disk cache: the key naming its chunk locks, where they live,
    images per chunk, and who is told about damaged entries."""

    variant: str
    locks: Path
    chunk_size: int
    note: Note | None


class CachedRun(ABC, Generic[Found]):
    """The cache-and-chunks flow shared by mask and tensor evaluations (see the module docstring)."""

    cache_label: ClassVar[str]  # names the cache in the repair note: "prediction cache", "output cache"
    model: Model
    _lock: threading.RLock
    _predictor: Predictor | None

    # --- hooks ------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def computed(self) -> bool:
        """Whether the results are in memory already."""

    @property
    @abstractmethod
    def _tally(self) -> Tally: ...

    @abstractmethod
    def _samples(self) -> list[Sample]:
        """The images of the run, in the golden set's order."""

    @abstractmethod
    def _cache_setup(self) -> CacheSetup | None:
        """The variant's place in the cache; None when results are kept in memory only."""

    @abstractmethod
    def _new_found(self) -> Found: ...

    @abstractmethod
    def _complete(self, sample: Sample, found: Found) -> bool:
        """Whether ``found`` holds everything of ``sample``."""

    @abstractmethod
    def _read_entries(self, sample: Sample, found: Found) -> list[str]:
        """Put the usable cached entries of ``sample`` into ``found``; return what is wrong with the unusable ones."""

    @abstractmethod
    def _compute(self, missing: list[Sample], found: Found) -> None:
        """Predict ``missing`` into ``found`` and the cache, adding them to the tally's misses."""

    # --- the flow ---------------------------------------------------------------------------------
    def _gather(self) -> tuple[list[Sample], Found]:
        """Every image's results: from the cache, from other workers' chunks, or predicted here."""
        samples = self._samples()
        tally = self._tally
        tally.cache_hits = tally.cache_misses = 0  # counted afresh if a failed run is retried
        found = self._new_found()
        setup = self._cache_setup()
        if setup is None:
            self._compute(samples, found)
            return samples, found
        damaged: list[tuple[str, str]] = []
        self._read_cached(samples, found, damaged)
        if damaged:
            count = len(damaged)
            report_repair(
                setup.note,
                f"{self.cache_label} of {self.model.name}: {count} damaged entr{'y' if count == 1 else 'ies'} "
                f"ignored and recomputed (image '{damaged[0][0]}': {damaged[0][1]})",
            )
        # Workers that need this variant split its images (see .chunks).
        fill_in_chunks(
            samples,
            setup.chunk_size,
            setup.variant,
            setup.locks,
            done=lambda s: self._complete(s, found),
            fill=lambda chunk: self._fill(chunk, found),
        )
        return samples, found

    def predict_free_chunks(self) -> int:
        """Predict into the cache the chunks of images no other worker holds, waiting for none;
        return how many images this call predicted (an idle xdist worker helping, see .sharing).

        An image is done when its cache entries read back usable, as for the main path. The
        model is loaded only if a chunk is left to predict, and let go afterwards: the worker
        that scores this variant reads every chunk back from the cache.
        """
        setup = self._cache_setup()
        if setup is None or self.computed:
            return 0
        found = self._new_found()
        before = self._tally.cache_misses
        with self._lock:
            try:
                fill_in_chunks(
                    self._samples(),
                    setup.chunk_size,
                    setup.variant,
                    setup.locks,
                    done=lambda s: self._complete(s, found) or self._cached(s),
                    fill=lambda chunk: self._fill(chunk, found),
                    wait=False,
                )
            finally:
                self._predictor = None
        return self._tally.cache_misses - before

    def _cached(self, sample: Sample) -> bool:
        """Whether every entry of ``sample`` is in the cache and usable (read and checked, not kept)."""
        scratch = self._new_found()
        self._read_entries(sample, scratch)
        return self._complete(sample, scratch)

    def _read_cached(self, samples: Sequence[Sample], found: Found, damaged: list[tuple[str, str]] | None = None) -> None:
        """Put the cached results of ``samples`` into ``found``; note unusable entries in ``damaged``."""
        for sample in samples:
            if self._complete(sample, found):
                continue
            problems = self._read_entries(sample, found)
            if damaged is not None:
                damaged.extend((sample.id, problem) for problem in problems)
            if self._complete(sample, found):
                self._tally.cache_hits += 1

    def _fill(self, chunk: Sequence[Sample], found: Found) -> None:
        """Complete ``found`` for ``chunk`` (we hold its lock): read what was written meanwhile, predict the rest."""
        self._read_cached(chunk, found)
        self._compute([s for s in chunk if not self._complete(s, found)], found)


__all__ = ["CacheSetup", "CachedRun", "Tally"]
