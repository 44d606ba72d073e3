"""A fast ``quantize_weights`` for NeuralNetwork specs, byte-identical to coremltools' output.

``quantization_utils.quantize_weights(model, nbits<8)`` spends almost all of its time in
``_convert_array_to_nbit_quantized_bytes``, which packs the quantized weights one bit
per Python operation (about 94 s for the 176 MB ISNet at 4 bits). This module walks the
spec the same way, reuses coremltools' own numeric helpers for the quantization itself
(so scales, biases, lookup tables and indices are computed by the very same code), and
replaces only the bit packing with vectorised numpy shifts (:func:`pack_bits`). The one
exception is ``kmeans_lut``: its tables come from :mod:`.kmeans1d`, a fast exact 1-D k-means,
instead of coremltools' scikit-learn clustering (which coremltools 9 cannot store anyway).
:func:`quantize_file` serializes deterministically, so its bytes equal coremltools' up to
the order of map entries (which coremltools' own saves do not keep from one process to the next).

Anything it does not cover (recurrent layers, control flow, classifier/regressor
pipelines, custom lookup-table functions, a coremltools version without these helpers)
raises :class:`NotCovered`, and the caller falls back to ``quantize_weights`` itself.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pytest_coreml_quality.model import content_hash
from pytest_coreml_quality.variants.kmeans1d import DistinctMemo, kmeans_1d
from pytest_coreml_quality.variants.nn_fusion import optimize_nn
from pytest_coreml_quality.variants.reproducible import save_spec

WeightField = tuple[Any, tuple[int, ...], int]  # (WeightParams message, shape, axis)

COVERED_MODES = ("linear", "linear_symmetric", "kmeans_lut", "linear_lut")
_NN_KINDS = ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor")
# Layer types coremltools' default QuantizedLayerSelector quantizes that this walk does not cover.
_UNCOVERED_LAYERS = frozenset({"simpleRecurrent", "gru", "uniDirectionalLSTM", "biDirectionalLSTM", "loop", "branch", "depthwiseConv"})
_PACK_CHUNK = 1 << 23  # values per packing chunk: a multiple of 8, so chunks end on byte boundaries


class NotCovered(Exception):
    """The fast path does not handle this spec or mode; use ``quantize_weights`` instead."""


def pack_bits(values: np.ndarray, nbits: int) -> bytes:
    """Pack ``nbits``-bit unsigned values MSB-first into bytes, zero-padded at the end.

    Equivalent to coremltools' ``_convert_array_to_nbit_quantized_bytes``. Eight values
    of ``nbits`` bits fill exactly ``nbits`` bytes, so each group of eight is assembled in
    one 64-bit integer whose low ``nbits`` bytes, big-endian, are the packed bytes.
    """
    flat = np.ascontiguousarray(values, dtype=np.uint8).ravel()
    if nbits == 8:
        return flat.tobytes()
    mask = np.uint8((1 << nbits) - 1)  # coremltools keeps only the low nbits of each value
    out_len = -(-flat.size * nbits // 8)
    parts = []
    if 8 % nbits == 0:  # 1, 2, 4 bits: whole values per byte, cheaper in uint8
        per_byte = 8 // nbits
        padded8 = np.zeros(-(-flat.size // per_byte) * per_byte, dtype=np.uint8)
        padded8[: flat.size] = flat & mask
        columns = padded8.reshape(-1, per_byte)
        packed8 = np.zeros(columns.shape[0], dtype=np.uint8)
        for i in range(per_byte):
            packed8 |= columns[:, i] << np.uint8(nbits * (per_byte - 1 - i))
        return packed8.tobytes()
    for start in range(0, flat.size, _PACK_CHUNK):
        chunk = flat[start : start + _PACK_CHUNK] & mask
        padded = np.zeros(-(-chunk.size // 8) * 8, dtype=np.uint64)
        padded[: chunk.size] = chunk
        groups = padded.reshape(-1, 8)
        word = np.zeros(groups.shape[0], dtype=np.uint64)
        for i in range(8):
            word |= groups[:, i] << np.uint64(nbits * (7 - i))
        packed = word.astype(">u8").view(np.uint8).reshape(-1, 8)[:, 8 - nbits :]
        parts.append(packed.tobytes())
    return b"".join(parts)[:out_len]


def quantize_file(source: Path, target: Path, nbits: int, mode: str, memo: DistinctMemo | None = None) -> None:
    """Quantize the ``.mlmodel`` at ``source`` into ``target``, with the bytes
    ``quantize_weights(MLModel(source), nbits, mode).save(target)`` writes, map entries aside.

    coremltools serializes map entries (``description.metadata.userDefined``) in
    hash-table order, which changes from process to process; this file is serialized
    deterministically (entries sorted by key, see :mod:`.reproducible`), so it is the same
    in every process and equal to coremltools' bytes whenever no map has two entries.
    ``memo`` shares the k-means sorts of this file's tensors with other bit widths.
    """
    import coremltools as ct

    spec = ct.utils.load_spec(str(source))
    # The fused weights are a function of the file's bytes, so (file hash, position) names them.
    quantize_spec(spec, nbits, mode, memo=memo, memo_key=content_hash(source) if memo is not None else None)
    save_spec(spec, target)


def quantize_spec(
    spec: Any, nbits: int, mode: str, *, memo: DistinctMemo | None = None, memo_key: Hashable = None
) -> Any:
    """Quantize ``spec`` in place exactly as ``quantize_weights(model, nbits, mode)`` would.

    ``nbits`` is 1 to 8. Raises :class:`NotCovered` when the walk does not cover the spec;
    the spec may then be partly modified, so the caller falls back on a fresh copy.
    ``memo`` and ``memo_key`` (a name for this spec's content, e.g. its file's hash) let
    ``kmeans_lut`` reuse the sorts of earlier calls on the same content (:class:`DistinctMemo`).
    """
    helpers = _coremltools_helpers()
    if mode not in COVERED_MODES or not 1 <= nbits <= 8:
        raise NotCovered(f"mode {mode!r} at {nbits} bits")
    if mode == "linear_symmetric" and nbits != 8:
        raise NotCovered("coremltools rejects linear_symmetric below 8 bits")
    networks = _covered_networks(spec)
    qm = helpers["modes"][mode]
    for model_spec in _model_specs(spec):
        model_spec.specificationVersion = max(helpers["min_spec_version"], model_spec.specificationVersion)
    keep = {o.name for o in spec.description.output}
    position = 0
    for net in networks:
        optimize_nn(net.layers, keep)  # fuses layers first, as quantize_weights does (see nn_fusion)
        for layer in net.layers:
            for wp, shape, axis in _weight_fields(layer):
                key = None if memo is None or memo_key is None else (memo_key, position)
                _quantize_field(wp, shape, axis, nbits, qm, helpers, memo, key)
                position += 1
    return spec


def fp16_file(source: Path, target: Path) -> None:
    """Write ``quantize_weights(MLModel(source), nbits=16)``'s model at ``target`` (map entries sorted).

    coremltools converts each float32 weight with a Python-level walk, then its save and
    our reproducible rewrite parse and serialize the whole model twice more (about 2 s of
    the 176 MB ISNet); this converts each tensor in one numpy call and serializes once.
    """
    import coremltools as ct

    spec = ct.utils.load_spec(str(source))
    fp16_spec(spec)
    save_spec(spec, target)


def fp16_spec(spec: Any) -> Any:
    """Convert ``spec``'s float32 weights to float16 in place, as ``quantize_weights(nbits=16)`` does.

    No layer fusion at 16 bits (coremltools fuses only below). Raises :class:`NotCovered`
    where coremltools would behave otherwise (updatable models, weights beyond float16's
    range: coremltools raises its own error for both) or where the walk does not cover the spec.
    """
    try:
        from coremltools import _MINIMUM_FP16_SPEC_VERSION
    except ImportError as exc:
        raise NotCovered(f"coremltools internals unavailable ({exc})") from None
    if spec.isUpdatable:
        raise NotCovered("updatable model")
    networks = _covered_networks(spec)
    for model_spec in _model_specs(spec):
        model_spec.specificationVersion = max(_MINIMUM_FP16_SPEC_VERSION, model_spec.specificationVersion)
    for net in networks:
        for layer in net.layers:
            for wp, _, _ in _weight_fields(layer):
                if len(wp.floatValue) == 0:  # already fp16 or quantized: coremltools leaves it alone
                    continue
                # float32 -> float16 rounds as coremltools' float64 -> float16 does: float64 holds float32 exactly.
                values = np.array(wp.floatValue, dtype=np.float32)
                if values.max() >= 65504 or values.min() <= -65504:
                    raise NotCovered("weights beyond float16's range")
                wp.float16Value = values.astype("<f2").tobytes()
                del wp.floatValue[:]
    return spec


def _covered_networks(spec: Any) -> list[Any]:
    networks = list(_networks(spec))
    for net in networks:
        for layer in net.layers:
            if layer.WhichOneof("layer") in _UNCOVERED_LAYERS:
                raise NotCovered(f"layer type {layer.WhichOneof('layer')}")
    return networks


def _coremltools_helpers() -> dict[str, Any]:
    try:
        import coremltools as ct
        from coremltools import _MINIMUM_QUANTIZED_MODEL_SPEC_VERSION
        from coremltools.models.neural_network import quantization_utils as qu
        from coremltools.models.neural_network import optimization_utils

        modes = {
            "linear": ct.models._QUANTIZATION_MODE_LINEAR_QUANTIZATION,
            "linear_symmetric": ct.models._QUANTIZATION_MODE_LINEAR_SYMMETRIC,
            "kmeans_lut": ct.models._QUANTIZATION_MODE_LOOKUP_TABLE_KMEANS,
            "linear_lut": ct.models._QUANTIZATION_MODE_LOOKUP_TABLE_LINEAR,
        }
        return {
            "modes": modes,
            "linear_modes": (modes["linear"], modes["linear_symmetric"]),
            "quantize_wp": qu._quantize_wp,
            # nn_fusion calls these three; looked up here so their absence means NotCovered.
            "fusions": (optimization_utils._fuse_layer_with_scale_layer, optimization_utils._fuse_layer_with_bias_layer,
                        optimization_utils._bn_scale_fusion),
            "min_spec_version": _MINIMUM_QUANTIZED_MODEL_SPEC_VERSION,
        }
    except (ImportError, AttributeError) as exc:  # a coremltools without these internals
        raise NotCovered(f"coremltools internals unavailable ({exc})") from None


def _model_specs(spec: Any) -> Iterator[Any]:
    kind = spec.WhichOneof("Type")
    if kind in _NN_KINDS:
        yield spec
    elif kind == "pipeline":
        for sub in spec.pipeline.models:
            yield from _model_specs(sub)
    elif kind in ("pipelineClassifier", "pipelineRegressor"):
        raise NotCovered(kind)


def _networks(spec: Any) -> Iterator[Any]:
    for model_spec in _model_specs(spec):
        yield getattr(model_spec, model_spec.WhichOneof("Type"))


def _quantize_field(
    wp: Any, shape: tuple[int, ...], axis: int, nbits: int, qm: str, helpers: dict[str, Any],
    memo: DistinctMemo | None = None, key: Hashable = None,
) -> None:
    if len(wp.floatValue) == 0:  # already fp16 or quantized: coremltools leaves it alone
        return
    linear = qm in helpers["linear_modes"]
    channels = shape[axis] if linear else 1
    if len(wp.floatValue) % channels:
        raise NotCovered("weight count not divisible by channel count")
    weights = np.array(wp.floatValue).reshape(shape)  # float64, as coremltools computes
    if qm == helpers["modes"]["kmeans_lut"]:
        scale, bias, lut, indices = None, None, *_kmeans_table(weights, nbits, memo, key)
    else:
        scale, bias, lut, indices = helpers["quantize_wp"](weights, nbits, qm, axis)
    q = wp.quantization
    q.numberOfBits = nbits
    if linear:
        q.linearQuantization.scale.extend(scale)
        q.linearQuantization.bias.extend(bias)
    else:
        q.lookupTableQuantization.floatValue.extend(np.asarray(lut).reshape(-1))
    wp.rawValue = pack_bits(indices, nbits)
    del wp.floatValue[:]


def _kmeans_table(
    weights: np.ndarray, nbits: int, memo: DistinctMemo | None = None, key: Hashable = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``2**nbits`` lookup table (unused entries 0, as coremltools pads) and the indices.

    coremltools clusters with scikit-learn's ``KMeans`` (tens of seconds per model at 8 bits)
    and its quantize_weights then fails to store the (2**nbits, 1) table it gets (TypeError in
    coremltools 9); :func:`kmeans_1d` is exact 1-D Lloyd on sorted values, deterministic, and
    at least as close on the weights (tests/variants/test_kmeans1d.py).
    """
    centres, labels = kmeans_1d(weights, 1 << nbits, memo=memo, key=key)
    lut = np.zeros(1 << nbits)
    lut[: centres.size] = centres
    return lut, labels.astype(np.uint8)


