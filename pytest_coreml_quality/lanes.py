"""Lanes: the (backend, compute units) combinations every variant is measured on.

One plain run has one lane, and a variant's results are keyed by its recipe (``q4``).
``--coreml-compute-units`` and ``--coreml-backend=coreml,onnx`` add lanes; each lane's
results are then keyed ``<recipe>@<lane label>`` (``q4@CPU_AND_NE``,
``q4@coreml:CPU_AND_NE``, ``q4@onnx``), which is the row name every report shows, and
the generated items carry the label in their ids (``quality[q4-CPU_AND_NE]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pytest_coreml_quality.errors import CoreMLQualityError
from pytest_coreml_quality.runtime.base import RuntimeOptions

KEY_SEPARATOR = "@"
#: How the onnx backend stands in for Core ML's compute units (with --coreml-precision=fp16).
ONNX_EMULATION = "CPU_ONLY at fp32, ALL / CPU_AND_GPU / CPU_AND_NE at fp16"


@dataclass(frozen=True)
class Lane:
    """One backend on one set of compute units (``units`` None: the backend's default)."""

    backend: str  # resolved backend name: 'coreml' or 'onnx'
    units: str | None
    label: str  # '' for the single plain lane
    primary: bool  # on the first backend named (the one judged against the second)

    def key(self, recipe: str) -> str:
        """The results key of ``recipe`` on this lane."""
        return f"{recipe}{KEY_SEPARATOR}{self.label}" if self.label else recipe

    def item_id(self, recipe: str) -> str:
        """The parametrisation of a generated item: ``q4-CPU_AND_NE``."""
        return f"{recipe}-{self.label.replace(':', '-')}" if self.label else recipe

    def options(self, precision: str, cache_dir: Path) -> RuntimeOptions:
        """What this lane's backend is asked to compute."""
        if self.backend == "coreml":
            return RuntimeOptions(compute_units=self.units or "ALL", cache_dir=cache_dir)  # type: ignore[arg-type]
        if self.units is not None:  # the onnx emulation of a compute unit
            emulated = "fp32" if self.units == "CPU_ONLY" else "fp16"
            return RuntimeOptions(precision=emulated, cache_dir=cache_dir)  # type: ignore[arg-type]
        return RuntimeOptions(precision=precision, cache_dir=cache_dir)  # type: ignore[arg-type]


def plan_lanes(backends: list[str], units: tuple[str, ...], precision: str) -> list[Lane]:
    """The lanes of a run on resolved ``backends`` (one or two) and ``units``.

    Compute units apply to the coreml backend; the onnx backend takes them only as the
    stated fp16 emulation (``--coreml-precision=fp16``), otherwise it is a usage error
    (or, side by side with coreml, the onnx lane runs once at its precision).
    """
    if units and "coreml" not in backends and precision != "fp16":
        raise CoreMLQualityError(
            "--coreml-compute-units needs the coreml backend (Core ML, macOS); the onnx backend cannot run "
            f"{', '.join(units)}",
            field="--coreml-compute-units",
            expected=f"--coreml-backend=coreml, or --coreml-precision=fp16 to emulate them on onnx ({ONNX_EMULATION})",
        )
    both = len(backends) > 1
    lanes = []
    for index, backend in enumerate(backends):
        per_unit = bool(units) and (backend == "coreml" or precision == "fp16")
        for unit in units if per_unit else (None,):
            parts = [backend] if both else []
            if unit is not None:
                parts.append(unit)
            lanes.append(Lane(backend, unit, ":".join(parts), primary=index == 0))
    return lanes


def split_key(key: str) -> tuple[str, str]:
    """``q4@CPU_AND_NE`` -> ("q4", "CPU_AND_NE"); a plain recipe -> (recipe, "")."""
    recipe, _, label = key.partition(KEY_SEPARATOR)
    return recipe, label


def on_same_lane(key: str, recipe: str) -> str:
    """The results key of ``recipe`` on the lane of ``key`` (``q4@CPU_AND_NE``, base -> ``base@CPU_AND_NE``)."""
    _, label = split_key(key)
    return f"{recipe}{KEY_SEPARATOR}{label}" if label else recipe


def partner(lane: Lane, lanes: list[Lane]) -> Lane | None:
    """The second backend's lane a primary lane is compared with: same units, else its only lane."""
    if not lane.primary:
        return None
    others = [other for other in lanes if not other.primary]
    same = [other for other in others if other.units == lane.units]
    if same:
        return same[0]
    return others[0] if len(others) == 1 else None
