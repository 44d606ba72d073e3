"""Model variant x golden set -> predicted masks (cached) -> metrics, and drift against the base.

:class:`Evaluator` holds one :class:`Dataset` (decoded once) and the preprocessing
settings, and hands out :class:`EvaluationResult` objects that compute lazily: the
model is loaded and run only when a result's predictions are first needed, and only
for the images whose masks are not in the prediction cache.

Prediction cache: one float32 ``.npy`` payload per (variant content hash, image pixel
hash, preprocessing settings, backend name + options) — lossless, unlike the JPEG
masks of the article's script — sealed with a digest of its key and bytes
(``cachefs.seal``): a damaged entry, one copied from another key, or one holding values
that are not a mask (NaN, outside [0, 1], wrong shape) is a miss, recomputed with a
one-line note. Entries are written atomically (``cachefs``). A variant's images are
split into chunks (``Evaluator.chunk_size``) claimed through one file lock each, so
pytest-xdist workers that need the same variant split its images instead of one waiting
for the other: each image is predicted once overall. In memory, results are memoised
under the same key, so two callers asking for one variant share one run.

While the model runs on one image, helper threads prepare the next inputs and turn the
previous outputs into masks, cache them and score them (:mod:`.overlap`): the results,
their order and the errors are those of a plain loop.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from pytest_coreml_quality.cachedrun import CachedRun, CacheSetup
from pytest_coreml_quality.cachefs import Note, atomic_write_bytes, parts_digest, read_sealed_array, seal
from pytest_coreml_quality.chunks import DEFAULT_CHUNK
from pytest_coreml_quality.dataset import Dataset, Sample
from pytest_coreml_quality.metrics.reference import Reference
from pytest_coreml_quality.metrics.scores import ImageScores, score_mask, summarize
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.output_checks import NonFiniteOutputError
from pytest_coreml_quality.overlap import meanwhile, run_overlapped
from pytest_coreml_quality.preprocess import RESAMPLE_FILTERS, PreprocessSettings, Preprocessor
from pytest_coreml_quality.runtime.base import Backend, Predictor, RuntimeOptions

# Bump when the stored mask format or the postprocessing changes meaning.
CACHE_FORMAT = "masks-v2"  # v2: sealed with a digest of (key, bytes)
MASK_SUFFIX = ".mask"


class PredictionCache:
    """Lossless on-disk store of predicted masks (sealed float32 ``.npy``), keyed by content."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory) / "predictions" / CACHE_FORMAT

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}{MASK_SUFFIX}"

    def get(self, key: str, shape: tuple[int, int]) -> NDArray[np.float32] | None:
        """The stored mask, or None if absent or unusable (see :meth:`lookup`)."""
        return self.lookup(key, shape)[0]

    def lookup(self, key: str, shape: tuple[int, int]) -> tuple[NDArray[np.float32] | None, str | None]:
        """``(mask, None)`` on a hit, ``(None, None)`` if absent, ``(None, why)`` if the entry is unusable."""
        arr, why = read_sealed_array(self.path(key), key)
        if arr is None:
            return None, why
        problem = mask_problem(arr, shape)
        return (None, problem) if problem else (arr, None)

    def put(self, key: str, mask: NDArray[np.float32]) -> None:
        arr = np.ascontiguousarray(mask, dtype=np.float32)
        problem = mask_problem(arr, arr.shape)  # type: ignore[arg-type]
        if problem:  # the postprocessing guarantees masks; never store anything else
            raise ValueError(f"refusing to cache a prediction that is not a mask: {problem}")
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        atomic_write_bytes(self.path(key), seal(key, buf.getvalue()))

    @property
    def locks(self) -> Path:
        """Where the per-chunk locks of :func:`.chunks.fill_in_chunks` live."""
        return self.directory / "locks"


def mask_problem(arr: NDArray[Any], shape: tuple[int, ...]) -> str | None:
    """None for a float32 mask of ``shape`` with every value in [0, 1], else what is wrong."""
    if arr.dtype != np.float32 or arr.shape != tuple(shape):
        return f"holds {arr.dtype}{list(arr.shape)}, expected float32{list(shape)}"
    if arr.size and not (np.isfinite(arr).all() and arr.min() >= 0.0 and arr.max() <= 1.0):
        return "holds values that are NaN or outside [0, 1]"
    return None


def _read_salt(model: Model) -> str:
    """Part of the key for models whose masks were read differently before: float16 grayscale
    image outputs (rounded to 8 bits and divided by 255 before, read as values now)."""
    return ";f16-image-v2" if any(f.color_layout == "GRAYSCALE_FLOAT16" for f in model.outputs) else ""


