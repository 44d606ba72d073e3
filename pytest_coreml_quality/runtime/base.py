"""The backend protocol every runtime implements.

``predict`` follows coremltools' ``MLModel.predict`` conventions: a dict of feature name
to value; image features are ``PIL.Image.Image`` (exactly the model's input size, as
Core ML requires), multiarray features are ``numpy.ndarray``. Outputs use the same
conventions: grayscale/RGB image outputs come back as PIL images.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pytest_coreml_quality.model import Model

Precision = Literal["fp32", "fp16"]
ComputeUnits = Literal["ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE"]


@dataclass(frozen=True)
class RuntimeOptions:
    """Options that change what a backend computes or where it keeps compiled models.

    ``precision="fp16"`` makes the onnx backend round every op's output to float16, to
    show on Linux what Core ML's GPU / Neural Engine fp16 compute does to a model.
    ``compute_units`` only applies to the coreml backend.
    """

    precision: Precision = "fp32"
    compute_units: ComputeUnits = "ALL"
    cache_dir: Path | None = None

    def cache_key(self) -> str:
        """The part of a compiled-model / prediction cache key that depends on these options.

        Compute units change Core ML's numbers (fp16 on the GPU / Neural Engine); the
        default ``ALL`` keeps the key earlier versions wrote.
        """
        units = "" if self.compute_units == "ALL" else f",cu={self.compute_units}"
        return f"p={self.precision}{units}"


@runtime_checkable
class Predictor(Protocol):
    """A loaded model ready to predict."""

    model: Model

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run the model on one set of input features."""
        ...


@runtime_checkable
class Backend(Protocol):
    """Loads models for one execution engine (Core ML, or the ONNX translation).

    Optional, used by the load timer (:mod:`pytest_coreml_quality.loadtime`):
    ``load_cold(model, options)``, a load that starts from the model file and reuses no
    cache (timed as the cold load), and ``finish_load(predictor)``, work after a cold
    load that is not loading (run untimed, before the next round).
    """

    name: str

    def load(self, model: Model, options: RuntimeOptions | None = None) -> Predictor:
        """Load (compiling or translating as needed, reusing the compiled cache) ``model``."""
        ...

    def evict(self, model: Model, options: RuntimeOptions | None = None) -> None:
        """Drop this model's compiled/translated cache entry, so the next load is cold."""
        ...


def default_cache_dir() -> Path:
    """Where compiled models go when no cache dir is configured (XDG cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-coreml-quality"
