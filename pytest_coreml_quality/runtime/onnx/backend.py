"""The ``onnx`` backend: Core ML spec -> ONNX graph -> onnxruntime, with an on-disk cache.

The translated, onnxruntime-optimised graph is this backend's "compiled model": it is
cached under ``<cache_dir>/onnx/`` keyed by the model's content hash, the translator
version and the options, written atomically under a build lock, so a warm load only
deserialises it (like Core ML reusing a compiled ``.mlmodelc``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pytest_coreml_quality.cachefs import atomic_output, build_lock, remove_path
from pytest_coreml_quality.errors import CoreMLQualityError, ModelFormatError, UnsupportedModelError
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.base import RuntimeOptions, default_cache_dir
from pytest_coreml_quality.runtime.onnx.builder import GraphBuilder
from pytest_coreml_quality.runtime.onnx.io import from_outputs, to_feeds
from pytest_coreml_quality.runtime.onnx.neuralnetwork import (
    NETWORK_KINDS,
    PIPELINE_KINDS,
    classifier_outputs,
    translate_neuralnetwork,
)

# Bump whenever a translation changes its output: old cache entries then stop matching.
TRANSLATOR_VERSION = "nn1"

Translator = Callable[[Model, GraphBuilder], Any]


def translator_for(model: Model) -> Translator:
    """The translation function for ``model.kind``; a clear error for kinds we cannot run."""
    if model.kind in NETWORK_KINDS or model.kind in PIPELINE_KINDS:
        return translate_neuralnetwork
    if model.kind == "mlProgram":
        try:
            from pytest_coreml_quality.runtime.onnx.mlprogram import translate_mlprogram
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith("mlprogram"):
                raise UnsupportedModelError(
                    "is an ML Program, which this version of the onnx runtime cannot translate yet",
                    path=model.path, field="mlProgram", expected="a NeuralNetwork (.mlmodel) model",
                ) from None
            raise
        return translate_mlprogram
    raise UnsupportedModelError(
        f"is a '{model.kind}' model", path=model.path, field="Type",
        expected="a NeuralNetwork, NeuralNetwork pipeline or ML Program model",
    )


def translator_version(model: Model) -> str:
    """The cache-key version: this backend's, plus the ML Program translator's for ML Programs."""
    if model.kind != "mlProgram":
        return TRANSLATOR_VERSION
    try:
        from pytest_coreml_quality.runtime.onnx.mlprogram import MLPROGRAM_TRANSLATOR_VERSION as mil
    except ImportError:
        mil = 0
    return f"{TRANSLATOR_VERSION}.mil{mil}"


def translate(model: Model, options: RuntimeOptions) -> Any:
    """Translate ``model`` into an ``onnx.ModelProto`` (fp16 rounding after each op if asked)."""
    builder = GraphBuilder(name=_graph_name(model))
    translator_for(model)(model, builder)
    return builder.build(emulate_fp16=options.precision == "fp16", doc=f"translated from {model.name}", release=True)


def _graph_name(model: Model) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in model.path.stem) or "coreml"


class OnnxPredictor:
    """A translated model in an onnxruntime session; ``predict`` mirrors ``MLModel.predict``."""

    backend_name = "onnx"

    def __init__(self, model: Model, session: Any, graph_path: Path, options: RuntimeOptions | None = None) -> None:
        self.model = model
        self.session = session
        self.graph_path = graph_path
        # Part of the prediction cache key: fp16 and fp32 predictions must not share entries.
        self.options = options or RuntimeOptions()
        self._inputs = {i.name: tuple(i.shape) for i in session.get_inputs()}
        self._outputs = [o.name for o in session.get_outputs()]
        self._classifier = classifier_outputs(model.spec)

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        feeds = to_feeds(inputs, self.model, self._inputs)
        try:
            values = self.session.run(self._outputs, feeds)
        except Exception as exc:  # onnxruntime's Fail/InvalidArgument: keep it one readable line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CoreMLQualityError(
                f"prediction failed in onnxruntime ({first})", path=self.model.path,
                expected="inputs matching the model description",
            ) from None
        raw = dict(zip(self._outputs, values))
        out = from_outputs(raw, self.model)
        if self._classifier is not None:
            _, probs_name, label_name, labels = self._classifier
            probs = np.asarray(raw[probs_name], np.float64).reshape(-1)
            if labels and probs.size == len(labels):
                out[probs_name] = dict(zip(labels, probs.tolist()))
                if label_name:
                    out[label_name] = labels[int(np.argmax(probs))]
        return out


class OnnxBackend:
    """Runs Core ML models anywhere by translating them to ONNX (see module docstring)."""

    name = "onnx"

    def __init__(self, intra_op_threads: int | None = None) -> None:
        self.intra_op_threads = intra_op_threads

    def cache_path(self, model: Model, options: RuntimeOptions | None = None) -> Path:
        options = options or RuntimeOptions()
        root = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
        key = f"{model.content_hash[:40]}-{translator_version(model)}-{options.cache_key()}"
        return root / "onnx" / f"{key}.onnx"

    def load(self, model: Model, options: RuntimeOptions | None = None) -> OnnxPredictor:
        options = options or RuntimeOptions()
        path = self.cache_path(model, options)
        if not path.is_file():
            with build_lock(path):
                if not path.is_file():  # another worker may have built it while we waited
                    self._build(model, options, path)
        try:
            session = self._session(path)
        except Exception:
            # A cache entry we cannot read (disk trouble, an onnxruntime upgrade): rebuild once.
            with build_lock(path):
                remove_path(path)
                self._build(model, options, path)
            session = self._session(path)
        return OnnxPredictor(model, session, path, options)

    def evict(self, model: Model, options: RuntimeOptions | None = None) -> None:
        path = self.cache_path(model, options)
        with build_lock(path):
            remove_path(path)

    # --- internals --------------------------------------------------------------------
    def _session_options(self, level: str) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        so.log_severity_level = 3  # warnings about unused initializers are noise here
        if self.intra_op_threads:
            so.intra_op_num_threads = self.intra_op_threads
        return so

    def _session(self, path: Path) -> Any:
        import onnxruntime as ort

        # Layout (NCHWc) optimisations are hardware specific: applied at load, never cached.
        return ort.InferenceSession(str(path), self._session_options("ORT_ENABLE_ALL"),
                                    providers=["CPUExecutionProvider"])

    def _build(self, model: Model, options: RuntimeOptions, path: Path) -> None:
        import onnxruntime as ort

        data = translate(model, options).SerializeToString()  # the proto is freed right away
        with atomic_output(path) as tmp:
            so = self._session_options("ORT_ENABLE_EXTENDED")
            so.optimized_model_filepath = str(tmp)
            try:
                ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
            except Exception as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ModelFormatError(
                    f"its translated graph is rejected by onnxruntime ({first})", path=model.path,
                    expected="layer parameters and shapes that agree with each other",
                ) from None
            del data
            if not tmp.is_file() or os.path.getsize(tmp) == 0:
                raise ModelFormatError("onnxruntime wrote no optimised graph", path=model.path)