# --- which WeightParams each layer type has, with the shape/axis coremltools quantizes them at ---


def _weights_and_bias(params: Any, shape: tuple[int, ...], bias_size: int, axis: int = 0) -> list[WeightField]:
    """A layer's ``weights`` at ``shape`` and, when it has one, its ``bias`` of ``bias_size`` values."""
    fields: list[WeightField] = [(params.weights, shape, axis)]
    if params.hasBias:
        fields.append((params.bias, (bias_size,), 0))
    return fields


def _conv(layer: Any) -> list[WeightField]:
    c = layer.convolution
    kh, kw = c.kernelSize[0], c.kernelSize[1]
    if c.isDeconvolution:
        return _weights_and_bias(c, (c.kernelChannels, int(c.outputChannels / c.nGroups), kh, kw), c.outputChannels, axis=1)
    return _weights_and_bias(c, (c.outputChannels, c.kernelChannels, kh, kw), c.outputChannels)


def _inner_product(layer: Any) -> list[WeightField]:
    p = layer.innerProduct
    return _weights_and_bias(p, (p.outputChannels, p.inputChannels), p.outputChannels)


def _batchnorm(layer: Any) -> list[WeightField]:
    b = layer.batchnorm
    return [(getattr(b, name), (b.channels,), 0) for name in ("gamma", "beta", "mean", "variance")]


