"""Decode NeuralNetwork ``WeightParams`` into numpy arrays, quantized ones included.

A ``WeightParams`` holds its values in exactly one of: ``floatValue`` (fp32),
``float16Value`` (little-endian fp16 bytes), or ``rawValue`` with ``quantization``
(1..8-bit codes, linear scale/bias per output channel or a lookup table).
Results equal coremltools' own dequantization bit for bit (``quantization_utils``
computes in float64, then the values are stored as float32; so do we), but the bit
unpacking here is vectorised: coremltools' pure-Python loops take minutes on a
4-bit 176 MB model.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import Any

import numpy as np

from pytest_coreml_quality.errors import ModelFormatError, UnsupportedModelError


def unpack_codes(raw: bytes | np.ndarray, count: int, nbits: int) -> np.ndarray:
    """Unpack ``count`` unsigned ``nbits``-bit codes written most significant bit first.

    coremltools writes each code's bits from the highest to the lowest into one
    continuous bit stream, filling each byte from its most significant bit. Every 8
    codes fill exactly ``nbits`` bytes, so we read the stream in groups of ``nbits``
    bytes as one big-endian integer and cut 8 codes out of it with shifts.
    """
    if not 1 <= nbits <= 8:
        raise ValueError(f"nbits must be 1..8, got {nbits}")
    data = np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, (bytes, bytearray, memoryview)) else np.asarray(raw, np.uint8).ravel()
    if nbits == 8:
        return data[:count].copy()
    groups = -(-count // 8)
    need = groups * nbits
    if data.size < need:
        data = np.concatenate([data, np.zeros(need - data.size, np.uint8)])
    block = data[:need].reshape(groups, nbits).astype(np.uint64)
    word = np.zeros(groups, np.uint64)
    for i in range(nbits):  # at most 8 vectorised passes, not one per weight
        word = (word << np.uint64(8)) | block[:, i]
    shifts = np.arange(7, -1, -1, dtype=np.uint64) * np.uint64(nbits)
    mask = np.uint64((1 << nbits) - 1)
    codes = (word[:, None] >> shifts[None, :]) & mask
    return codes.reshape(-1)[:count].astype(np.uint8)


def float_values(wp: Any) -> np.ndarray:
    """``wp.floatValue`` as float32, without iterating the protobuf container in Python.

    Converting a repeated field element by element takes seconds for a 176 MB model.
    ``floatValue`` is field 1, serialized first as one packed run of little-endian
    floats, so we read that run straight out of the message's bytes.
    """
    count = len(wp.floatValue)
    data = wp.SerializeToString()
    if data[:1] == b"\x0a":
        length, pos, shift = 0, 1, 0
        while True:  # varint length of the packed run
            byte = data[pos]
            length |= (byte & 0x7F) << shift
            pos += 1
            shift += 7
            if byte < 0x80:
                break
        if length == 4 * count:
            return np.frombuffer(data, dtype="<f4", count=count, offset=pos)  # read-only view
    return np.asarray(wp.floatValue, dtype=np.float32)  # unusual encoding: the slow, sure way


def weight_array(
    wp: Any,
    shape: Sequence[int],
    *,
    axis: int = 0,
    path: str | PathLike[str] | None = None,
    field: str = "weights",
) -> np.ndarray:
    """Decode ``wp`` into a float32 array of ``shape``.

    ``axis`` is the channel axis that per-channel linear quantization refers to: 0 for
    most layers, 1 for deconvolution weights (``[C_in, C_out / groups, kH, kW]``).
    """
    shape = tuple(int(d) for d in shape)
    n = int(np.prod(shape)) if shape else 1
    if len(wp.floatValue):
        values = float_values(wp)
    elif len(wp.float16Value):
        values = np.frombuffer(wp.float16Value, dtype="<f2").astype(np.float32)
    elif wp.HasField("quantization"):
        values = _dequantize(wp, shape, n, axis, path, field)
    elif len(wp.rawValue):
        # Unquantized raw bytes hold fp32 values (custom layers write them this way).
        values = np.frombuffer(wp.rawValue, dtype="<f4").astype(np.float32)
    else:
        values = np.zeros(0, np.float32)
    if values.size != n:
        raise ModelFormatError(
            f"holds {values.size} values where the layer needs {n}",
            path=path,
            field=field,
            expected=f"{n} values for shape {list(shape)}",
        )
    return values.reshape(shape)


def _dequantize(wp: Any, shape: tuple[int, ...], n: int, axis: int, path: Any, field: str) -> np.ndarray:
    q = wp.quantization
    nbits = int(q.numberOfBits)
    if not 1 <= nbits <= 8:
        raise UnsupportedModelError(f"uses {nbits}-bit quantized weights", path=path, field=field, expected="1 to 8 bits")
    raw = wp.rawValue
    if len(raw) * 8 < n * nbits:
        raise ModelFormatError(
            f"has {len(raw)} bytes of {nbits}-bit codes for {n} weights",
            path=path,
            field=field,
            expected=f"at least {-(-n * nbits // 8)} bytes",
        )
    codes = unpack_codes(raw, n, nbits)
    kind = q.WhichOneof("QuantizationType")
    if kind == "lookupTableQuantization":
        lut = np.asarray(q.lookupTableQuantization.floatValue, dtype=np.float32)
        if lut.size < (1 << nbits) and int(codes.max(initial=0)) >= lut.size:
            raise ModelFormatError(
                f"lookup table has {lut.size} entries", path=path, field=field, expected=f"{1 << nbits} entries"
            )
        return lut[codes]
    if kind == "linearQuantization":
        return _dequantize_linear(codes, q.linearQuantization, shape, axis, path, field)
    raise ModelFormatError("has quantization parameters of no known type", path=path, field=field,
                           expected="linearQuantization or lookupTableQuantization")


def _dequantize_linear(codes: np.ndarray, lin: Any, shape: tuple[int, ...], axis: int, path: Any, field: str) -> np.ndarray:
    # float64 arithmetic, then float32: the exact values coremltools' helper produces.
    scale = np.asarray(lin.scale, dtype=np.float32).astype(np.float64)
    bias = np.asarray(lin.bias, dtype=np.float32).astype(np.float64)
    if scale.size != bias.size:
        raise ModelFormatError(f"has {scale.size} scales but {bias.size} biases", path=path, field=field,
                               expected="as many biases as scales")
    work = codes.reshape(shape if len(shape) > 1 else (1, -1))
    channels = work.shape[axis]
    if scale.size not in (1, channels):
        raise ModelFormatError(f"has {scale.size} quantization scales", path=path, field=field,
                               expected=f"1 or {channels} (one per channel)")
    bshape = [1] * work.ndim
    bshape[axis] = scale.size
    out = work.astype(np.float64) * scale.reshape(bshape) + bias.reshape(bshape)
    return out.astype(np.float32).reshape(-1)
