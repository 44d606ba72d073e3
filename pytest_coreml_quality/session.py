"""One object per pytest run: settings, models, golden set, variants, evaluations, results.

It knows nothing of pytest: the plugin creates it in ``pytest_configure``, keeps it in
``config.stash``, and the generated items and fixtures ask it for what they need. Every
expensive step (variant build, model load, evaluation) runs lazily, at most once per
run, and is cached on disk for the next run.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_coreml_quality.errors import CoreMLQualityError
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.report.figures import worst_images
from pytest_coreml_quality.results import (
    CheckOutcome,
    ModelResults,
    RunResults,
    VariantResult,
    tool_versions,
)
from pytest_coreml_quality.runtime.base import Backend, RuntimeOptions
from pytest_coreml_quality.settings import THRESHOLDS, Settings

if TYPE_CHECKING:
    from pytest_coreml_quality.dataset import Dataset
    from pytest_coreml_quality.evaluate import EvaluationResult, Evaluator

BASE = "base"
# Files named in the header when a manifest points outside its folder; the count says the rest.
_MAX_NAMED_OUTSIDE = 5


def effective_backend(requested: str) -> str:
    """What ``auto`` means on this machine: Core ML on macOS, the onnx translation elsewhere."""
    if requested != "auto":
        return requested
    return "coreml" if sys.platform == "darwin" else "onnx"


@dataclass
class QualitySession:
    """Run-wide state: validated settings, the models and golden set they name, and results."""

    settings: Settings
    cache_dir: Path
    models: list[Model] = field(default_factory=list)
    dataset: "Dataset | None" = None
    recipes: dict[str, list[str]] = field(default_factory=dict)  # model key -> normalised recipe names
    results: RunResults = field(default_factory=RunResults)
    progress: Callable[[str], None] = field(default=lambda line: None, repr=False)
    report_notes: list[str] = field(default_factory=list)  # lines for the terminal summary
    cache_cleared: bool = False
    _variants: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)
    _variant_models: dict[tuple[str, str], Model] = field(default_factory=dict, repr=False)
    _backend: Backend | None = field(default=None, repr=False)
    _evaluator: "Evaluator | None" = field(default=None, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    # --- start: validate everything the user named, before any test runs -------------------
    @classmethod
    def start(cls, settings: Settings, default_cache_dir: Path) -> "QualitySession":
        """Open the models and golden set and parse the recipes; raise one error naming every problem."""
        session = cls(settings=settings, cache_dir=settings.cache_dir or default_cache_dir)
        session.results.versions = tool_versions()
        problems: list[str] = []
        for path in settings.models:
            try:
                session.models.append(Model.open(path))
            except CoreMLQualityError as exc:
                problems.append(f"--coreml-model: {exc}")
        if problems:
            raise CoreMLQualityError("; ".join(problems))
        if not session.models:
            return session
        session._check_before_any_work()
        from pytest_coreml_quality.variants import parse_recipes

        for model in session.models:
            recipes = parse_recipes(list(settings.variants), model)
            session.recipes[session.key(model)] = [str(r) for r in recipes]
            entry = session.results.models.setdefault(
                session.key(model),
                ModelResults(model=session.key(model), path=str(model.path), content_hash=model.content_hash, kind=model.kind),
            )
            entry.backend = session.backend_label
            for recipe in session.recipes[session.key(model)]:
                entry.variant(recipe)
        if settings.dataset is not None:
            from pytest_coreml_quality.dataset import Dataset

            session.dataset = Dataset.open(settings.dataset)
            for entry in session.results.models.values():
                entry.dataset = str(settings.dataset)
        return session

    def _check_before_any_work(self) -> None:
        """Settings that need the models or this machine: fail now, not in every item."""
        from pytest_coreml_quality.cachecheck import check_cache_dir
        from pytest_coreml_quality.runtime import coreml_available

        settings = self.settings
        if settings.backend == "coreml" and not coreml_available():
            raise CoreMLQualityError(
                "coreml backend needs macOS; use onnx or auto", field="--coreml-backend", expected="onnx or auto"
            )
        if settings.output is not None:
            # Model.output names the model and lists the outputs it does have.
            for model in self.models:
                try:
                    feature = model.output(settings.output)
                except CoreMLQualityError as exc:
                    raise CoreMLQualityError(f"--coreml-output: {exc}") from None
                if not (feature.is_image or feature.is_multiarray):
                    raise CoreMLQualityError(
                        f"--coreml-output: {model.path}: output '{feature.name}' is a {feature.type}",
                        expected="an image or multiarray output",
                    )
        problem = check_cache_dir(self.cache_dir)
        if problem is not None:
            flag = "--coreml-cache-dir" if settings.cache_dir is not None else None
            raise CoreMLQualityError(
                f"the cache directory {self.cache_dir} {problem}",
                field=flag,
                expected="a writable directory with free space (set --coreml-cache-dir)",
            )

    # --- identity ------------------------------------------------------------------------
    def key(self, model: Model) -> str:
        """How a model is named in ids and reports: its file name, or its path if two share a name."""
        names = [m.name for m in self.models]
        return model.name if names.count(model.name) <= 1 else str(model.path)

    def model(self, key: str) -> Model:
        return next(m for m in self.models if self.key(m) == key)

    @property
    def backend_name(self) -> str:
        return effective_backend(self.settings.backend)

    @property
    def backend_label(self) -> str:
        label = self.backend_name
        if self.settings.precision != "fp32":
            label += f" {self.settings.precision}"
        return label

    def header_lines(self) -> list[str]:
        """Lines for pytest's report header."""
        if not self.models:
            return []
        backend = self.settings.backend
        shown = f"{backend} ({self.backend_name})" if backend == "auto" else backend
        cache = f"{self.cache_dir} (cleared)" if self.cache_cleared else str(self.cache_dir)
        lines = [f"coreml-quality: backend {shown}, precision {self.settings.precision}, cache {cache}"]
        lines += [f"coreml-quality: model {m.summary()}" for m in self.models]
        if self.dataset is not None:
            lines.append(f"coreml-quality: dataset {self.settings.dataset} ({len(self.dataset.ids)} images)")
            for sample in self.dataset.reduced_samples[:_MAX_NAMED_OUTSIDE]:
                (w, h), (rw, rh) = sample.full_size, sample.size  # type: ignore[misc]
                lines.append(
                    f"coreml-quality: dataset image {sample.id} is {w}x{h}, scored at {rw}x{rh} "
                    "(decoded reduced to bound memory)"
                )
            outside = self.dataset.outside_paths
            if outside:
                shown = ", ".join(str(p) for p in outside[:_MAX_NAMED_OUTSIDE])
                more = f" and {len(outside) - _MAX_NAMED_OUTSIDE} more" if len(outside) > _MAX_NAMED_OUTSIDE else ""
                lines.append(
                    f"coreml-quality: dataset lists {len(outside)} file(s) outside {self.dataset.root}: {shown}{more}"
                )
        if self.settings.variants:
            lines.append(f"coreml-quality: variants {', '.join(self.settings.variants)}")
        return lines

    # --- runtime --------------------------------------------------------------------------
    def backend(self) -> Backend:
        with self._lock:
            if self._backend is None:
                from pytest_coreml_quality.runtime import get_backend

                self._backend = get_backend(self.settings.backend)
            return self._backend

    def runtime_options(self) -> RuntimeOptions:
        return RuntimeOptions(precision=self.settings.precision, cache_dir=self.cache_dir / "compiled")  # type: ignore[arg-type]

    # --- variants -------------------------------------------------------------------------
    def variant(self, model_key: str, recipe: str) -> Any:
        """The built (or cached) variant; ``base`` is the model as given."""
        with self._lock:
            if (model_key, recipe) not in self._variants:
                from pytest_coreml_quality.variants import build_variant

                model = self.model(model_key)
                variant = build_variant(model, recipe, self.cache_dir / "variants", progress=self.progress)
                opened = model if recipe == BASE else Model.open(variant.path)
                self._variants[(model_key, recipe)] = variant
                self._variant_models[(model_key, recipe)] = opened
                self._record_size(model_key, recipe, variant, opened)
            return self._variants[(model_key, recipe)]

    def variant_model(self, model_key: str, recipe: str) -> Model:
        """The variant as a :class:`Model` (the model itself for ``base``)."""
        self.variant(model_key, recipe)
        return self._variant_models[(model_key, recipe)]

    def _record_size(self, model_key: str, recipe: str, variant: Any, opened: Model) -> None:
        result = self.results.models[model_key].variant(recipe)
        result.path = str(variant.path)
        result.kind = opened.kind
        result.size_bytes = int(variant.size_bytes)
        result.ratio = variant.ratio
        result.params = variant.parameters
        result.bits_per_weight = variant.bits_per_weight
        result.content_hash = opened.content_hash

    # --- evaluation -----------------------------------------------------------------------
    def evaluator(self) -> "Evaluator":
        with self._lock:
            if self._evaluator is None:
                if self.dataset is None:
                    raise CoreMLQualityError("no golden set given", field="--coreml-dataset", expected="a directory with images/ and masks/")
                from pytest_coreml_quality.evaluate import Evaluator
                from pytest_coreml_quality.preprocess import PreprocessSettings

                settings = PreprocessSettings(
                    output_name=self.settings.output,
                    normalization=self.settings.normalization,
                    output_kind="logits" if self.settings.logits else "probabilities",
                    resample=self.settings.resample,
                )
                self._evaluator = Evaluator(self.dataset, settings, cache_dir=self.cache_dir, with_hce=self.settings.hce)
            return self._evaluator

    def evaluation(self, model_key: str, recipe: str) -> "EvaluationResult":
        """The variant's lazy evaluation: two callers share one run of the model."""
        model = self.variant_model(model_key, recipe)
        return self.evaluator().evaluate(backend=self.backend(), model=model, options=self.runtime_options())

    def quality(self, model_key: str, recipe: str) -> VariantResult:
        """Metrics vs ground truth and drift vs base, recorded in the run's results."""
        started = time.perf_counter()
        ev = self.evaluation(model_key, recipe)
        fresh = not ev.computed
        if fresh and self.dataset is not None:
            # A 1024x1024 model takes seconds per image: say what is going on before it starts.
            self.progress(f"evaluating {model_key} [{recipe}] on {len(self.dataset.ids)} images ...")
        summary = ev.summary
        per_image = {sid: dict(scores.values) for sid, scores in ev.per_image.items()}
        drift: dict[str, float] = {}
        if recipe != BASE:
            against_base = ev.drift(self.evaluation(model_key, BASE))
            drift = dict(against_base.summary)
            for sid, scores in against_base.per_image.items():
                per_image.setdefault(sid, {}).update({f"drift_{k}": v for k, v in scores.values.items()})
        result = self.results.models[model_key].variant(recipe)
        with self._lock:
            result.metrics = dict(summary)
            result.drift = drift
            result.per_image = per_image
        seconds = time.perf_counter() - started
        if fresh:
            self.progress(
                f"evaluated {model_key} [{recipe}]: {ev.timings.cache_misses} images run, "
                f"{ev.timings.cache_hits} from the prediction cache, {seconds:.1f} s"
            )
        return result

    def image_source(self) -> Any:
        """Photos, ground truth and (cached) predictions for the HTML report."""
        from pytest_coreml_quality.report.html import DatasetImageSource

        def predictions(model_key: str, recipe: str) -> Any:
            result = self.results.models[model_key].variants.get(recipe)
            if result is None or not result.metrics:
                return None  # not evaluated in this run: nothing to show
            # Served from the prediction cache (also after xdist workers did the work).
            return self.evaluation(model_key, recipe).predictions

        datasets = {key: self.dataset for key in self.results.models} if self.dataset is not None else {}
        return DatasetImageSource(datasets=datasets, predictions=predictions)

    # --- thresholds -----------------------------------------------------------------------
    def configured_bounds(self) -> list[Bound]:
        """The thresholds set by options / ini keys, for the generated items."""
        return [Bound(*THRESHOLDS[name], value) for name, value in self.settings.thresholds.items()]

    def check(self, model_key: str, recipe: str, kind: str, bounds: list[Bound] | None = None) -> list[CheckOutcome]:
        """Compare one variant's figures of ``kind`` with ``bounds`` (default: the configured ones).

        A figure that does not exist for this variant (the base model's drift and ratio)
        is not judged.
        """
        result = self.results.models[model_key].variant(recipe)
        outcomes = []
        for bound in self.configured_bounds() if bounds is None else bounds:
            if bound.check != kind:
                continue
            value = figure(result, bound.metric)
            if value is None or (recipe == BASE and bound.metric in BASE_EXEMPT):
                continue
            passed = value <= bound.value if bound.op == "<=" else value >= bound.value
            outcome = CheckOutcome(check=kind, metric=bound.metric, value=value, bound=bound.value, op=bound.op, passed=passed)
            if not passed:
                outcome.worst = worst_images(result.per_image, bound.metric)
            outcomes.append(outcome)
        with self._lock:
            judged = {(o.metric, o.op) for o in outcomes}
            result.checks = [c for c in result.checks if not (c.check == kind and (c.metric, c.op) in judged)]
            result.checks.extend(outcomes)
        return outcomes


@dataclass(frozen=True)
class Bound:
    """A threshold: ``metric`` of a ``check`` ('quality', 'size', 'load') must be ``op`` ``value``."""

    check: str
    metric: str
    op: str
    value: float


# Figures that compare a variant with the base model mean nothing for the base itself.
BASE_EXEMPT = frozenset({"ratio"}) | frozenset(f"drift_{m}" for m in ("mae", "flip_share", "max_abs_diff", "psnr", "iou", "mse"))


def figure(result: VariantResult, metric: str) -> float | None:
    """A variant's value of ``metric``: sizes, load times, metrics, or ``drift_<name>``."""
    if metric == "size_mb":
        return result.size_mb
    if metric == "ratio":
        return result.ratio
    if metric in ("cold_s", "warm_s"):
        return getattr(result.load, metric)
    if metric == "speedup":
        return result.load.speedup
    if metric.startswith("drift_"):
        return result.drift.get(metric[len("drift_") :])
    return result.metrics.get(metric)
