"""One object per pytest run: settings, models, golden set, variants, evaluations, results.

It knows nothing of pytest: the plugin creates it in ``pytest_configure``, keeps it in
``config.stash``, and the generated items and fixtures ask it for what they need. Every
expensive step (variant build, model load, evaluation) runs lazily, at most once per
run, and is cached on disk for the next run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_coreml_quality.errors import CoreMLQualityError
from pytest_coreml_quality.lanes import ONNX_EMULATION, Lane, on_same_lane, partner, split_key
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.results import BASE_VARIANT, CheckOutcome, RunResults, VariantResult
from pytest_coreml_quality.runtime import resolve_backend_name
from pytest_coreml_quality.runtime.base import Backend, RuntimeOptions
from pytest_coreml_quality.settings import ModelSettings, Settings
from pytest_coreml_quality.thresholds import Bound, configured_bounds, judge

if TYPE_CHECKING:
    from pytest_coreml_quality.baseline import BaselineComparison
    from pytest_coreml_quality.dataset import Dataset
    from pytest_coreml_quality.evaluate import EvaluationResult, Evaluator
    from pytest_coreml_quality.preprocess import PreprocessSettings

# Drift figures kept between the two backends of a side-by-side run (catalogue: backend_<name>).
BACKEND_DRIFT = ("mae", "max_abs_diff", "flip_share")
# Files named in the header when a manifest points outside its folder; the count says the rest.
_MAX_NAMED_OUTSIDE = 5

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
    masks: dict[str, str] = field(default_factory=dict)  # model key -> the mask contract 'auto' decided
    mask_notes: dict[str, str] = field(default_factory=dict)  # model key -> how 'auto' reads its mask
    header_notes: list[str] = field(default_factory=list)  # e.g. which pipeline stages are checked
    per_model: dict[str, ModelSettings] = field(default_factory=dict)  # model key -> its own settings
    kinds: dict[str, str] = field(default_factory=dict)  # model key -> tensor kind, for outputs not read as masks
    output_notes: dict[str, str] = field(default_factory=dict)  # model key -> how its output is compared
    _tensors: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)
    labels: dict[str, str] | None = None  # sample id -> true class, from the golden set's labels.csv
    swept: dict[str, list[str]] = field(default_factory=dict)  # model key -> recipes only the sweep asked for
    sweep_budget: Any = None  # variants.sweep.SweepBudget under --coreml-sweep-budget
    _variants: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)
    _variant_models: dict[tuple[str, str], Model] = field(default_factory=dict, repr=False)
    _swept_built: set[str] = field(default_factory=set, repr=False)  # model keys whose sweep was built in one pass
    _sweep_failures: dict[tuple[str, str], Exception] = field(default_factory=dict, repr=False)  # recipes that failed in that pass
    lanes: list[Lane] = field(default_factory=list)  # backend x compute units every variant runs on
    merged: Any = None  # merge.MergedRun under --coreml-merge: the figures come from shard reports
    _backends: dict[str, Backend] = field(default_factory=dict, repr=False)
    _evaluator: "Evaluator | None" = field(default=None, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    # --- start: see startup.py -------------------------------------------------------------
    @classmethod
    def start(cls, settings: Settings, default_cache_dir: Path) -> "QualitySession":
        """Open the models and golden set and parse the recipes; raise one error naming every problem."""
        session = cls(settings=settings, cache_dir=settings.cache_dir or default_cache_dir)
        from pytest_coreml_quality.startup import open_everything

        open_everything(session)
        return session

    @property
    def has_work(self) -> bool:
        """Whether this run has figures to report: models to measure, or shard reports to merge."""
        return bool(self.models) or self.merged is not None

    # --- identity ------------------------------------------------------------------------
    def key(self, model: Model) -> str:
        """How a model is named in ids and reports: its file name, or its path if two share a name."""
        names = [m.name for m in self.models]
        return model.name if names.count(model.name) <= 1 else str(model.path)

    def model(self, key: str) -> Model:
        return next(m for m in self.models if self.key(m) == key)

    def model_settings(self, key: str) -> ModelSettings:
        """The settings that may differ between models (variants, mask, thresholds ...) for one model."""
        own = self.per_model.get(key)
        if own is None:  # a session built by hand, without start()
            index = self.models.index(self.model(key))
            own = self.per_model[key] = self.settings.for_model(index)
        return own

    @property
    def backend_name(self) -> str:
        return resolve_backend_name(self.settings.backend)

    @property
    def backend_names(self) -> list[str]:
        """The resolved backends: one, or two side by side (the first is judged against the second)."""
        names = [self.backend_name]
        if self.settings.compare_backend is not None:
            names.append(resolve_backend_name(self.settings.compare_backend))
        return names

    @property
    def backend_label(self) -> str:
        label = " + ".join(self.backend_names)
        if self.settings.precision != "fp32":
            label += f" {self.settings.precision}"
        if self.settings.compute_units:
            label += f" on {', '.join(self.settings.compute_units)}"
        return label

    def run_keys(self, recipe: str) -> list[str]:
        """The results keys of ``recipe``: the recipe itself, or one ``recipe@lane`` per lane."""
        return [lane.key(recipe) for lane in self.lanes] or [recipe]

    def lane(self, key: str) -> Lane | None:
        """The lane a results key (``q4@CPU_AND_NE``) runs on; None before lanes are planned."""
        _, label = split_key(key)
        return next((lane for lane in self.lanes if lane.label == label), self.lanes[0] if self.lanes else None)

    def header_lines(self) -> list[str]:
        """Lines for pytest's report header."""
        if self.merged is not None:
            return [f"coreml-quality: {line}" for line in self.merged.header_lines()] + [
                f"coreml-quality: {note}" for note in self.settings.notes
            ]
        if not self.models:
            return []
        backend = self.settings.backend
        shown = f"{backend} ({self.backend_name})" if backend == "auto" else backend
        cache = f"{self.cache_dir} (cleared)" if self.cache_cleared else str(self.cache_dir)
        if self.settings.compare_backend is not None:
            shown = f"{shown} side by side with {self.settings.compare_backend} (drift between them: backend_* figures)"
        lines = [f"coreml-quality: backend {shown}, precision {self.settings.precision}, cache {cache}"]
        if self.settings.compute_units:
            line = f"coreml-quality: compute units {', '.join(self.settings.compute_units)}"
            if "onnx" in self.backend_names:
                line += f" (onnx emulates them: {ONNX_EMULATION})"
            lines.append(line)
        lines += [f"coreml-quality: model {m.summary()}" for m in self.models]
        lines += [f"coreml-quality: {note}" for note in self.header_notes]
        lines += [f"coreml-quality: {key} mask: {note}" for key, note in self.mask_notes.items()]
        lines += [f"coreml-quality: {key} output: {note}" for key, note in self.output_notes.items()]
        if self.dataset is not None:
            lines.append(f"coreml-quality: dataset {self.settings.dataset} ({len(self.dataset.ids)} images)")
            if self.settings.shard is not None and self.dataset.whole is not None:
                index, count = self.settings.shard
                lines.append(
                    f"coreml-quality: shard {index}/{count}: {len(self.dataset.ids)} of {len(self.dataset.whole.ids)} "
                    "images (ranks in id order modulo the shard count); thresholds are judged by the --coreml-merge run"
                )
            if not self.dataset.has_truth:
                lines.append(
                    "coreml-quality: dataset has no ground-truth masks: figures against the ground truth "
                    "are not measured (shown as -); drift figures against the base model are"
                )
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
        if self.settings.per_model:
            # Models from [tool.coreml-quality]: say each one's variants and bounds.
            for key, own in self.per_model.items():
                bounds = ", ".join(f"{dest[len('coreml_'):]}={value:g}" for dest, value in own.thresholds.items())
                variants = ", ".join(own.variants) or "base only"
                lines.append(f"coreml-quality: {key} variants {variants}" + (f"; thresholds {bounds}" if bounds else ""))
        elif self.settings.variants:
            lines.append(f"coreml-quality: variants {', '.join(self.settings.variants)}")
        lines += [f"coreml-quality: {note}" for note in self.settings.notes]
        return lines

    def note(self, line: str) -> None:
        """A one-line note (e.g. a damaged cache entry rebuilt): shown now and in the terminal summary."""
        self.progress(line)
        text = f"coreml-quality: NOTE: {line}"
        with self._lock:
            if text not in self.report_notes:
                self.report_notes.append(text)

    # --- runtime --------------------------------------------------------------------------
    def backend(self, lane: Lane | None = None) -> Backend:
        """The backend of ``lane`` (default: the first backend named)."""
        name = lane.backend if lane is not None else self.settings.backend
        with self._lock:
            if name not in self._backends:
                from pytest_coreml_quality.runtime import get_backend, intra_op_threads

                # Each xdist worker's sessions use its share of the cores (or --coreml-threads).
                backend = get_backend(name, threads=intra_op_threads(self.settings.threads))
                if hasattr(backend, "note"):  # backends with a compiled cache report repairs
                    backend.note = self.note  # type: ignore[attr-defined]
                self._backends[name] = backend
            return self._backends[name]

    def runtime_options(self, lane: Lane | None = None) -> RuntimeOptions:
        """What ``lane``'s backend computes (default: the run's precision, Core ML's default units)."""
        if lane is not None:
            return lane.options(self.settings.precision, self.cache_dir / "compiled")
        return RuntimeOptions(precision=self.settings.precision, cache_dir=self.cache_dir / "compiled")  # type: ignore[arg-type]

    # --- variants -------------------------------------------------------------------------
    def variant(self, model_key: str, recipe: str) -> Any:
        """The built (or cached) variant; ``base`` is the model as given (``recipe`` may be a lane key)."""
        recipe, _ = split_key(recipe)
        with self._lock:
            if (model_key, recipe) not in self._variants:
                from pytest_coreml_quality.variants import build_variant

                model = self.model(model_key)
                if self.is_swept(model_key, recipe):
                    failure = self._prebuild_sweep(model_key, model, recipe).get((model_key, recipe))
                    if failure is not None:
                        raise failure
                started = time.perf_counter()
                self._check_sweep_budget(model, model_key, recipe)
                variant = build_variant(model, recipe, self.cache_dir / "variants", progress=self.progress, note=self.note)
                if self.is_swept(model_key, recipe) and self.sweep_budget is not None and not variant.cached:
                    self.sweep_budget.charge(time.perf_counter() - started)
                opened = model if recipe == BASE_VARIANT else Model.open(variant.path)
                self._variants[(model_key, recipe)] = variant
                self._variant_models[(model_key, recipe)] = opened
                self._record_size(model_key, recipe, variant, opened)
            return self._variants[(model_key, recipe)]

    def is_swept(self, model_key: str, recipe: str) -> bool:
        """Whether only the sweep asked for this variant (its broken thresholds do not fail the run)."""
        return recipe in self.swept.get(model_key, ())

    def _prebuild_sweep(self, model_key: str, model: Model, first: str) -> dict[tuple[str, str], Exception]:
        """Build every swept variant of the model in one pass the first time one (``first``) is asked for.

        ``build_sweep`` zips each variant while it builds the next and shares k-means sorts
        across bit widths; the variants land in the cache, where :meth:`variant` finds them.
        ``first`` is built first, then the rest in sweep order (cheap first) until the budget
        would skip one: from there, :meth:`variant` skips and lists them one by one, as asked.
        Returns the recipes that failed (per model key, recipe).
        """
        failures = self._sweep_failures
        if model_key in self._swept_built:
            return failures
        self._swept_built.add(model_key)
        from pytest_coreml_quality.variants.sweep_build import build_sweep

        swept = self.swept.get(model_key, [])
        todo = [r for r in [first, *swept] if r in swept and (model_key, r) not in self._variants]
        outcomes = build_sweep(
            model, list(dict.fromkeys(todo)), self.cache_dir / "variants", budget=self.sweep_budget, progress=self.progress,
            note=self.note, stop_at_budget=True,
        )
        failures.update({(model_key, r): o for r, o in outcomes.items() if isinstance(o, Exception)})
        return failures

    def _check_sweep_budget(self, model: Model, model_key: str, recipe: str) -> None:
        """Raise :class:`SweepSkipped` for a swept variant that would need a build the budget cannot pay."""
        budget = self.sweep_budget
        if budget is None or not self.is_swept(model_key, recipe):
            return
        from pytest_coreml_quality.variants.cache import is_cached
        from pytest_coreml_quality.variants.recipes import parse_recipe

        if is_cached(model, parse_recipe(recipe), self.cache_dir / "variants") or budget.allows_another():
            return
        label = f"{model_key} [{recipe}]"
        if label not in budget.skipped:
            self.note(f"sweep budget spent: {label} skipped")
        raise budget.skip(label)

    def recommendation(self, model_key: str, *, measure: bool = False) -> Any:
        """The :class:`~pytest_coreml_quality.recommend.Recommendation` for one model.

        With ``measure``, every variant is first measured for what the thresholds need
        (from the caches when other items already did it, also in other xdist workers);
        a variant that cannot be built (a failed recipe, the sweep budget) is left out.
        """
        from pytest_coreml_quality.recommend import recommend
        from pytest_coreml_quality.variants.sweep import SweepSkipped

        bounds = self.configured_bounds()
        checks = {b.check for b in bounds}
        whole = self.results.models[model_key]
        available = []
        for recipe in self.recipes[model_key]:
            if measure:
                try:
                    self.variant(model_key, recipe)
                    if self.dataset is not None:
                        self.quality(model_key, recipe)
                    if "load" in checks:
                        self._measure_load_for_recommendation(model_key, recipe)
                except (CoreMLQualityError, SweepSkipped):
                    continue
            if recipe in whole.variants:
                available.append(recipe)
        only = replace(whole, variants={r: whole.variants[r] for r in available})
        return recommend(only, bounds, self.settings.recommend_metric)

    def recommendations(self) -> dict[str, Any]:
        """Model key -> recommendation over the variants this run measured (nothing is measured here)."""
        return {
            key: self.recommendation(key)
            for key, model in self.results.models.items()
            if any(v.size_bytes is not None for v in model.variants.values())
        }

    def _measure_load_for_recommendation(self, model_key: str, recipe: str) -> None:
        from pytest_coreml_quality.loadtime import time_plainly

        load = self.results.models[model_key].variant(recipe).load
        for temperature in ("cold", "warm"):
            if getattr(load, f"{temperature}_s") is None:
                seconds = time_plainly(
                    self.backend(), self.variant_model(model_key, recipe), self.runtime_options(), temperature, self.settings.load_rounds  # type: ignore[arg-type]
                )
                load.timer = "perf_counter"
                setattr(load, f"{temperature}_s", seconds)

    def variant_model(self, model_key: str, recipe: str) -> Model:
        """The variant as a :class:`Model` (the model itself for ``base``)."""
        recipe, _ = split_key(recipe)
        self.variant(model_key, recipe)
        return self._variant_models[(model_key, recipe)]

    def _record_size(self, model_key: str, recipe: str, variant: Any, opened: Model) -> None:
        """Record the variant file's figures once, on every lane's result (the file is the same)."""
        figures: dict[str, Any] = {
            "path": str(variant.path),
            "kind": opened.kind,
            "size_bytes": int(variant.size_bytes),
            "ratio": variant.ratio,
            "params": variant.parameters,
            "bits_per_weight": variant.bits_per_weight,
            "content_hash": opened.content_hash,
        }
        if recipe == BASE_VARIANT:
            from pytest_coreml_quality.download import cached_zip_size

            figures.update(download_bytes=cached_zip_size(variant.path, opened.content_hash, self.cache_dir), build_s=None)
        else:
            figures.update(
                download_bytes=variant.download_bytes, build_s=variant.build_seconds, unchanged=variant.unchanged, note=variant.note
            )
        for key in self.run_keys(recipe):
            result = self.results.models[model_key].variant(key)
            for name, value in figures.items():
                setattr(result, name, value)

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
                    channel_order=self.settings.channel_order,  # type: ignore[arg-type]
                    input_layout=self.settings.input_layout,  # type: ignore[arg-type]
                    mask=self.settings.mask,
                    normalize_predictions=self.settings.normalize_predictions,
                    resample=self.settings.resample,
                )
                self._evaluator = Evaluator(
                    self.dataset, settings, cache_dir=self.cache_dir, with_hce=self.settings.hce, note=self.note,
                    chunk_size=self.chunk_size(),
                )
            return self._evaluator

    def chunk_size(self) -> int:
        """Images per chunk that xdist workers claim of a variant (smaller with more workers, see .chunks)."""
        from pytest_coreml_quality.chunks import chunk_size_for, xdist_workers

        return chunk_size_for(len(self.dataset.ids) if self.dataset is not None else 0, xdist_workers())

    def _model_preprocess(self, model_key: str) -> "PreprocessSettings":
        """The model's own preprocessing settings (its output, mask, normalisation ...)."""
        import dataclasses

        own = self.model_settings(model_key)
        return dataclasses.replace(
            self.evaluator().settings,
            output_name=own.output,
            normalization=own.normalization,
            channel_order=own.channel_order,  # type: ignore[arg-type]
            input_layout=own.input_layout,  # type: ignore[arg-type]
            mask=own.mask,
            normalize_predictions=own.normalize_predictions,
            resample=own.resample,
        )

    def preprocess_settings(self, model_key: str) -> "PreprocessSettings":
        """The model's preprocessing with its mask contract (as ``auto`` decided it)."""
        import dataclasses

        settings = self._model_preprocess(model_key)
        if model_key in self.kinds:
            return dataclasses.replace(settings, output_kind=self.kinds[model_key])
        decided = self.masks.get(model_key)
        return settings if decided is None else dataclasses.replace(settings, mask=decided)

    def evaluation(self, model_key: str, recipe: str) -> "EvaluationResult":
        """The variant's lazy evaluation on its lane: two callers share one run of the model."""
        model = self.variant_model(model_key, recipe)
        lane = self.lane(recipe)
        return self.evaluator().evaluate(
            backend=self.backend(lane), model=model, options=self.runtime_options(lane), settings=self.preprocess_settings(model_key)
        )

    def tensor_evaluation(self, model_key: str, recipe: str) -> Any:
        """The variant's outputs as tensors (:class:`~pytest_coreml_quality.tensors.TensorEvaluation`), one per run."""
        from pytest_coreml_quality.evaluate import backend_key
        from pytest_coreml_quality.tensors import TensorEvaluation

        assert self.dataset is not None
        with self._lock:
            memo = self._tensors.get((model_key, recipe))
            if memo is None:
                model = self.variant_model(model_key, recipe)
                backend, options = self.backend(), self.runtime_options()
                memo = TensorEvaluation(
                    model, self.dataset, self.preprocess_settings(model_key), backend_key(backend.name, options),
                    lambda: backend.load(model, options), cache_dir=self.cache_dir, note=self.note,
                )
                memo.chunk_size = self.chunk_size()
                self._tensors[(model_key, recipe)] = memo
            return memo

    def _tensor_quality(self, model_key: str, recipe: str) -> VariantResult:
        """Drift of a tensor output against the base model's, recorded in the run's results."""
        started = time.perf_counter()
        tev = self.tensor_evaluation(model_key, recipe)
        fresh = not tev.computed
        if fresh:
            self.progress(f"evaluating {model_key} [{recipe}] on {len(tev.dataset.ids)} images ...")
        drift: dict[str, float] = {}
        per_image: dict[str, dict[str, float]] = {}
        metrics: dict[str, float] = {}
        if self.kinds[model_key] == "classifier" and self.labels is not None:
            from pytest_coreml_quality.tensors import accuracy

            hits, metrics = accuracy(tev, self.labels)
            per_image = {sid: dict(values) for sid, values in hits.items()}
        if recipe == BASE_VARIANT:
            tev.outputs  # noqa: B018  # the reference of every variant: run (and cache) it now
        else:
            tolerance = self.settings.keypoint_tolerance if self.kinds[model_key] == "heatmap" else None
            against_base = tev.drift(self.tensor_evaluation(model_key, BASE_VARIANT), tolerance)
            drift = dict(against_base.summary)
            for sid, values in against_base.per_image.items():
                per_image.setdefault(sid, {}).update({f"drift_{k}": v for k, v in values.items()})
        result = self.results.models[model_key].variant(recipe)
        with self._lock:
            result.metrics = metrics
            result.drift = drift
            result.per_image = per_image
        if fresh:
            self.progress(
                f"evaluated {model_key} [{recipe}]: {tev.cache_misses} images run, "
                f"{tev.cache_hits} from the output cache, {time.perf_counter() - started:.1f} s"
            )
        return result

    def quality(self, model_key: str, recipe: str) -> VariantResult:
        """Metrics vs ground truth and drift vs base, recorded in the run's results."""
        if model_key in self.kinds:
            return self._tensor_quality(model_key, recipe)
        started = time.perf_counter()
        ev = self.evaluation(model_key, recipe)
        fresh = not ev.computed
        if fresh and self.dataset is not None:
            # A 1024x1024 model takes seconds per image: say what is going on before it starts.
            self.progress(f"evaluating {model_key} [{recipe}] on {len(self.dataset.ids)} images ...")
        summary = ev.summary
        per_image = {sid: dict(scores.values) for sid, scores in ev.per_image.items()}
        drift: dict[str, float] = {}
        drift_scores: dict[str, Any] = {}
        bare, _ = split_key(recipe)
        lane = self.lane(recipe)
        if bare != BASE_VARIANT:
            against_base = ev.drift(self.evaluation(model_key, on_same_lane(recipe, BASE_VARIANT)))
            drift = dict(against_base.summary)
            drift_scores = against_base.per_image
            for sid, scores in against_base.per_image.items():
                per_image.setdefault(sid, {}).update({f"drift_{k}": v for k, v in scores.values.items()})
        backend_drift = self._backend_drift(model_key, bare, lane, ev, per_image)
        result = self.results.models[model_key].variant(recipe)
        with self._lock:
            result.metrics = dict(summary)
            result.drift = drift
            result.backend_drift = backend_drift
            result.per_image = per_image
            if self.settings.shard is not None:  # what a merge needs beyond per-image values
                from pytest_coreml_quality.shard import score_curves

                result.curves = score_curves(ev.per_image, drift_scores)
        seconds = time.perf_counter() - started
        if fresh:
            self.progress(
                f"evaluated {model_key} [{recipe}]: {ev.timings.cache_misses} images run, "
                f"{ev.timings.cache_hits} from the prediction cache, {seconds:.1f} s"
            )
        return result

    def _backend_drift(
        self, model_key: str, recipe: str, lane: Lane | None, ev: "EvaluationResult", per_image: dict[str, dict[str, float]]
    ) -> dict[str, float]:
        """MAE, max abs difference and flip share between this lane and the second backend's, per variant."""
        other = partner(lane, self.lanes) if lane is not None else None
        if other is None:
            return {}
        between = ev.drift(self.evaluation(model_key, other.key(recipe)))
        for sid, scores in between.per_image.items():
            per_image.setdefault(sid, {}).update({f"backend_{k}": v for k, v in scores.values.items() if k in BACKEND_DRIFT})
        return {k: v for k, v in between.summary.items() if k in BACKEND_DRIFT}

    def predict_ms(self, model_key: str, key: str) -> float:
        """Median prediction time (ms) of a variant on its lane over the golden set, after a warm load."""
        from pytest_coreml_quality.loadtime import time_predictions
        from pytest_coreml_quality.preprocess import Preprocessor

        assert self.dataset is not None
        model = self.variant_model(model_key, key)
        lane = self.lane(key)
        predictor = self.backend(lane).load(model, self.runtime_options(lane))
        pre = Preprocessor(model, self.preprocess_settings(model_key))
        return time_predictions(predictor, [pre.prepare(sample.image) for sample in self.dataset])

    def image_source(self) -> Any:
        """Photos, ground truth and (cached) predictions for the HTML report."""
        from pytest_coreml_quality.images import DatasetImageSource

        def predictions(model_key: str, recipe: str) -> Any:
            result = self.results.models[model_key].variants.get(recipe)
            if result is None or not result.metrics or model_key in self.kinds:  # tensors have no masks to show
                return None  # not evaluated in this run: nothing to show
            # Served from the prediction cache (also after xdist workers did the work).
            return self.evaluation(model_key, recipe).predictions

        def tensors(model_key: str, recipe: str) -> Any:
            variants = self.results.models[model_key].variants
            result = variants.get(recipe)
            if model_key not in self.kinds or result is None:
                return None
            # The base model runs as every variant's reference, yet records no drift of its own.
            ran = any(v.drift or v.metrics for v in variants.values()) if recipe == BASE_VARIANT else bool(result.drift or result.metrics)
            # Served from the output cache (also after xdist workers did the work).
            return self.tensor_evaluation(model_key, recipe) if ran else None

        # Image-only golden sets have no ground truth to show next to predicted masks; models
        # that are not segmenters show the photo next to their outputs.
        has_truth = self.dataset is not None and self.dataset.has_truth
        shown = [key for key in self.results.models if has_truth or key in self.kinds]
        datasets = {key: self.dataset for key in shown} if self.dataset is not None else {}

        def partners(model_key: str, key: str) -> str | None:
            lane = self.lane(key)
            other = partner(lane, self.lanes) if lane is not None and lane.label else None
            return None if other is None else other.key(split_key(key)[0])

        return DatasetImageSource(
            datasets=datasets, predictions=predictions, kinds=dict(self.kinds), tensors=tensors, partners=partners
        )

    # --- baseline -------------------------------------------------------------------------
    def compare_with_baseline(self, model_key: str, recipe: str) -> "BaselineComparison":
        """Compare what this run measured for one variant with the saved baseline, and record the verdict.

        Size is always measured; quality when a golden set is given; load times only when
        the load items ran before. Worse figures become ``baseline`` check outcomes of the
        variant (so the table and JSON verdicts include them), as does a variant for which
        nothing could be compared.
        """
        from pytest_coreml_quality.baseline import Tolerances, compare_to_baseline

        assert self.settings.baseline is not None
        if self.merged is None:  # a merge run has the shards' figures and no model to build
            self.variant(model_key, recipe)
        if self.dataset is not None:
            self.quality(model_key, recipe)
        whole = self.results.models[model_key]
        only = replace(whole, variants={recipe: whole.variants[recipe]})
        comparison = compare_to_baseline(
            RunResults(models={model_key: only}, versions=self.results.versions),
            self.settings.baseline,
            Tolerances(**self.settings.baseline_tolerances),
        )
        outcomes = [
            CheckOutcome(
                check="baseline",
                metric=d.metric,
                value=d.new,
                bound=d.old + d.allowed if d.new > d.old else d.old - d.allowed,
                op="<=" if d.new > d.old else ">=",
                passed=not d.failed,
            )
            for d in comparison.for_variant(model_key, recipe)
            if d.worse
        ]
        if (model_key, recipe) in comparison.not_compared:
            outcomes.append(CheckOutcome(check="baseline", metric="figures compared", value=0, bound=1, op=">=", passed=False))
        result = whole.variants[recipe]
        with self._lock:
            result.checks = [c for c in result.checks if c.check != "baseline"] + outcomes
        return comparison

    # --- thresholds -----------------------------------------------------------------------
    def configured_bounds(self, model_key: str | None = None) -> list[Bound]:
        """The thresholds set by options / ini keys (and the model's table entry), for the generated items."""
        if model_key is None:
            return configured_bounds(self.settings.thresholds)
        return configured_bounds(self.model_settings(model_key).thresholds)

    def check(self, model_key: str, recipe: str, check: str, bounds: list[Bound] | None = None) -> list[CheckOutcome]:
        """Judge one variant's figures of the ``check`` item against ``bounds`` (default: the configured ones)."""
        result = self.results.models[model_key].variant(recipe)
        outcomes = judge(result, split_key(recipe)[0], check, self.configured_bounds(model_key) if bounds is None else bounds)
        with self._lock:
            judged = {(o.metric, o.op) for o in outcomes}
            result.checks = [c for c in result.checks if not (c.check == check and (c.metric, c.op) in judged)]
            result.checks.extend(outcomes)
        return outcomes