@dataclass(frozen=True)
class VariantKey:
    """What makes two runs interchangeable: same model bytes, backend and preprocessing."""

    model_hash: str
    backend: str
    settings: str

    def digest(self) -> str:
        return parts_digest(self.model_hash, self.backend, self.settings, CACHE_FORMAT)

    def for_image(self, image_hash: str) -> str:
        return parts_digest(self.digest(), image_hash)



def backend_key(name: str, options: RuntimeOptions | None) -> str:
    """Backend part of the cache key: its name and the options that change its numbers."""
    return f"{name}[{(options or RuntimeOptions()).cache_key()}]"


def predictor_backend_key(predictor: Predictor) -> str:
    """Best-effort backend key of a bare predictor: ``backend_name``/``options`` attributes if present."""
    name = getattr(predictor, "backend_name", None) or getattr(getattr(predictor, "backend", None), "name", None)
    if not name:
        cls = type(predictor)
        name = f"{cls.__module__}.{cls.__qualname__}"
    options = getattr(predictor, "options", None)
    return backend_key(str(name), options if isinstance(options, RuntimeOptions) else None)


@dataclass
class Timings:
    """Seconds spent per phase (for benchmarks and reports)."""

    load: float = 0.0
    predict: float = 0.0  # preprocessing + inference + postprocessing of cache misses
    metrics: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0


@dataclass
class DriftResult:
    """A variant's predictions scored against the base model's predictions."""

    per_image: dict[str, ImageScores]
    summary: dict[str, float]


