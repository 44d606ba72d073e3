"""Baselines: save a run's figures, and compare a later run against them with tolerances.

A baseline is the run's JSON (the same layout as ``--coreml-report-json``) without the
per-image values and threshold outcomes, so it stays small and diffs well in review.
A comparison only fails on changes in the *worse* direction beyond the tolerance; a
better figure is reported but never fails (save a new baseline to lock it in).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytest_coreml_quality import catalogue
from pytest_coreml_quality.cachefs import atomic_write_text
from pytest_coreml_quality.errors import CoreMLQualityError
from pytest_coreml_quality.jsonio import encode_floats, load_json_object
from pytest_coreml_quality.results import (
    SCHEMA_VERSION,
    LoadTimes,
    ModelResults,
    RunResults,
    VariantResult,
    tool_versions,
)

BASELINE_KIND = "pytest-coreml-quality baseline"
EXPECTED = "a baseline written by --coreml-save-baseline (or a --coreml-report-json report)"

# Versions that change the figures: a difference is worth a note next to any regression.
_VERSIONS_NOTED = ("coremltools", "onnxruntime", "onnx", "numpy", "Pillow")


@dataclass(frozen=True)
class Tolerances:
    """How much worse a figure may get before the comparison fails.

    ``metric`` is absolute in [0, 1] units (loss255 scales it by 255; PSNR and HCE use it
    relative to the old value); ``size`` and ``load`` are relative (0.01 = 1 %).
    """

    metric: float = 0.005
    size: float = 0.01
    load: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise CoreMLQualityError(
                    f"tolerance {value!r}", field=f"coreml_baseline_tolerance_{f.name}", expected="a number >= 0"
                )

    def allowed(self, key: str, old: float) -> float:
        """The largest worsening of figure ``key`` (from ``old``) that still passes.

        Sizes and load times are relative; metrics absolute, scaled by the figure's span
        (255 for loss255), or relative to the old value for unbounded ones (PSNR, HCE).
        """
        figure = catalogue.get(key)
        relative = {"size": self.size, "load": self.load}.get(figure.family if figure else "")
        if relative is not None:
            return relative * abs(old)
        span = figure.span if figure is not None else 1.0
        if span is None:
            return self.metric * abs(old) if math.isfinite(old) else 0.0
        return self.metric * span


@dataclass(frozen=True)
class BaselineDiff:
    """One figure of one variant that differs from the baseline."""

    model: str
    variant: str
    metric: str  # a catalogue key: "size_mb", "iou", "drift_mae", "cold_load_s", ...
    old: float
    new: float
    allowed: float  # the largest worsening that passes
    worse: bool  # moved in the worse direction (by any amount)
    failed: bool  # worse by more than ``allowed``

    def describe(self) -> str:
        """'ISNet.mlmodel[q4] iou: 0.9123 -> 0.9001 (worse by 0.0122, allowed 0.005) FAILED'."""
        change = self.new - self.old if math.isfinite(self.new - self.old) else math.inf
        how = f"worse by {abs(change):.4g}, allowed {self.allowed:.4g}" if self.worse else f"better by {abs(change):.4g}"
        verdict = " FAILED" if self.failed else ""
        return f"{self.model}[{self.variant}] {self.metric}: {self.old:.6g} -> {self.new:.6g} ({how}){verdict}"


@dataclass
class BaselineComparison:
    """Every difference found, and notes the user should see (other model hash, versions, gaps)."""

    baseline_path: str
    diffs: list[BaselineDiff] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    not_compared: dict[tuple[str, str], str] = field(default_factory=dict)  # (model, variant) -> why

    @property
    def failures(self) -> list[BaselineDiff]:
        return [d for d in self.diffs if d.failed]

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    def for_variant(self, model: str, variant: str) -> list[BaselineDiff]:
        return [d for d in self.diffs if d.model == model and d.variant == variant]

    def __iter__(self) -> Iterator[BaselineDiff]:
        return iter(self.diffs)

    def __len__(self) -> int:
        return len(self.diffs)


def baseline_dict(run: RunResults) -> dict[str, Any]:
    """The baseline content of ``run``: figures only, no per-image values or check outcomes."""
    data = run.to_dict()
    data["kind"] = BASELINE_KIND
    data["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if not data.get("versions"):
        data["versions"] = tool_versions()
    for model in data["models"].values():
        for variant in model["variants"].values():
            variant.pop("per_image", None)
            variant.pop("checks", None)
    return encode_floats(data)


def save_baseline(path: str | os.PathLike[str], run: RunResults) -> Path:
    """Write the baseline of ``run`` to ``path`` atomically (sorted keys, so diffs stay small)."""
    text = json.dumps(baseline_dict(run), indent=2, sort_keys=True, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


def load_baseline(path: str | os.PathLike[str]) -> tuple[RunResults, dict[str, Any]]:
    """The baseline's figures and its raw dict; :class:`CoreMLQualityError` if missing or malformed."""
    data = load_json_object(path, EXPECTED)
    schema = data.get("schema")
    if schema != SCHEMA_VERSION:
        raise CoreMLQualityError(
            f"schema {schema!r} is not supported by this version", path=path, field="schema", expected=f"{SCHEMA_VERSION}"
        )
    models = _expect(data, "models", dict, path, "models")
    run = RunResults(versions={str(k): str(v) for k, v in _expect(data, "versions", dict, path, "versions", {}).items()})
    for name, m in models.items():
        where = f"models.{name}"
        m = _expect(models, name, dict, path, where)
        model = ModelResults(model=str(m.get("model", name)))
        for f in ("path", "content_hash", "kind", "backend"):
            setattr(model, f, str(m.get(f) or ""))
        model.dataset = m.get("dataset")
        images = _number(m.get("dataset_images"), path, f"{where}.dataset_images")
        model.dataset_images = None if images is None else int(images)
        model.dataset_hash = str(m.get("dataset_hash") or "")
        for recipe, v in _expect(m, "variants", dict, path, f"{where}.variants").items():
            model.variants[recipe] = _variant(recipe, v, path, f"{where}.variants.{recipe}")
        run.models[name] = model
    return run, data


