"""The ``coreml`` backend: Core ML itself, through coremltools (macOS only).

Core ML caches device specialisation (e.g. the Neural Engine plan) by the compiled
model's path, so a warm load must reuse one persistent ``.mlmodelc``: we compile each
model once into the cache (``coremltools.utils.compile_model``) and load it with
``coremltools.models.CompiledMLModel``. ``evict`` deletes that copy, so the next load
compiles afresh (a cold load).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_coreml_quality.cachefs import atomic_output, build_lock, remove_path
from pytest_coreml_quality.errors import BackendUnavailableError, ModelFormatError
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.base import RuntimeOptions, default_cache_dir

COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")


class CoreMLPredictor:
    """A compiled model loaded by Core ML."""

    def __init__(self, model: Model, mlmodel: Any, compiled_path: Path) -> None:
        self.model = model
        self.mlmodel = mlmodel
        self.compiled_path = compiled_path

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.mlmodel.predict(dict(inputs)))


class CoreMLBackend:
    """Loads models with Core ML, reusing a persistent compiled copy per model."""

    name = "coreml"

    def compiled_path(self, model: Model, options: RuntimeOptions | None = None) -> Path:
        options = options or RuntimeOptions()
        root = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
        return root / "coreml" / f"{model.content_hash[:40]}.mlmodelc"

    def load(self, model: Model, options: RuntimeOptions | None = None) -> CoreMLPredictor:
        options = options or RuntimeOptions()
        units = compute_unit(options.compute_units)
        import coremltools as ct

        path = self.compiled_path(model, options)
        if not path.is_dir():
            with build_lock(path):
                if not path.is_dir():
                    with atomic_output(path) as tmp:
                        try:
                            ct.utils.compile_model(str(model.path), destination_path=str(tmp))
                        except Exception as exc:
                            raise ModelFormatError(f"Core ML cannot compile it ({exc})", path=model.path) from None
        mlmodel = ct.models.CompiledMLModel(str(path), compute_units=units)
        return CoreMLPredictor(model, mlmodel, path)

    def evict(self, model: Model, options: RuntimeOptions | None = None) -> None:
        path = self.compiled_path(model, options)
        with build_lock(path):
            remove_path(path)


def compute_unit(name: str) -> Any:
    """``"CPU_AND_NE"`` -> ``coremltools.ComputeUnit.CPU_AND_NE`` with a clear error for typos."""
    if name not in COMPUTE_UNITS:
        raise BackendUnavailableError(
            f"unknown compute units '{name}'", field="compute_units", expected=" or ".join(COMPUTE_UNITS)
        )
    import coremltools as ct

    return getattr(ct.ComputeUnit, name)
