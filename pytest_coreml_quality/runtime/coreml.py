"""The ``coreml`` backend: Core ML itself, through coremltools (macOS only).

Warm loads reuse one persistent compiled copy per model: it is compiled once into the
cache (``coremltools.models.utils.compile_model(model_path, destination_path)``) and
loaded with ``coremltools.models.CompiledMLModel(path, compute_units=...)``.

Cold loads must not hit Core ML's own device-specialisation cache (e.g. the Neural
Engine plan), which it keeps by the compiled model's location. Each cold round therefore
compiles to a fresh, never-used path (:meth:`CoreMLBackend.load_cold`), and
:meth:`CoreMLBackend.evict` removes the persistent copy and every earlier cold copy,
outside the timed call.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_coreml_quality.cachefs import atomic_output, build_lock, remove_path
from pytest_coreml_quality.errors import BackendUnavailableError, ModelFormatError
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.base import RuntimeOptions, default_cache_dir

COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")


def _coremltools() -> Any:
    """The coremltools module (one seam, so tests can stand a recording fake in for it)."""
    import coremltools

    return coremltools


class CoreMLPredictor:
    """A compiled model loaded by Core ML on the given compute units."""

    backend_name = "coreml"

    def __init__(self, model: Model, mlmodel: Any, compiled_path: Path, options: RuntimeOptions | None = None) -> None:
        self.model = model
        self.mlmodel = mlmodel
        self.compiled_path = compiled_path
        self.options = options or RuntimeOptions()

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.mlmodel.predict(dict(inputs)))


class CoreMLBackend:
    """Loads models with Core ML: a persistent compiled copy for warm loads, a fresh one per cold load."""

    name = "coreml"

    def _root(self, options: RuntimeOptions) -> Path:
        return Path(options.cache_dir) if options.cache_dir else default_cache_dir()

    def compiled_path(self, model: Model, options: RuntimeOptions | None = None) -> Path:
        """The persistent compiled copy warm loads reuse (the same for every compute unit)."""
        options = options or RuntimeOptions()
        return self._root(options) / "coreml" / f"{model.content_hash[:40]}.mlmodelc"

    def cold_dir(self, model: Model, options: RuntimeOptions | None = None) -> Path:
        """Where this model's cold-load copies go, one fresh path per cold round."""
        options = options or RuntimeOptions()
        return self._root(options) / "coreml-cold" / model.content_hash[:40]

    def load(self, model: Model, options: RuntimeOptions | None = None) -> CoreMLPredictor:
        options = options or RuntimeOptions()
        units = compute_unit(options.compute_units)
        path = self.compiled_path(model, options)
        if not path.is_dir():
            with build_lock(path):
                if not path.is_dir():
                    with atomic_output(path) as tmp:
                        _compile(model, tmp)
        return CoreMLPredictor(model, _open(model, path, units), path, options)

    def load_cold(self, model: Model, options: RuntimeOptions | None = None) -> CoreMLPredictor:
        """Compile to a path Core ML has never seen and load from it: nothing is reused."""
        options = options or RuntimeOptions()
        units = compute_unit(options.compute_units)
        path = self.cold_dir(model, options) / f"{uuid.uuid4().hex}.mlmodelc"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            _compile(model, path)
        except BaseException:
            remove_path(path)
            raise
        return CoreMLPredictor(model, _open(model, path, units), path, options)

    def evict(self, model: Model, options: RuntimeOptions | None = None) -> None:
        """Remove the persistent copy and every cold copy of ``model``."""
        path = self.compiled_path(model, options)
        with build_lock(path):
            remove_path(path)
        remove_path(self.cold_dir(model, options))


def _compile(model: Model, destination: Path) -> None:
    ct = _coremltools()
    try:
        ct.models.utils.compile_model(str(model.path), destination_path=str(destination))
    except Exception as exc:
        raise ModelFormatError(f"Core ML cannot compile it ({exc})", path=model.path) from None


def _open(model: Model, path: Path, units: Any) -> Any:
    ct = _coremltools()
    try:
        return ct.models.CompiledMLModel(str(path), compute_units=units)
    except Exception as exc:
        raise ModelFormatError(f"Core ML cannot load the compiled model {path} ({exc})", path=model.path) from None


def compute_unit(name: str) -> Any:
    """``"CPU_AND_NE"`` -> ``coremltools.ComputeUnit.CPU_AND_NE`` with a clear error for typos."""
    if name not in COMPUTE_UNITS:
        raise BackendUnavailableError(
            f"unknown compute units '{name}'", field="compute_units", expected=" or ".join(COMPUTE_UNITS)
        )
    return getattr(_coremltools().ComputeUnit, name)
