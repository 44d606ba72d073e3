"""A recording stand-in for the part of coremltools the ``coreml`` backend uses.

It mirrors the documented surface exactly:

* ``coremltools.models.utils.compile_model(model, destination_path=None) -> str``
  (the destination must end in ``.mlmodelc``; the compiled model is a directory);
* ``coremltools.models.CompiledMLModel(path, compute_units=ComputeUnit.ALL)`` with
  ``.predict(dict) -> dict``;
* ``coremltools.ComputeUnit.ALL / CPU_ONLY / CPU_AND_GPU / CPU_AND_NE``.

It records every compile (source, destination), load (path, compute unit) and
prediction. Predictions run the model through the onnx backend, at fp32 on
``CPU_ONLY`` and fp16 elsewhere (Core ML's GPU / Neural Engine compute in float16), so
outputs are real and differ a little from the onnx backend's fp32: a second backend to
compare with. ``outputs`` replaces them with canned ones.
"""

from __future__ import annotations

import enum
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.base import RuntimeOptions


class ComputeUnit(enum.Enum):
    """Same names and values as coremltools.ComputeUnit."""

    ALL = 1
    CPU_AND_GPU = 2
    CPU_ONLY = 3
    CPU_AND_NE = 4


@dataclass
class FakeCoreMLTools:
    """Install with :func:`install`; read ``compiles``, ``loads`` and ``predictions`` afterwards."""

    onnx_cache: Path
    outputs: dict[str, Any] | None = None  # canned outputs instead of running the model
    compiles: list[tuple[str, str]] = field(default_factory=list)  # (model path, destination)
    loads: list[tuple[str, str]] = field(default_factory=list)  # (compiled path, compute unit name)
    predictions: list[str] = field(default_factory=list)  # compute unit name per predict call

    def __post_init__(self) -> None:
        self.ComputeUnit = ComputeUnit
        self.models = SimpleNamespace(utils=SimpleNamespace(compile_model=self.compile_model), CompiledMLModel=self.CompiledMLModel)
        self.utils = self.models.utils
        self.__version__ = "fake"

    def compile_model(self, model: Any, destination_path: str | None = None) -> str:
        source = Path(model)
        if destination_path is None or not destination_path.rstrip("/").endswith(".mlmodelc"):
            raise Exception('"destination_path" parameter must have ".mlmodelc" file extension.')
        if not source.exists():
            raise ValueError(f"Invalid model file path: '{model}'.")
        dest = Path(destination_path)
        dest.mkdir(parents=True)
        # Keep the source inside, so a load can run it (a real .mlmodelc holds compiled weights).
        copy = dest / ("source" + source.suffix)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, copy)
        self.compiles.append((str(source), str(dest)))
        return str(dest)

    def CompiledMLModel(self, path: str, compute_units: ComputeUnit = ComputeUnit.ALL, **kwargs: Any) -> "_Compiled":  # noqa: N802
        if not isinstance(compute_units, ComputeUnit):
            raise TypeError(f"compute_units must be a coremltools.ComputeUnit, got {compute_units!r}")
        compiled = Path(path)
        sources = list(compiled.glob("source.*")) if compiled.is_dir() else []
        if not sources:
            raise RuntimeError(f"Error opening compiled model {path}")
        self.loads.append((str(compiled), compute_units.name))
        return _Compiled(self, Model.open(sources[0]), compute_units)


class _Compiled:
    def __init__(self, fake: FakeCoreMLTools, model: Model, units: ComputeUnit) -> None:
        self.fake, self.units = fake, units
        if fake.outputs is None:
            from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend

            precision = "fp32" if units is ComputeUnit.CPU_ONLY else "fp16"
            self.predictor = OnnxBackend().load(model, RuntimeOptions(precision=precision, cache_dir=fake.onnx_cache))  # type: ignore[arg-type]

    def predict(self, data: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise TypeError("predict takes a dict of input features")
        self.fake.predictions.append(self.units.name)
        if self.fake.outputs is not None:
            return dict(self.fake.outputs)
        return self.predictor.predict(data)


def install(monkeypatch: pytest.MonkeyPatch, fake: FakeCoreMLTools) -> FakeCoreMLTools:
    """Make the coreml backend use ``fake`` and believe Core ML runs here."""
    import pytest_coreml_quality.runtime as runtime
    import pytest_coreml_quality.runtime.coreml as coreml

    monkeypatch.setattr(coreml, "_coremltools", lambda: fake)
    monkeypatch.setattr(runtime, "coreml_available", lambda: True)
    return fake
