"""Run a model over a list of images while helper threads do everything else.

Inference is the one step that must wait for the model; onnxruntime (and Core ML)
release the GIL while they run, so the steps around it can run at the same time:
one helper thread prepares the next images' inputs (resize, normalisation) and another
finishes the previous ones (post-processing, cache writes, metrics) while the calling
thread runs the model. Compared with a plain loop doing the three steps in turn:

* the same calls with the same arguments: ``prepare`` and ``finish`` each run in one
  thread, in image order, so a step whose first call decides something (a mask
  contract left on ``auto``) decides it from the same image;
* the same error: the one the plain loop would have met first. An error at image ``i``
  is raised only after every ``finish`` of the images before ``i`` has run (so what
  they write is written, as in the plain loop); if one of those fails, its error wins.
  Nothing is finished after the failing image, so no cache entry follows it;
* bounded memory: at most ``ahead`` prepared inputs and ``ahead`` unfinished outputs;
* no thread outlives the call, whether it returns or raises.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

Item = TypeVar("Item")

THREAD_PREFIX = "coreml-quality-overlap"


def run_overlapped(
    items: Sequence[Item],
    prepare: Callable[[Item], Any],
    predict: Callable[[Item, Any], Any],
    finish: Callable[[Item, Any], None],
    ahead: int = 2,
) -> None:
    """For each item, in order: ``finish(item, predict(item, prepare(item)))`` (see the module docstring).

    ``predict`` runs in the calling thread; ``prepare`` and ``finish`` in one helper thread each.
    """
    if not items:
        return
    ahead = max(1, ahead)
    preparing = ThreadPoolExecutor(1, thread_name_prefix=f"{THREAD_PREFIX}-prepare")
    finishing = ThreadPoolExecutor(1, thread_name_prefix=f"{THREAD_PREFIX}-finish")
    prepared: deque[Future[Any]] = deque()
    unfinished: deque[Future[None]] = deque()
    upcoming = iter(items)
    failed = False  # set by the finishing thread: no image after a failed one is finished

    def finish_unless_failed(item: Item, outputs: Any) -> None:
        nonlocal failed
        if failed:
            return
        try:
            finish(item, outputs)
        except BaseException:
            failed = True
            raise

    def prepare_next() -> None:
        item = next(upcoming, _END)
        if item is not _END:
            prepared.append(preparing.submit(prepare, item))

    try:
        for _ in range(ahead):
            prepare_next()
        for item in items:
            error: BaseException | None = None
            try:
                inputs = prepared.popleft().result()
                prepare_next()
                outputs = predict(item, inputs)
                del inputs  # one image's input fewer in memory while the next one runs
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the earlier images
                error = exc
            if error is not None:
                _settle(unfinished)  # an earlier image's error comes first, as in a plain loop
                raise error
            unfinished.append(finishing.submit(finish_unless_failed, item, outputs))
            while len(unfinished) > ahead:
                unfinished.popleft().result()
        _settle(unfinished)
    finally:
        # After an error: what has not started never starts; what runs is waited for.
        preparing.shutdown(wait=True, cancel_futures=True)
        finishing.shutdown(wait=True, cancel_futures=True)


_END = object()


@contextmanager
def meanwhile(work: Callable[[Callable[[], bool]], None]) -> Iterator[None]:
    """Run ``work(stopped)`` in a helper thread while the ``with`` block runs.

    For optional work ahead of time (preparing what later steps would otherwise compute
    themselves): on leaving the block ``stopped()`` turns true and the thread is waited for,
    so ``work`` should check it between small steps. An error in ``work`` is dropped: the
    step that needs the result computes it again and meets the error where it is reported.
    """
    stop = threading.Event()

    def run() -> None:
        try:
            work(stop.is_set)
        except Exception:  # noqa: BLE001 - see the docstring
            pass

    thread = threading.Thread(target=run, name=f"{THREAD_PREFIX}-meanwhile", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _settle(unfinished: deque[Future[None]]) -> None:
    """Wait for every pending ``finish`` in order; raise the first one's error."""
    while unfinished:
        unfinished.popleft().result()
