"""Outputs that are not masks (heat maps, depth, embeddings, colour images), compared with the base model's.

``--coreml-output-kind=tensor`` (or ``auto`` on an image-only golden set with an output
that does not read as a mask) keeps each output as the array the model returned: no
resize, no mask contract. A :class:`TensorEvaluation` runs one variant over the golden
set once, keeps its outputs in a sealed on-disk cache (``predictions/tensors-v1``, same
rules as the mask cache: atomic writes, a digest per entry, damaged entries recomputed)
and compares them with the base model's (:mod:`.metrics.tensor_drift`). As for masks, the
next image is prepared and the previous outputs stored while the model runs
(:mod:`.overlap`), and workers needing the same variant split its images (:mod:`.chunks`).

With several image/multiarray outputs and no ``--coreml-output``, every output is
compared: each figure is reported per output as ``<figure>[<output>]`` and the variant's
figure is the worst of its outputs, so a bound holds for every output.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pytest_coreml_quality import catalogue
from pytest_coreml_quality.cachedrun import CachedRun, CacheSetup
from pytest_coreml_quality.cachefs import Note, atomic_write_bytes, parts_digest, read_sealed_array, seal
from pytest_coreml_quality.chunks import DEFAULT_CHUNK
from pytest_coreml_quality.dataset import Dataset, Sample
from pytest_coreml_quality.errors import CoreMLQualityError, UnsupportedModelError
from pytest_coreml_quality.metrics.classifier_drift import accuracy_values, classifier_values
from pytest_coreml_quality.metrics.tensor_drift import tensor_values
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.output_checks import NonFiniteOutputError, require_finite
from pytest_coreml_quality.overlap import run_overlapped
from pytest_coreml_quality.preprocess import PreprocessSettings, Preprocessor
from pytest_coreml_quality.runtime.base import Predictor

CACHE_FORMAT = "tensors-v1"


def as_array(value: Any, labels: list[Any] | None = None) -> NDArray[np.float32]:
    """An output as float32: arrays as they are, images as their H x W (x C) pixel values,
    class-probability dictionaries as a vector in the order of ``labels``."""
    if isinstance(value, dict):
        keys = labels if labels is not None else sorted(value, key=str)
        missing = [k for k in keys if k not in value]
        if missing:
            raise CoreMLQualityError(f"class-probability dictionary lacks class(es) {', '.join(map(str, missing[:5]))}")
        return np.asarray([value[k] for k in keys], dtype=np.float32)
    return np.asarray(value, dtype=np.float32)  # a PIL image gives its H x W (x C) pixels



def class_labels(model: Model) -> list[Any]:
    """The class labels of a classifier model, in the order of its probability vector."""
    from pytest_coreml_quality.runtime.onnx.neuralnetwork import classifier_outputs

    found = classifier_outputs(model.spec)
    if found is None or not found[3]:
        raise UnsupportedModelError(
            "its class labels cannot be read from the spec", path=model.path,
            expected="a classifier with class labels (a neuralNetworkClassifier, or an ML Program ending in classify)",
        )
    return list(found[3])


class TensorCache:
    """Sealed float32 ``.npy`` outputs keyed by (variant, image, output)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory) / "predictions" / CACHE_FORMAT

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.npy"

    def lookup(self, key: str) -> tuple[NDArray[np.float32] | None, str | None]:
        """``(array, None)`` on a hit, ``(None, None)`` if absent, ``(None, why)`` if unusable."""
        arr, why = read_sealed_array(self.path(key), key)
        if arr is None:
            return None, why
        if arr.dtype != np.float32 or not np.isfinite(arr).all():
            return None, f"holds {arr.dtype} values that are not finite float32"
        return arr, None

    def put(self, key: str, arr: NDArray[np.float32]) -> None:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arr, dtype=np.float32), allow_pickle=False)
        atomic_write_bytes(self.path(key), seal(key, buf.getvalue()))

    @property
    def locks(self) -> Path:
        """Where the per-chunk locks of :func:`.chunks.fill_in_chunks` live."""
        return self.directory / "locks"


@dataclass
class TensorDrift:
    """A variant's outputs against the base model's: per image and over the golden set."""

    per_image: dict[str, dict[str, float]]
    summary: dict[str, float]


