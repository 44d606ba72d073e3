"""Runtime backends: ``coreml`` (Core ML through coremltools, macOS) and ``onnx``
(the Core ML spec translated to ONNX and run by onnxruntime, everywhere)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Literal

from pytest_coreml_quality.errors import BackendUnavailableError
from pytest_coreml_quality.runtime.base import Backend, Predictor, RuntimeOptions, default_cache_dir

BackendName = Literal["auto", "coreml", "onnx"]
BACKEND_NAMES = ("auto", "coreml", "onnx")


def coreml_available() -> bool:
    """True when Core ML itself can run here: macOS with coremltools' native library."""
    if sys.platform != "darwin":
        return False
    try:
        import coremltools.libcoremlpython  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend_name(name: str) -> str:
    """What ``name`` means on this machine; ``auto`` is ``coreml`` where Core ML runs, else ``onnx``.

    The one place that decides ``auto``: the report header and :func:`get_backend` agree.
    """
    if name not in BACKEND_NAMES:
        raise BackendUnavailableError(
            f"unknown backend '{name}'", field="--coreml-backend", expected=" or ".join(BACKEND_NAMES)
        )
    if name == "auto":
        return "coreml" if coreml_available() else "onnx"
    return name


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def intra_op_threads(requested: int | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Threads one model run may use: ``requested`` (``--coreml-threads``) if given, else this
    process's share of the cores, ``max(1, cores // workers)``, where the workers are the
    pytest-xdist workers running side by side (``PYTEST_XDIST_WORKER_COUNT``, 1 without xdist)."""
    from pytest_coreml_quality.chunks import xdist_workers

    if requested:
        return requested
    return max(1, available_cores() // xdist_workers(environ))


def get_backend(name: str = "auto", threads: int | None = None) -> Backend:
    """The backend called ``name`` (see :func:`resolve_backend_name`).

    ``threads``: the onnx backend's intra-op threads per session (None: onnxruntime's default);
    Core ML schedules its own work and ignores it.
    """
    name = resolve_backend_name(name)
    if name == "coreml":
        if not coreml_available():
            where = "this platform" if sys.platform == "darwin" else f"{sys.platform} (Core ML exists only on macOS)"
            raise BackendUnavailableError(
                f"the coreml backend cannot run on {where}: coremltools' native library "
                "'coremltools.libcoremlpython' is not importable",
                field="--coreml-backend",
                expected="'onnx' or 'auto' off macOS",
            )
        from pytest_coreml_quality.runtime.coreml import CoreMLBackend

        return CoreMLBackend()
    from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend

    return OnnxBackend(intra_op_threads=threads)


__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "Predictor",
    "RuntimeOptions",
    "coreml_available",
    "default_cache_dir",
    "get_backend",
    "intra_op_threads",
    "resolve_backend_name",
]
