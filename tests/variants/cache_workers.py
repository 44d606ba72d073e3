"""Code run in child processes by the cache tests (importable, so 'spawn' can find it)."""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any


def _skip_unused_frameworks() -> None:
    """Call first thing in a child process, before coremltools is imported.

    coremltools imports torch and scikit-learn eagerly if it can, which costs these
    short-lived children many seconds; the recipes they build (linear quantization)
    use neither.
    """
    for name in ("torch", "sklearn"):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def count_builds(marker: Path, *, delay: float = 0.0, die_after: bool = False) -> None:
    """Wrap the variant build so each real build appends a line to ``marker``.

    ``delay`` widens the window in which concurrent workers race for the same entry;
    ``die_after`` kills the process right after the build wrote its files, before the
    cache entry is renamed into place (a build killed midway).
    """
    from pytest_coreml_quality.variants import build as build_module

    original = build_module.build_recipe

    def counted(*args: Any, **kwargs: Any) -> str:
        with open(marker, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        time.sleep(delay)
        route = original(*args, **kwargs)
        if die_after:
            os._exit(17)
        return route

    build_module.build_recipe = counted  # type: ignore[assignment]


def build_in_worker(model_path: str, recipe: str, cache_dir: str, marker: str, barrier: Any, results: str) -> None:
    """One concurrent worker: wait for the others, build (or reuse) the variant, report.

    Results go to a file per worker in ``results`` (a multiprocessing queue made the
    children linger for tens of seconds at exit on this machine).
    """
    _skip_unused_frameworks()
    warnings.simplefilter("ignore")
    from pytest_coreml_quality.model import Model, content_hash
    from pytest_coreml_quality.variants import build_variant

    count_builds(Path(marker), delay=1.0)
    model = Model.open(model_path)
    barrier.wait(timeout=120)
    variant = build_variant(model, recipe, Path(cache_dir))
    line = f"{content_hash(variant.path)} {int(variant.cached)}\n"
    (Path(results) / f"{os.getpid()}.txt").write_text(line)


if __name__ == "__main__":  # python cache_workers.py MODEL RECIPE CACHE MARKER: a build killed midway
    _skip_unused_frameworks()
    warnings.simplefilter("ignore")
    from pytest_coreml_quality.model import Model
    from pytest_coreml_quality.variants import build_variant

    model_path, recipe, cache_dir, marker = sys.argv[1:5]
    count_builds(Path(marker), die_after=True)
    build_variant(Model.open(model_path), recipe, Path(cache_dir))
    sys.exit(0)  # not reached: the build dies first