def _variant(recipe: str, v: Any, path: str | os.PathLike[str], where: str) -> VariantResult:
    if not isinstance(v, dict):
        raise CoreMLQualityError(f"holds a {type(v).__name__}", path=path, field=where, expected="an object")
    result = VariantResult(recipe=str(v.get("recipe", recipe)))
    for f in ("size_bytes", "params"):
        value = _number(v.get(f), path, f"{where}.{f}")
        setattr(result, f, None if value is None else int(value))
    for f in ("ratio", "bits_per_weight"):
        setattr(result, f, _number(v.get(f), path, f"{where}.{f}"))
    for f in ("path", "kind", "content_hash", "note"):
        setattr(result, f, str(v.get(f) or ""))
    # Baselines written before the field existed lack it: unknown, not False.
    unchanged = v.get("unchanged")
    if unchanged is not None and not isinstance(unchanged, bool):
        raise CoreMLQualityError(f"holds {unchanged!r}", path=path, field=f"{where}.unchanged", expected="true, false or null")
    result.unchanged = unchanged
    for f in ("metrics", "drift", "backend_drift"):
        values = _expect(v, f, dict, path, f"{where}.{f}", {})
        numbers = {k: _number(x, path, f"{where}.{f}.{k}") for k, x in values.items()}
        setattr(result, f, {k: x for k, x in numbers.items() if x is not None})
    load = _expect(v, "load", dict, path, f"{where}.load", {})
    result.load = LoadTimes(
        cold_s=_number(load.get("cold_s"), path, f"{where}.load.cold_s"),
        warm_s=_number(load.get("warm_s"), path, f"{where}.load.warm_s"),
        timer=str(load.get("timer", "pytest-benchmark")),
        predict_ms=_number(load.get("predict_ms"), path, f"{where}.load.predict_ms"),
    )
    return result


def _expect(data: Mapping[str, Any], key: str, kind: type, path: Any, where: str, default: Any = ...) -> Any:
    if key not in data or data[key] is None:
        if default is not ...:
            return default
        raise CoreMLQualityError("is missing", path=path, field=where, expected=EXPECTED)
    value = data[key]
    if not isinstance(value, kind):
        raise CoreMLQualityError(f"holds a {type(value).__name__}", path=path, field=where, expected=f"a JSON {kind.__name__}")
    return value


