"""Dequantize NeuralNetwork weights stored with more bits than a recipe asks for.

``quantize_weights`` compresses only float32 weights: ``q4`` of a model already 8-bit
(LUT or linear) or fp16 would return it unchanged. Before such a recipe, the weights that
are stored with more bits than the recipe's are expanded back to float32 (LUT lookup, or
``index * scale + bias`` per channel, or fp16 widening), so the recipe then quantizes them
like any float weight. Weights stored with as many bits or fewer are left alone (re-quantizing
8-bit to 8-bit would only add error). Both build paths (fast and coremltools) start from the
dequantized spec, so they still agree byte for byte.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np

from pytest_coreml_quality.variants import nn_fast_quantize
from pytest_coreml_quality.variants.unchanged import _nn_encoding


def unpack_bits(raw: bytes, nbits: int, count: int) -> np.ndarray:
    """The first ``count`` ``nbits``-bit unsigned values packed MSB-first in ``raw`` (inverse of ``pack_bits``)."""
    data = np.frombuffer(raw, dtype=np.uint8)
    if nbits == 8:
        return data[:count].astype(np.int64)
    bits = np.unpackbits(data)[: count * nbits].reshape(count, nbits).astype(np.int64)
    weights = 1 << np.arange(nbits - 1, -1, -1, dtype=np.int64)
    return bits @ weights


def stored_bits(wp: Any) -> int | None:
    """Bits per weight of a ``WeightParams``: 32 for float32, 16 for fp16, n for n-bit quantized; None if empty."""
    if len(wp.floatValue):
        return 32
    if len(wp.float16Value):
        return 16
    if len(wp.rawValue) and wp.quantization.WhichOneof("QuantizationType"):
        return int(wp.quantization.numberOfBits or 8)
    return None


def dequantize_weights(wp: Any, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """The float weights of an fp16 or quantized (``rawValue``) ``WeightParams``, shaped ``shape``.

    coremltools' own ``_dequantize_wp`` is not used: it cannot read per-channel scales of a
    1-D weight nor one lookup table per channel, both valid in the spec.
    """
    count = int(np.prod(shape))
    if len(wp.float16Value):
        return np.frombuffer(wp.float16Value, dtype="<f2")[:count].astype(np.float32).reshape(shape)
    q = wp.quantization
    nbits = int(q.numberOfBits or 8)
    indices = unpack_bits(wp.rawValue, nbits, count).reshape(shape)
    moved = np.moveaxis(indices, axis, 0)  # channel first, so per-channel tables broadcast
    channels = moved.shape[0]
    if q.WhichOneof("QuantizationType") == "lookupTableQuantization":
        table = np.asarray(q.lookupTableQuantization.floatValue, dtype=np.float64)
        levels = 1 << nbits
        if len(table) == levels:
            values = table[moved]
        elif len(table) == channels * levels:  # one table per channel
            values = np.take_along_axis(table.reshape(channels, levels), moved.reshape(channels, -1), axis=1).reshape(moved.shape)
        else:
            raise nn_fast_quantize.NotCovered(f"lookup table of {len(table)} entries for {channels} channels of {nbits} bits")
    else:
        lin = q.linearQuantization
        scale, bias = np.asarray(lin.scale, dtype=np.float64), np.asarray(lin.bias, dtype=np.float64)
        if len(scale) not in (1, channels) or len(bias) not in (0, 1, channels):
            raise nn_fast_quantize.NotCovered(f"{len(scale)} scales for {channels} channels")
        column = (-1,) + (1,) * (moved.ndim - 1)
        values = moved * scale.reshape(column) + (bias.reshape(column) if len(bias) else 0.0)
    return np.moveaxis(values, 0, axis).astype(np.float32)


def fields_above(spec: Any, nbits: int) -> Iterator[tuple[Any, tuple[int, ...], int]]:
    """(WeightParams, shape, axis) of every weight of ``spec`` stored as fp16 or quantized above ``nbits`` bits."""
    for net in nn_fast_quantize._networks(spec):
        for layer in net.layers:
            for wp, shape, axis in nn_fast_quantize._weight_fields(layer):
                bits = stored_bits(wp)
                if bits is not None and nbits < bits < 32:
                    yield wp, shape, axis


def dequantize_above(spec: Any, nbits: int) -> dict[str, int]:
    """Expand to float32, in place, every weight of ``spec`` stored with more than ``nbits`` bits.

    Returns the parameters expanded per former encoding (e.g. ``{'8-bit (LUT)': 18432}``);
    empty when nothing was. Raises ``NotCovered`` (spec unchanged) for layouts it cannot read.
    """
    # Every weight is read before any is changed, so NotCovered leaves the spec as it was.
    planned = [(wp, dequantize_weights(wp, shape, axis)) for wp, shape, axis in fields_above(spec, nbits)]
    expanded: Counter[str] = Counter()
    for wp, values in planned:
        label, count = _nn_encoding(wp)
        expanded[label] += count
        wp.Clear()
        wp.floatValue.extend(values.ravel().tolist())
    return dict(expanded)
