"""The ``onnx`` backend: Core ML spec -> ONNX graph -> onnxruntime, with an on-disk cache.

The translated, onnxruntime-optimised graph is this backend's "compiled model": it is
cached under ``<cache_dir>/onnx/<key>/`` keyed by the model's content hash, the translator
version and the options, so a warm load only deserialises it (like Core ML reusing a
compiled ``.mlmodelc``). An entry is a directory holding the graph (``model.onnx``) and its
weights as ONNX external data (``weights.bin``): the translated graph is never serialised
into one in-memory buffer, which kept a second copy of every weight during a cold load.
The directory is built in a scratch directory under a build lock and renamed into place in
one step, with a ``digest.json`` over its key and both files (``cachefs.write_entry_digest``):
an entry that is incomplete, damaged, or copied from another key is a miss, rebuilt with a
one-line note.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pytest_coreml_quality.cachefs import (
    ABSENT,
    Note,
    atomic_output,
    build_lock,
    entry_problem,
    remove_path,
    report_repair,
    write_entry_digest,
)
from pytest_coreml_quality.errors import CoreMLQualityError, ModelFormatError, UnsupportedModelError
from pytest_coreml_quality.model import Model, forget_content_hash
from pytest_coreml_quality.runtime.base import RuntimeOptions, default_cache_dir
from pytest_coreml_quality.runtime.onnx.builder import ExternalWeights, GraphBuilder
from pytest_coreml_quality.runtime.onnx.heap import large_blocks_mapped, release_free_memory
from pytest_coreml_quality.runtime.onnx.io import from_outputs, to_feeds
from pytest_coreml_quality.runtime.onnx.neuralnetwork import (
    NETWORK_KINDS,
    PIPELINE_KINDS,
    classifier_outputs,
    translate_neuralnetwork,
)

# Bump whenever a translation changes its output: old cache entries then stop matching.
TRANSLATOR_VERSION = "nn5"  # nn2: entry is a directory (graph + external weights); nn3: + digest; nn4: explicit pads for "same" convs; nn5: layout-friendly Concat axis, Add

GRAPH_FILE = "model.onnx"
WEIGHTS_FILE = "weights.bin"
# Initializers at least this large go to WEIGHTS_FILE; small ones (shapes, scalars) stay inline.
_EXTERNAL_MIN_BYTES = 1024

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


def translate(model: Model, options: RuntimeOptions, weights: Path | None = None) -> Any:
    """Translate ``model`` into an ``onnx.ModelProto`` (fp16 rounding after each op if asked).

    With ``weights`` (a file path) large initializers are streamed there as they are
    translated; the proto refers to them and must be saved into the same directory.
    """
    external = ExternalWeights(weights) if weights is not None else None
    builder = GraphBuilder(name=_graph_name(model), external=external)
    try:
        translator_for(model)(model, builder)
        return builder.build(emulate_fp16=options.precision == "fp16", doc=f"translated from {model.name}", release=True)
    finally:
        if external is not None:
            external.close()  # also when the translation fails


def _graph_name(model: Model) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in model.path.stem) or "coreml"


ENTRY_FILES = (GRAPH_FILE, WEIGHTS_FILE)


def _problem(entry: Path) -> str | None:
    """None for a usable entry (both files, digest bound to this entry's key), else why not."""
    return entry_problem(entry, entry.name, required=ENTRY_FILES)


_ORT_LOG_SEVERITY = 4  # FATAL only (see _session_options)
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
               "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(int8)": np.int8,
               "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}
# "... while running Conv node. Name:'conv1_nchwc' Status Message: Dilation not supported ..."
_ORT_NODE_ERROR = re.compile(r"running (\w+) node\. Name:'([^']*)' Status Message: (.*)", re.S)


def probe(model: Model, session: Any) -> None:
    """Run one prediction on zeros so a graph onnxruntime cannot execute fails at load.

    Some attribute combinations pass session creation and are refused only by the kernel
    at run time; a cold build pays this one cheap run so the user learns it when the model
    loads, with the node that failed, not at the first image of the golden set.
    """
    feeds = {}
    for i in session.get_inputs():
        shape = probe_shape(model, i.name, list(i.shape))
        if shape is None:
            return  # a size known only at run time and no default to try: the first image will tell
        feeds[i.name] = np.zeros(shape, _ORT_DTYPES.get(i.type, np.float32))
    try:
        session.run(None, feeds)
    except Exception as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        found = _ORT_NODE_ERROR.search(text)
        if not found:
            raise UnsupportedModelError(f"onnxruntime cannot run its translated graph ({text})", path=model.path,
                                        expected="layers and ops onnxruntime can execute") from None
        op, node, why = found.groups()
        # onnxruntime renames nodes it rewrites (layout, fusion); the translator names them after the layer/op.
        node = re.sub(r"(_nchwc|_token_\d+)+$", "", node)
        raise UnsupportedModelError(
            f"onnxruntime cannot run it: {why.strip()}", path=model.path, field=f"layer/op '{node}' ({op})",
            expected="a combination onnxruntime supports; the coreml backend on macOS runs it natively",
        ) from None


def probe_shape(model: Model, name: str, dims: list[Any]) -> list[int] | None:
    """The graph input's shape, its flexible dims taken from the feature's default size."""
    if all(isinstance(d, int) and d > 0 for d in dims):
        return [int(d) for d in dims]
    feature = next((f for f in model.inputs if f.name == name), None)
    shape: list[int] = []
    if feature is not None and feature.is_image and feature.width and feature.height:
        shape = [1, feature.channels or 3, int(feature.height), int(feature.width)]
    elif feature is not None and feature.is_multiarray:
        shape = [int(d) for d in feature.shape]
    return shape if shape and len(shape) == len(dims) else None


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
        # True between building a new cache entry and probing it (OnnxBackend.finish_load).
        self.probe_pending = False

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

    def __init__(self, intra_op_threads: int | None = None, note: Note | None = None) -> None:
        self.intra_op_threads = intra_op_threads
        # Told (one line) when a damaged cache entry is rebuilt; None: a CacheRepairWarning.
        self.note = note

    def cache_path(self, model: Model, options: RuntimeOptions | None = None) -> Path:
        options = options or RuntimeOptions()
        root = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
        key = f"{model.content_hash[:40]}-{translator_version(model)}-{options.cache_key()}"
        return root / "onnx" / key

    def load(self, model: Model, options: RuntimeOptions | None = None) -> OnnxPredictor:
        """Load ``model``: the cached optimised graph when there is one, else translate and
        optimise it first (and probe the new entry, see :func:`probe`)."""
        predictor = self._load(model, options or RuntimeOptions())
        self.finish_load(predictor)
        return predictor

    def load_cold(self, model: Model, options: RuntimeOptions | None = None) -> OnnxPredictor:
        """A cold load as timed: from the model file to a ready session, nothing reused.

        Reads and parses ``model.path`` again into a new :class:`Model` (of ``model`` only its
        path is used), hashes its bytes for the cache key, translates, optimises, writes the
        cache entry (the caller evicted it) and creates the session. The zero-input probe of
        the new entry is not part of it: it is one prediction, not loading; the caller runs
        it with :meth:`finish_load` once the clock is stopped, before anything else may use
        the entry.
        """
        forget_content_hash(model.path)
        return self._load(Model.open(model.path), options or RuntimeOptions())

    def finish_load(self, predictor: OnnxPredictor) -> None:
        """Probe the session of a freshly built entry (once); a graph onnxruntime cannot run
        raises :class:`UnsupportedModelError` and its entry is removed, so no warm load trusts it."""
        if not predictor.probe_pending:
            return
        predictor.probe_pending = False
        try:
            probe(predictor.model, predictor.session)
        except UnsupportedModelError:
            with build_lock(predictor.graph_path.parent):
                remove_path(predictor.graph_path.parent)
            raise

    def _load(self, model: Model, options: RuntimeOptions) -> OnnxPredictor:
        """The session of the cached entry, building the entry first when it is unusable;
        the predictor's ``probe_pending`` says whether the entry was just built."""
        entry = self.cache_path(model, options)
        built = False
        if _problem(entry) is not None:
            with build_lock(entry):
                # Checked again under the lock: another worker may have built it while we waited.
                built = self._rebuild_if_unusable(model, options, entry)
        graph = entry / GRAPH_FILE
        try:
            session = self._session(graph, cold=built)
        except Exception:
            # An entry that vanished (a concurrent cache clear) or that onnxruntime cannot read
            # (an onnxruntime upgrade): rebuild once.
            with build_lock(entry):
                if _problem(entry) is None:
                    self._repaired(model, entry, "onnxruntime cannot load it")
                self._build(model, options, entry)
            session, built = self._session(graph, cold=True), True
        predictor = OnnxPredictor(model, session, graph, options)
        predictor.probe_pending = built
        return predictor

    def _rebuild_if_unusable(self, model: Model, options: RuntimeOptions, entry: Path) -> bool:
        """Build the entry when it is absent or damaged; True when it was built."""
        problem = _problem(entry)
        if problem is None:
            return False
        if problem != ABSENT:
            self._repaired(model, entry, problem)
        self._build(model, options, entry)
        return True

    def _repaired(self, model: Model, entry: Path, problem: str) -> None:
        report_repair(self.note, f"compiled cache entry of {model.name} ({entry.name}) ignored and rebuilt: {problem}")

    def evict(self, model: Model, options: RuntimeOptions | None = None) -> None:
        path = self.cache_path(model, options)
        with build_lock(path):
            remove_path(path)

    # --- internals --------------------------------------------------------------------
    def _session_options(self, level: str) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        # No raw onnxruntime log lines in the user's output: at ERROR (3) a kernel failure
        # is still printed before it is raised, and every error is raised and reworded here
        # anyway, so only FATAL (4) is left to onnxruntime's logger.
        ort.set_default_logger_severity(_ORT_LOG_SEVERITY)
        so.log_severity_level = _ORT_LOG_SEVERITY
        if self.intra_op_threads:
            so.intra_op_num_threads = self.intra_op_threads
        return so

    def _session(self, path: Path, cold: bool = False) -> Any:
        import onnxruntime as ort

        # Layout (NCHWc) optimisations are hardware specific: applied at load, never cached.
        # Their reordered copies of the weights are made and freed here. On a cold load large
        # blocks are mapped meanwhile (heap.py: ISNet's session peak 279 -> 194 MiB, ~0.3 s
        # more page faults); a warm load keeps malloc's faster reuse of freed memory.
        with large_blocks_mapped() if cold else contextlib.nullcontext():
            return ort.InferenceSession(str(path), self._session_options("ORT_ENABLE_ALL"),
                                        providers=["CPUExecutionProvider"])

    def _build(self, model: Model, options: RuntimeOptions, entry: Path) -> None:
        """Translate, optimise and write the entry directory; the caller holds the build lock.

        Memory: the translated proto is written to a scratch file with its weights as
        external data (one tensor at a time, each proto tensor's bytes dropped once written)
        and freed before onnxruntime reads it back, so no complete serialised copy of the
        graph ever exists in memory; onnxruntime streams the optimised weights to
        ``weights.bin`` itself.
        """
        import onnx
        import onnxruntime as ort

        remove_path(entry)  # a half-present or unreadable entry: start from nothing
        with atomic_output(entry) as tmp:
            tmp.mkdir()
            # The unoptimised graph lives in the scratch directory, removed with it.
            source = tmp.parent / "translated.onnx"
            # An ML Program's weights go to the scratch weights file as they are translated (never
            # all in memory). A NeuralNetwork's already are, in its spec: streaming them did not
            # lower the peak (benchmarks/bench_mlprogram.py --nn), so they stay in the proto.
            if model.kind == "mlProgram":
                proto = translate(model, options, weights=tmp.parent / "translated.weights")
            else:
                proto = translate(model, options)
            onnx.save_model(proto, str(source), save_as_external_data=True, all_tensors_to_one_file=True,
                            location="translated.weights", size_threshold=_EXTERNAL_MIN_BYTES)
            del proto
            so = self._session_options("ORT_ENABLE_EXTENDED")
            so.optimized_model_filepath = str(tmp / GRAPH_FILE)
            so.add_session_config_entry("session.optimized_model_external_initializers_file_name", WEIGHTS_FILE)
            so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                        str(_EXTERNAL_MIN_BYTES))
            try:
                ort.InferenceSession(str(source), so, providers=["CPUExecutionProvider"])
            except Exception as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ModelFormatError(
                    f"its translated graph is rejected by onnxruntime ({first})", path=model.path,
                    expected="layer parameters and shapes that agree with each other",
                ) from None
            graph = tmp / GRAPH_FILE
            if not graph.is_file() or os.path.getsize(graph) == 0:
                raise ModelFormatError("onnxruntime wrote no optimised graph", path=model.path)
            # A graph with only small initializers has no weights: an empty file keeps the
            # "both files present" completeness rule uniform.
            (tmp / WEIGHTS_FILE).touch(exist_ok=True)
            write_entry_digest(tmp, entry.name, ENTRY_FILES)
        # The translation's and the optimising session's freed buffers would otherwise stay
        # resident under the session the caller creates next (ISNet: 37 -> 16 MiB left).
        release_free_memory()