def _batched_matmul(layer: Any) -> list[WeightField]:
    m = layer.batchedMatmul
    x1, x2 = m.weightMatrixFirstDimension, m.weightMatrixSecondDimension
    return _weights_and_bias(m, (x2, x1), x2)


def _embedding(layer: Any) -> list[WeightField]:
    e = layer.embedding
    return _weights_and_bias(e, (e.outputChannels, e.inputDim), e.outputChannels)


def _embedding_nd(layer: Any) -> list[WeightField]:
    e = layer.embeddingND
    return _weights_and_bias(e, (e.embeddingSize, e.vocabSize), e.embeddingSize)


def _scale(layer: Any) -> list[WeightField]:
    s = layer.scale
    fields: list[WeightField] = [(s.scale, (int(np.prod(s.shapeScale)),), 0)]
    if s.hasBias:
        fields.append((s.bias, (int(np.prod(s.shapeBias)),), 0))
    return fields


def _flat(message: str, weights: str) -> Callable[[Any], list[WeightField]]:
    def fields(layer: Any) -> list[WeightField]:
        m = getattr(layer, message)
        return [(getattr(m, weights), (int(np.prod(m.shape)),), 0)]

    return fields


_LAYER_FIELDS: dict[str, Callable[[Any], list[WeightField]]] = {
    "convolution": _conv,
    "innerProduct": _inner_product,
    "batchnorm": _batchnorm,
    "batchedMatmul": _batched_matmul,
    "embedding": _embedding,
    "embeddingND": _embedding_nd,
    "scale": _scale,
    "bias": _flat("bias", "bias"),
    "loadConstant": _flat("loadConstant", "data"),
    "loadConstantND": _flat("loadConstantND", "data"),
}


def _weight_fields(layer: Any) -> list[WeightField]:
    handler = _LAYER_FIELDS.get(layer.WhichOneof("layer") or "")
    return handler(layer) if handler else []