class TensorEvaluation(CachedRun[dict[str, dict[str, NDArray[np.float32]]]]):
    """One variant's raw outputs on the golden set, computed on first access (then cached)."""

    cache_label = "output cache"

    def __init__(
        self,
        model: Model,
        dataset: Dataset,
        settings: PreprocessSettings,
        backend_id: str,
        load: Callable[[], Predictor],
        cache_dir: Path | None = None,
        note: Note | None = None,
    ) -> None:
        self.model, self.dataset, self.settings = model, dataset, settings
        self.key = parts_digest(model.content_hash, backend_id, settings.cache_key(), CACHE_FORMAT)
        self._load, self._note = load, note
        self.cache = None if cache_dir is None else TensorCache(cache_dir)
        features = Preprocessor(model, settings).tensor_outputs()
        self.output_names = [f.name for f in features]
        self.image_outputs = {f.name for f in features if f.is_image}
        self.kind = settings.output_kind
        self.labels: list[Any] | None = class_labels(model) if self.kind == "classifier" else None
        self._lock = threading.RLock()
        self._outputs: dict[str, dict[str, NDArray[np.float32]]] | None = None
        self._drift: dict[tuple[str, float | None], TensorDrift] = {}
        self._preprocessor: Preprocessor | None = None
        self._predictor: Predictor | None = None
        self.chunk_size = DEFAULT_CHUNK  # images per claimed chunk of the cache (see .chunks)
        self.cache_hits = self.cache_misses = 0

    @property
    def computed(self) -> bool:
        return self._outputs is not None

    def _entry(self, image_hash: str, output: str) -> str:
        return parts_digest(self.key, image_hash, output)

    @property
    def outputs(self) -> dict[str, dict[str, NDArray[np.float32]]]:
        """Output name -> sample id -> float32 array as the model returned it."""
        with self._lock:
            if self._outputs is None:
                self._outputs = self._run()
            return self._outputs

    def _run(self) -> dict[str, dict[str, NDArray[np.float32]]]:
        samples, found = self._gather()
        # In the golden set's order, whichever worker (or earlier run) computed which image.
        return {name: {s.id: found[name][s.id] for s in samples} for name in self.output_names}

    # --- hooks of the cache-and-chunks flow (see .cachedrun) ---------------------------------
    @property
    def _tally(self) -> "TensorEvaluation":
        return self  # counts its cache hits and misses itself

    def _samples(self) -> list[Sample]:
        return list(self.dataset)

    def _cache_setup(self) -> CacheSetup | None:
        cache = self.cache
        return None if cache is None else CacheSetup(self.key, cache.locks, self.chunk_size, self._note)

    def _new_found(self) -> dict[str, dict[str, NDArray[np.float32]]]:
        return {name: {} for name in self.output_names}

    def _complete(self, sample: Sample, found: dict[str, dict[str, NDArray[np.float32]]]) -> bool:
        return all(sample.id in found[name] for name in self.output_names)

    def _read_entries(self, sample: Sample, found: dict[str, dict[str, NDArray[np.float32]]]) -> list[str]:
        assert self.cache is not None
        problems = []
        for name in self.output_names:
            arr, problem = self.cache.lookup(self._entry(sample.image_hash, name))
            if arr is not None:
                found[name][sample.id] = arr
            elif problem is not None:
                problems.append(problem)
        return problems

    def _compute(self, missing: list[Sample], found: dict[str, dict[str, NDArray[np.float32]]]) -> None:
        """Run the model on ``missing``, preparing the next image and storing the previous outputs meanwhile."""
        if not missing:
            return
        if self._preprocessor is None:
            self._preprocessor = Preprocessor(self.model, self.settings)
        pre = self._preprocessor
        if self._predictor is None:
            self._predictor = self._load()
        predictor = self._predictor

        def predict(sample: Sample, inputs: dict[str, Any]) -> dict[str, Any]:
            try:
                return predictor.predict(inputs)
            except NonFiniteOutputError as exc:
                raise exc.for_image(sample.id) from None

        def finish(sample: Sample, raw: dict[str, Any]) -> None:
            for name in self.output_names:
                if name not in raw:
                    raise CoreMLQualityError(
                        f"prediction has no output '{name}' (got {', '.join(map(repr, raw)) or 'none'})", path=self.model.path
                    )
                value = raw[name]
                require_finite(list(value.values()) if isinstance(value, dict) else value, model=self.model, output=name, image=sample.id)
                arr = as_array(value, self.labels)
                found[name][sample.id] = arr
                if self.cache is not None:
                    self.cache.put(self._entry(sample.image_hash, name), arr)

        run_overlapped(missing, lambda sample: pre.prepare(sample.image), predict, finish)
        self.cache_misses += len(missing)

    def drift(self, base: "TensorEvaluation", keypoint_tolerance: float | None = None) -> TensorDrift:
        """This variant's outputs against ``base``'s (memoised); keypoints when a tolerance is given."""
        with self._lock:
            memo = (base.key, keypoint_tolerance)
            if memo not in self._drift:
                self._drift[memo] = self._compare(base, keypoint_tolerance)
            return self._drift[memo]

    def _compare(self, base: "TensorEvaluation", keypoint_tolerance: float | None) -> TensorDrift:
        mine, theirs = self.outputs, base.outputs
        ids = self.dataset.ids
        weights = np.asarray([e.weight for e in self.dataset.entries], dtype=np.float64)
        several = len(self.output_names) > 1
        per_image: dict[str, dict[str, float]] = {sid: {} for sid in ids}
        for name in self.output_names:
            for sid in ids:
                a, b = mine[name][sid], theirs[name][sid]
                if a.shape != b.shape:
                    raise CoreMLQualityError(
                        f"output '{name}' of {self.model.name} for image '{sid}' has shape {list(a.shape)}, "
                        f"the base model's has {list(b.shape)}",
                        path=self.model.path,
                        expected="a variant whose outputs have the base model's shapes",
                    )
                try:
                    row = classifier_values(a, b) if self.kind == "classifier" else tensor_values(
                        a, b, keypoint_tolerance, image=name in self.image_outputs
                    )
                except ValueError as exc:  # heat maps that are not (K, H, W)
                    raise CoreMLQualityError(
                        f"output '{name}' of {self.model.name}: {exc}", path=self.model.path, field="--coreml-output-kind",
                        expected="'tensor' for outputs that are not keypoint heat maps",
                    ) from None
                per_image[sid].update({f"{k}[{name}]" if several else k: v for k, v in row.items()})
        rows = [per_image[sid] for sid in ids]
        summary = drift_summary(rows, weights, self.output_names if several else None)
        if several:  # each image's value is its worst output's, as the set figure is
            for value_name in summary:
                if "[" not in value_name:
                    for row in rows:
                        row[value_name] = worst(value_name, [row[f"{value_name}[{n}]"] for n in self.output_names])
        return TensorDrift(per_image=per_image, summary=summary)