class EvaluationResult(CachedRun[dict[str, NDArray[np.float32]]]):
    """Predictions and metrics of one variant on the golden set; computed on first access."""

    cache_label = "prediction cache"

    def __init__(
        self,
        evaluator: "Evaluator",
        model: Model,
        key: VariantKey,
        load: Callable[[], Predictor],
        settings: PreprocessSettings | None = None,
    ) -> None:
        self.evaluator = evaluator
        self.settings = settings or evaluator.settings
        self.model = model
        self.key = key
        self._load = load
        self._lock = threading.RLock()
        self._predictions: dict[str, NDArray[np.float32]] | None = None
        self._scores: dict[str, ImageScores] | None = None
        self._summary: dict[str, float] | None = None
        self._drift: dict[str, DriftResult] = {}
        self._references: dict[str, Reference] | None = None
        self._early_scores: dict[str, ImageScores] = {}
        self._preprocessor: Preprocessor | None = None
        self._predictor: Predictor | None = None
        self.timings = Timings()

    # --- predictions ------------------------------------------------------------------
    @property
    def computed(self) -> bool:
        """Whether the predictions are in memory already (asking for them costs nothing)."""
        return self._predictions is not None

    @property
    def predictions(self) -> dict[str, NDArray[np.float32]]:
        """Sample id -> float32 mask in [0, 1] at the photo's size."""
        with self._lock:
            if self._predictions is None:
                self._predictions = self._predict_all()
            return self._predictions

    def _predict_all(self) -> dict[str, NDArray[np.float32]]:
        samples, found = self._gather()
        return {s.id: found[s.id] for s in samples}

    # --- hooks of the cache-and-chunks flow (see .cachedrun) ---------------------------------
    @property
    def _tally(self) -> Timings:
        return self.timings

    def _samples(self) -> list[Sample]:
        return self.evaluator.samples()

    def _cache_setup(self) -> CacheSetup | None:
        ev = self.evaluator
        cache = ev.cache
        return None if cache is None else CacheSetup(self.key.digest(), cache.locks, ev.chunk_size, ev.note)

    def _new_found(self) -> dict[str, NDArray[np.float32]]:
        return {}

    def _complete(self, sample: Sample, found: dict[str, NDArray[np.float32]]) -> bool:
        return sample.id in found

    def _read_entries(self, sample: Sample, found: dict[str, NDArray[np.float32]]) -> list[str]:
        cache = self.evaluator.cache
        assert cache is not None
        mask, problem = cache.lookup(self.key.for_image(sample.image_hash), (sample.size[1], sample.size[0]))
        if mask is not None:
            found[sample.id] = mask
        return [] if problem is None else [problem]

    def _compute(self, missing: list[Sample], found: dict[str, NDArray[np.float32]]) -> None:
        """Predict ``missing`` into ``found`` (and the cache), scoring each mask while the next one runs."""
        if not missing:
            return
        ev = self.evaluator
        if self._preprocessor is None:
            # Check the settings against the model's description before a (slow) load.
            self._preprocessor = Preprocessor(self.model, self.settings)
        pre = self._preprocessor
        score = ev.dataset.has_truth
        if self._predictor is None:
            # A cold load leaves a core idle part of the time: prepare the ground truths there
            # (what is not ready when the model is, the scoring prepares itself).
            with meanwhile(lambda stopped: ev.prepare_references(missing, stopped)) if score else nullcontext():
                t0 = time.perf_counter()
                self._predictor = self._load()
                self.timings.load = time.perf_counter() - t0
        predictor = self._predictor
        started = time.perf_counter()

        def predict(s: Sample, inputs: dict[str, Any]) -> dict[str, Any]:
            try:
                return predictor.predict(inputs)
            except NonFiniteOutputError as exc:  # found by the runtime, which knows no image ids
                raise exc.for_image(s.id) from None

        def finish(s: Sample, outputs: dict[str, Any]) -> None:
            mask = pre.mask_from(outputs, s.size, image=s.id)
            if ev.cache is not None:
                ev.cache.put(self.key.for_image(s.image_hash), mask)
            found[s.id] = mask
            if score:  # the ground-truth metrics, while the model runs on the next image
                t0 = time.perf_counter()
                self._early_scores[s.id] = score_mask(mask, ev.reference(s), threshold=ev.threshold, with_hce=ev.with_hce)
                self.timings.metrics += time.perf_counter() - t0

        def prepare(s: Sample) -> dict[str, Any]:
            # prepare() leaves an image of the model's size as it is: hand it the memoised resize.
            return pre.prepare(ev.resized(s, pre.target_size(s.size), self.settings.resample))

        run_overlapped(missing, prepare, predict, finish, ahead=ev.ahead)
        self.timings.cache_misses += len(missing)
        self.timings.predict += time.perf_counter() - started

    # --- metrics against the ground truth ---------------------------------------------------
    @property
    def per_image(self) -> dict[str, ImageScores]:
        """Sample id -> scores against the ground-truth mask (empty for an image-only golden set)."""
        with self._lock:
            if self._scores is None:
                ev = self.evaluator
                if not ev.dataset.has_truth:  # nothing to score against; drift still works
                    self._scores = {}
                    return self._scores
                preds = self.predictions
                t0 = time.perf_counter()
                early = self._early_scores  # scored while the model ran (images predicted in this run)
                self._scores = {
                    s.id: early[s.id] if s.id in early
                    else score_mask(preds[s.id], ev.reference(s), threshold=ev.threshold, with_hce=ev.with_hce)
                    for s in ev.dataset
                }
                self.timings.metrics += time.perf_counter() - t0
            return self._scores

    @property
    def summary(self) -> dict[str, float]:
        """Whole-set metrics (weighted by the samples' weights); empty without ground truth."""
        with self._lock:
            if self._summary is None:
                scores = self.per_image
                ds = self.evaluator.dataset
                self._summary = (
                    summarize([scores[i] for i in ds.ids], [e.weight for e in ds.entries]) if scores else {}
                )
            return self._summary

    # --- drift against the base model ---------------------------------------------------
    def drift(self, base: "EvaluationResult") -> DriftResult:
        """This variant's masks scored with ``base``'s masks as the reference (memoised)."""
        with self._lock:
            cached = self._drift.get(base.key.digest())
            if cached is not None:
                return cached
            preds, refs = self.predictions, base.as_references()
            ev = self.evaluator
            t0 = time.perf_counter()
            per_image = {
                i: score_mask(preds[i], refs[i], threshold=ev.threshold, with_hce=ev.with_hce, with_drift=True)
                for i in ev.dataset.ids
            }
            result = DriftResult(
                per_image=per_image,
                summary=summarize([per_image[i] for i in ev.dataset.ids], [e.weight for e in ev.dataset.entries]),
            )
            self.timings.metrics += time.perf_counter() - t0
            self._drift[base.key.digest()] = result
            return result

    def as_references(self) -> dict[str, Reference]:
        """This variant's masks prepared as references (for the drift of other variants)."""
        with self._lock:
            if self._references is None:
                preds = self.predictions
                self._references = {i: Reference(preds[i]) for i in self.evaluator.dataset.ids}
            return self._references

    def __repr__(self) -> str:
        return f"EvaluationResult({self.model.name}, backend={self.key.backend})"


