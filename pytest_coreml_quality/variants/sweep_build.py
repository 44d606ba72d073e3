"""Build a sweep's variants in one pass, sharing work between them and using both cores.

:func:`build_variant` builds one variant at a time: quantize, write, hash, then zip the
file to measure its download size (a deflate pass over every byte, about as long as
the quantization itself). Building a whole sweep at once allows two savings, neither
of which changes a single byte of the variants:

* the zip of variant *k* runs in a thread while variant *k + 1* is quantized: zlib
  releases the GIL, so on two cores it costs almost nothing. The queue of zips is deep
  (:data:`MAX_PENDING`): the linear recipes build in a fraction of a second but zip for
  seconds, the k-means ones the other way round, so the zips of the first drain while
  the last are clustered. Entries are committed in sweep order;
* the ``qN-kmeans`` recipes share one sort of each weight tensor
  (:class:`~.kmeans1d.DistinctMemo`) instead of sorting it again at every bit width.

The :class:`~.sweep.SweepBudget` is charged the sweep's wall time, so its rule (no new
build once the builds so far plus their mean would exceed the budget) still holds.
Under a budget the queue is short (:data:`MAX_PENDING_BUDGETED`), so that the
zips' time reaches the budget's clock while it decides; zips in flight when it says
stop finish first (their time is charged too). A pending variant holds its cache entry's
lock until it is committed; before waiting for a lock another process holds, the pass
commits all it holds, so workers sweeping in different orders cannot deadlock.

A recipe that fails (or that the budget skips) is reported for that recipe alone, as
its outcome; the other recipes are built.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from pytest_coreml_quality.download import zip_size
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.variants.cache import PendingVariant, Progress, Variant, build_variant, is_cached, start_build
from pytest_coreml_quality.variants.kmeans1d import DistinctMemo
from pytest_coreml_quality.variants.recipes import Recipe, parse_recipe
from pytest_coreml_quality.variants.sweep import SweepBudget

Outcome = Variant | Exception  # a variant, or why there is none (RecipeError, SweepSkipped, ...)

MAX_PENDING = 16  # zips queued or running, without a budget
MAX_PENDING_BUDGETED = 2  # with one: one running, one queued behind a quick build
ZIP_THREADS = max(1, min(4, (os.cpu_count() or 2) - 1))  # the main thread keeps a core for the builds


def build_sweep(
    model: Model,
    recipes: Iterable[Recipe | str],
    cache_dir: Path,
    *,
    budget: SweepBudget | None = None,
    progress: Progress | None = None,
    note: Progress | None = None,
    label: Callable[[str], str] | None = None,
    overlap: bool = True,
    memo: DistinctMemo | None = None,
    max_pending: int | None = None,
    stop_at_budget: bool = False,
) -> dict[str, Outcome]:
    """Build (or read from the cache) every recipe in order; return each recipe's outcome by name.

    ``overlap=False`` zips each variant before building the next (as :func:`build_variant`
    does); ``memo`` defaults to a fresh one for this sweep. ``label`` names a recipe in the
    budget's skip list (default ``"<model> [<recipe>]"``). Cached variants cost no budget.
    With ``stop_at_budget``, the first recipe the budget would skip ends the pass instead
    (it and the rest get no outcome and are not listed: the caller asks again one by one).
    """
    memo = DistinctMemo() if memo is None else memo
    label = label or (lambda name: f"{model.name} [{name}]")
    clock = budget.clock if budget is not None else time.perf_counter
    outcomes: dict[str, Outcome] = {}
    pending: deque[tuple[PendingVariant, Future[int]]] = deque()

    def drain() -> None:
        while pending:  # commits in sweep order, releasing each entry's lock
            _finish(*pending.popleft(), outcomes)

    if max_pending is None:
        max_pending = MAX_PENDING if budget is None else MAX_PENDING_BUDGETED
    with ThreadPoolExecutor(max_workers=ZIP_THREADS, thread_name_prefix="sweep-zip") as pool:
        try:
            for item in recipes:
                try:
                    recipe = parse_recipe(item) if isinstance(item, str) else item
                except Exception as exc:  # a malformed name: its own outcome, as a failed build is
                    outcomes[str(item)] = exc
                    continue
                started = clock()
                if budget is not None and not is_cached(model, recipe, cache_dir) and not budget.allows_another():
                    if stop_at_budget:
                        break
                    outcomes[recipe.name] = budget.skip(label(recipe.name))
                    continue
                try:
                    built = (build_variant(model, recipe, cache_dir) if recipe.is_base else
                             start_build(model, recipe, cache_dir, progress, note=note, memo=memo, before_wait=drain))
                except Exception as exc:  # this recipe's failure, reported for it alone
                    outcomes[recipe.name] = exc
                    built = None
                if isinstance(built, Variant):  # cached, or built meanwhile by another worker: no cost
                    outcomes[recipe.name] = built
                    continue
                if built is not None:
                    pending.append((built, _zip(pool, built.file, overlap)))
                    while len(pending) > (max_pending if overlap else 0):
                        _finish(*pending.popleft(), outcomes)
                if budget is not None:
                    budget.charge(clock() - started)  # a build (or a failed attempt): its wall time
            started = clock()
            drain()  # the last zips
            if budget is not None:
                budget.charge(clock() - started, builds=0)
        except BaseException:  # interrupted: leave nothing half-done behind
            for built, size in pending:
                size.cancel()
                built.abandon()
            raise
    return outcomes


def _zip(pool: ThreadPoolExecutor, path: Path, overlap: bool) -> Future[int]:
    if overlap:
        return pool.submit(zip_size, path)
    done: Future[int] = Future()
    try:
        done.set_result(zip_size(path))
    except Exception as exc:
        done.set_exception(exc)
    return done


def _finish(built: PendingVariant, size: Future[int], outcomes: dict[str, Outcome]) -> None:
    """Commit one pending variant with its download size, or record why it could not be."""
    try:
        download = size.result()
    except BaseException as exc:
        built.abandon()
        if not isinstance(exc, Exception):
            raise
        outcomes[built.recipe.name] = exc
        return
    try:
        outcomes[built.recipe.name] = built.commit(download)
    except Exception as exc:  # commit cleaned up after itself
        outcomes[built.recipe.name] = exc