def _number(value: Any, path: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CoreMLQualityError(f"holds {value!r}", path=path, field=where, expected="a number")
    return float(value)


def compare_to_baseline(
    run: RunResults, baseline_path: str | os.PathLike[str], tolerances: Tolerances | None = None
) -> BaselineComparison:
    """Compare every figure of ``run`` with the baseline at ``baseline_path``.

    Returns the differences (better ones too, with ``failed`` False), warnings (a model
    whose hash differs from the baseline's, another golden set, figures only one side
    has, tool versions that changed) and, per variant, what could not be compared at all
    (``not_compared``: the model or variant is not in the baseline, or no figure is in
    both). Raises :class:`CoreMLQualityError` for a missing or malformed baseline file.
    """
    tolerances = tolerances or Tolerances()
    old_run, _ = load_baseline(baseline_path)
    out = BaselineComparison(baseline_path=str(baseline_path))
    for name, model in run.models.items():
        old_model = _matching_model(old_run, name, model, out)
        if old_model is None:
            why = (
                f"{name} is not in baseline {baseline_path} (it has {', '.join(old_run.models) or 'no model'}, "
                "and none with this model's content hash); save a new baseline with --coreml-save-baseline"
            )
            for recipe in model.variants:
                out.not_compared[(name, recipe)] = why
            continue
        _note_model_differences(name, model, old_model, baseline_path, out)
        for recipe, result in model.variants.items():
            old = old_model.variants.get(recipe)
            if old is None:
                out.not_compared[(name, recipe)] = (
                    f"{name}[{recipe}] has no figures in baseline {baseline_path} "
                    f"(it has {', '.join(old_model.variants) or 'no variant'})"
                )
                continue
            diffs, compared = _compare_variant(name, recipe, old, result, tolerances, out.warnings)
            out.diffs += diffs
            if not compared:
                out.not_compared[(name, recipe)] = (
                    f"{name}[{recipe}]: no figure was measured both in this run and in baseline {baseline_path}"
                )
        missing = [r for r in old_model.variants if r not in model.variants]
        if missing:
            out.warnings.append(f"{name}: variants in the baseline but not in this run: {', '.join(missing)}")
    changed = [
        f"{pkg} {old_run.versions[pkg]} -> {run.versions[pkg]}"
        for pkg in _VERSIONS_NOTED
        if pkg in old_run.versions and pkg in run.versions and old_run.versions[pkg] != run.versions[pkg]
    ]
    if changed:
        out.warnings.append(f"tool versions differ from baseline {baseline_path}: {', '.join(changed)}")
    return out


def _matching_model(old_run: RunResults, name: str, model: ModelResults, out: BaselineComparison) -> ModelResults | None:
    """The baseline's entry for ``model``: by name, else (a renamed file) by content hash."""
    if name in old_run.models:
        return old_run.models[name]
    for old_name, old in old_run.models.items():
        if model.content_hash and old.content_hash == model.content_hash:
            out.warnings.append(f"{name}: compared with baseline entry {old_name} (same model content, other file name)")
            return old
    return None


def _note_model_differences(
    name: str, model: ModelResults, old_model: ModelResults, baseline_path: Any, out: BaselineComparison
) -> None:
    if old_model.content_hash and model.content_hash and old_model.content_hash != model.content_hash:
        out.warnings.append(
            f"{name}: baseline {baseline_path} was saved for a different model file "
            f"(hash {old_model.content_hash[:12]}, this run {model.content_hash[:12]}); "
            "its figures may differ for that reason alone - save a new baseline with "
            "--coreml-save-baseline once the model change is intended"
        )
    if old_model.dataset_hash and model.dataset_hash and old_model.dataset_hash != model.dataset_hash:
        count = (
            f"{old_model.dataset_images} images then, {model.dataset_images} now"
            if old_model.dataset_images != model.dataset_images
            else "the same number of images, other content"
        )
        out.warnings.append(
            f"{name}: baseline {baseline_path} was measured on another golden set ({count}); "
            "quality figures are not comparable - save a new baseline with --coreml-save-baseline"
        )


def _figures(result: VariantResult) -> dict[str, tuple[float | None, bool]]:
    """Every figure a baseline compares, by catalogue key, with its direction (True: higher is better)."""
    return {f.key: (f.value(result), f.higher_is_better) for f in catalogue.figures() if f.baseline}


def _compare_variant(
    model: str, recipe: str, old: VariantResult, new: VariantResult, tol: Tolerances, warnings: list[str]
) -> tuple[list[BaselineDiff], int]:
    """The differences of one variant and how many figures were compared."""
    diffs: list[BaselineDiff] = []
    old_figures, new_figures = _figures(old), _figures(new)
    load_keys = {f.key for f in catalogue.figures("load")}
    same_timer = old.load.timer == new.load.timer
    timed_both = any(old_figures[k][0] is not None and new_figures[k][0] is not None for k in load_keys if k in old_figures)
    if timed_both and not same_timer:
        warnings.append(
            f"{model}[{recipe}]: load times not compared: the baseline's were measured with {old.load.timer}, "
            f"this run's with {new.load.timer}"
        )
    gone = [k for k, (v, _) in old_figures.items() if v is not None and new_figures[k][0] is None]
    # Load figures are absent whenever load items are deselected: not worth a note each time.
    gone = [k for k in gone if k not in load_keys]
    if gone:
        warnings.append(f"{model}[{recipe}]: in the baseline but not measured in this run: {', '.join(gone)}")
    compared = 0
    for key, (new_value, high_good) in new_figures.items():
        old_value = old_figures[key][0]
        if old_value is None or new_value is None or (key in load_keys and not same_timer):
            continue
        compared += 1
        if old_value == new_value:
            continue
        if math.isnan(old_value) or math.isnan(new_value):
            warnings.append(f"{model}[{recipe}] {key}: {old_value} -> {new_value}; not compared")
            continue
        allowed = tol.allowed(key, old_value)
        excess = (old_value - new_value) if high_good else (new_value - old_value)
        worse = excess > 0
        diffs.append(
            BaselineDiff(model, recipe, key, old_value, new_value, allowed, worse=worse, failed=worse and excess > allowed)
        )
    return diffs, compared