@dataclass
class Evaluator:
    """Evaluates model variants on one golden set with one set of preprocessing settings.

    ``cache_dir=None`` keeps predictions in memory only; pass a directory (the plugin
    uses its cache directory) to reuse them across runs and pytest-xdist workers.
    ``with_hce=True`` adds HCE when PySODMetrics is importable (off by default: it costs
    seconds per megapixel, more than the inference it would be compared with).
    """

    dataset: Dataset
    settings: PreprocessSettings = field(default_factory=PreprocessSettings)
    cache_dir: Path | None = None
    threshold: float = 0.5
    with_hce: bool = False
    note: Note | None = field(default=None, repr=False)  # told when damaged cache entries are recomputed
    # Images per claimed chunk of the prediction cache (see .cachedrun and .chunks).
    chunk_size: int = DEFAULT_CHUNK
    # Images prepared ahead of, and finished behind, the one the model runs on (bounds memory).
    ahead: int = 2
    # Photos resized to a model's input are kept for the next variant up to this many bytes
    # (the resize costs as much as scoring at 1 MP; every variant of a run usually shares it).
    resized_budget: int = 256 * 2**20
    _references: dict[str, Reference] = field(default_factory=dict, init=False, repr=False)
    _resized: dict[tuple[str, tuple[int, int], str], Image.Image] = field(default_factory=dict, init=False, repr=False)
    _resized_bytes: int = field(default=0, init=False, repr=False)
    _memo: dict[str, EvaluationResult] = field(default_factory=dict, init=False, repr=False)
    _memo_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def reference(self, sample: Sample) -> Reference:
        """The sample's ground truth, prepared once for every variant scored against it."""
        if sample.mask is None:
            raise ValueError(f"golden-set image '{sample.id}' has no ground-truth mask")
        with self._memo_lock:
            ref = self._references.get(sample.id)
            if ref is None:
                ref = self._references[sample.id] = Reference(sample.mask)
            return ref

    def resized(self, sample: Sample, size: tuple[int, int], resample: str) -> Image.Image:
        """``sample.image`` resized to ``size`` with the named filter, as the preprocessing
        resizes it; kept for the next variant while :attr:`resized_budget` allows."""
        image = sample.image
        if image.size == size:
            return image
        key = (sample.id, size, resample)
        with self._memo_lock:
            kept = self._resized.get(key)
        if kept is not None:
            return kept
        resized = image.resize(size, RESAMPLE_FILTERS[resample])
        cost = resized.width * resized.height * len(resized.getbands())
        with self._memo_lock:
            if key not in self._resized and self._resized_bytes + cost <= self.resized_budget:
                self._resized[key] = resized
                self._resized_bytes += cost
        return resized

    def prepare_references(self, samples: Sequence[Sample], stopped: Callable[[], bool] = lambda: False) -> None:
        """Prepare the ground truths of ``samples`` now (distance transforms and the like), in
        order, until ``stopped()``; each is then ready for every variant scored against it."""
        for s in samples:
            if stopped():
                return
            self.reference(s).prepare()

    def samples(self) -> list[Sample]:
        """The images every variant is evaluated on, in order: the one place that decides the list."""
        return list(self.dataset)

    @property
    def cache(self) -> PredictionCache | None:
        return None if self.cache_dir is None else PredictionCache(self.cache_dir)

    def evaluate(
        self,
        predictor: Predictor | None = None,
        *,
        backend: Backend | None = None,
        model: Model | None = None,
        options: RuntimeOptions | None = None,
        backend_id: str | None = None,
        settings: PreprocessSettings | None = None,
    ) -> EvaluationResult:
        """A lazy result for a ready ``predictor``, or for ``model`` loaded by ``backend`` when needed.

        With a bare predictor, ``backend_id`` names its backend and options in the cache
        key; by default it is read from the predictor's ``backend_name`` and ``options``
        attributes (or its class name). Pass a backend and model where possible: the
        model is then not even loaded when every prediction is cached.
        Asking twice for the same variant (same model bytes, backend and options)
        returns the same result object, so its predictions are computed once.
        ``settings`` overrides the evaluator's preprocessing for this model (the plugin
        passes each model's decided mask contract).
        """
        settings = settings or self.settings
        if predictor is not None:
            the_model = predictor.model
            bkey = backend_id or predictor_backend_key(predictor)
            ready: Predictor = predictor
            load: Callable[[], Predictor] = lambda: ready  # noqa: E731
        elif backend is not None and model is not None:
            the_model = model
            bkey = backend_key(backend.name, options)
            chosen_backend, chosen_model = backend, model
            load = lambda: chosen_backend.load(chosen_model, options)  # noqa: E731
        else:
            raise TypeError("evaluate() needs a predictor, or a backend and a model")
        key = VariantKey(model_hash=the_model.content_hash, backend=bkey, settings=settings.cache_key() + _read_salt(the_model))
        with self._memo_lock:
            result = self._memo.get(key.digest())
            if result is None:
                result = EvaluationResult(self, the_model, key, load, settings)
                if predictor is not None:  # nothing to load: no load-time work either
                    result._predictor = predictor
                self._memo[key.digest()] = result
            return result