def accuracy(evaluation: TensorEvaluation, truth: dict[str, str]) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """(per-image top-1/top-5 hits, whole-set accuracy) of a classifier against ``truth`` (id -> label)."""
    assert evaluation.labels is not None
    names = [str(label) for label in evaluation.labels]
    probs = evaluation.outputs[evaluation.output_names[0]]
    ids = evaluation.dataset.ids
    per_image = {sid: accuracy_values(probs[sid], names, truth[sid]) for sid in ids}
    weights = np.asarray([e.weight for e in evaluation.dataset.entries], dtype=np.float64)
    return per_image, aggregate([per_image[sid] for sid in ids], weights)


def drift_summary(rows: list[dict[str, float]], weights: NDArray[np.float64], outputs: Sequence[str] | None) -> dict[str, float]:
    """Whole-set drift figures from per-image values (rows in the golden set's order).

    With one output (``outputs`` None) each value aggregates as its figure says. With
    several, the rows hold ``<value>[<output>]``: each output's values aggregate on their
    own (reported as such) and the bare figure is the worst output's, so a bound holds for
    every output. A ``--coreml-merge`` run calls this on the shards' per-image values.
    """
    if outputs is None:
        return aggregate(rows, weights)
    by_output = {
        name: aggregate([{k[: -len(name) - 2]: v for k, v in r.items() if k.endswith(f"[{name}]")} for r in rows], weights)
        for name in outputs
    }
    summary: dict[str, float] = {}
    for value_name in next(iter(by_output.values())):
        summary[value_name] = worst(value_name, [by_output[name][value_name] for name in outputs])
        summary.update({f"{value_name}[{name}]": by_output[name][value_name] for name in outputs})
    return summary


def output_names(row: Mapping[str, float]) -> list[str] | None:
    """The outputs named in a per-image row (``<value>[<output>]``) in order, None for a one-output model."""
    names: dict[str, None] = {}
    for key in row:
        value, bracket, rest = key.partition("[")
        if bracket and rest.endswith("]"):
            names[rest[:-1]] = None
    return list(names) or None


def aggregate(rows: list[dict[str, float]], weights: NDArray[np.float64]) -> dict[str, float]:
    """Whole-set values from per-image ones, by each figure's catalogue aggregation."""
    out: dict[str, float] = {}
    w = weights / weights.sum()
    for name in rows[0]:
        column = np.asarray([r[name] for r in rows], dtype=np.float64)
        figure = catalogue.per_image_value(name)
        rule = "mean" if figure is None else figure.aggregate
        if rule == "max":
            out[name] = float(column.max())
        elif rule == "min":
            out[name] = float(column.min())
        else:
            out[name] = float(np.dot(w, column))
    return out


def worst(value_name: str, values: list[float]) -> float:
    """The worst of several outputs' values, by the figure's direction."""
    return min(values) if catalogue.higher_is_better(value_name) else max(values)
