"""Exact, vectorised numpy decompression of the ML Program ``constexpr_*`` weight ops.

Core ML keeps compressed weights as ``constexpr_*`` ops whose inputs are constants; the
runtime materialises them at load time. We do the same at translation time and hand the
dense values to ONNX as initializers. Each function follows the formula of the op's
definition in coremltools (``mil/ops/defs/iOS16/constexpr_ops.py`` and
``iOS18/compression.py``), including the dtype in which each step is computed, so that
the result is bit-for-bit what ``coremltools.optimize.coreml.decompress_weights`` gives.
Unlike coremltools' helpers, lookup tables are indexed per block instead of being
repeated to the full weight shape, so a 4-bit 100 MB weight decompresses in one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# --- iOS16 ops ----------------------------------------------------------------------


def affine_dequantize(quantized_data: np.ndarray, zero_point: np.ndarray, scale: np.ndarray, axis: int) -> np.ndarray:
    """iOS16 ``constexpr_affine_dequantize``: ``scale * (data - zero_point)`` along ``axis``.

    Computed in float32 and rounded once to the scale's dtype, as coremltools does.
    """
    rank = quantized_data.ndim
    zp = _along_axis(np.asarray(zero_point), rank, axis).astype(np.float32)
    sc = _along_axis(np.asarray(scale), rank, axis)
    out = np.subtract(quantized_data, zp, dtype=np.float32)
    out *= sc.astype(np.float32)
    return out.astype(np.asarray(scale).dtype)


def lut_to_dense_ios16(indices: np.ndarray, lut: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """iOS16 ``constexpr_lut_to_dense``: ``nbits``-bit indices packed LSB first into bytes."""
    nbits = int(lut.size).bit_length() - 1
    if lut.size < 2 or lut.size != 1 << nbits or nbits > 8:
        raise ValueError(f"a lookup table of {lut.size} entries is not 2**nbits for nbits in 1..8")
    count = int(np.prod(shape))
    idx = unpack_bits(np.asarray(indices, dtype=np.uint8), nbits, count)
    return lut.reshape(-1)[idx].reshape(tuple(int(d) for d in shape))


def sparse_to_dense_ios16(nonzero_data: np.ndarray, mask: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """iOS16 ``constexpr_sparse_to_dense``: a bitmask (LSB first) marks the non-zero slots."""
    count = int(np.prod(shape))
    bits = np.unpackbits(np.asarray(mask, dtype=np.uint8), bitorder="little")[:count].astype(bool)
    out = np.zeros(count, dtype=nonzero_data.dtype)
    out[bits] = nonzero_data
    return out.reshape(tuple(int(d) for d in shape))


def cast_to_fp32(source_val: np.ndarray, output_dtype: str = "fp32") -> np.ndarray:
    """``constexpr_cast`` (iOS16 and iOS18): only fp16 -> fp32 exists."""
    if str(output_dtype) != "fp32":
        raise ValueError(f"constexpr_cast to {output_dtype!r} is not defined (only fp32)")
    return np.asarray(source_val).astype(np.float32)


def unpack_bits(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """Unpack ``count`` unsigned ``nbits``-bit integers stored LSB first in ``packed`` bytes."""
    need = count * nbits
    if packed.size * 8 < need:
        raise ValueError(f"{packed.size} bytes hold fewer than {count} {nbits}-bit values")
    if 8 % nbits == 0:
        # 1/2/4/8 bits: whole values per byte, so shift and mask the bytes directly.
        shifts = np.arange(0, 8, nbits, dtype=np.uint8)
        values = (packed[:, None] >> shifts) & np.uint8((1 << nbits) - 1)
        return values.reshape(-1)[:count]
    bits = np.unpackbits(packed, bitorder="little")[:need].reshape(count, nbits)
    return np.packbits(bits, axis=1, bitorder="little")[:, 0] if nbits <= 8 else bits @ (1 << np.arange(nbits))


# --- iOS18 ops ----------------------------------------------------------------------


def blockwise_shift_scale(data: np.ndarray, scale: np.ndarray, offset: np.ndarray | None) -> np.ndarray:
    """iOS18 ``constexpr_blockwise_shift_scale``: ``scale * (data - offset)`` per block.

    Each step is computed in the scale's dtype (fp16 or fp32), as the op definition does;
    integer data and offsets are exact in either float type.
    """
    dtype = np.asarray(scale).dtype
    values = data.astype(dtype)
    if offset is not None:
        values = values - _repeat_blocks(np.asarray(offset), data.shape).astype(dtype)
    return _repeat_blocks(np.asarray(scale), data.shape) * values


def lut_to_dense(indices: np.ndarray, lut: np.ndarray, vector_axis: int | None = None) -> np.ndarray:
    """iOS18 ``constexpr_lut_to_dense``: per-block palettes ``lut[*blocks, 2**nbits, vector]``.

    Indexes each element's block palette directly (no repetition of the table).
    """
    indices = np.asarray(indices)
    vector = lut.shape[-1]
    if vector > 1:
        if vector_axis is None:
            raise ValueError("a lut with vector size > 1 needs vector_axis")
        axis = vector_axis % indices.ndim
        idx = np.moveaxis(indices, axis, -1)
        table = np.moveaxis(lut, axis, -3)
    else:
        axis, idx, table = None, indices, lut
    gathered = _gather_blocks(idx, table)  # shape idx.shape + (vector,)
    if axis is None:
        return gathered[..., 0]
    merged = gathered.reshape(*idx.shape[:-1], idx.shape[-1] * vector)
    return np.moveaxis(merged, -1, axis)


def sparse_to_dense(nonzero_data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """iOS18 ``constexpr_sparse_to_dense``: non-zero values fill the set mask slots in C order."""
    out = np.zeros(np.shape(mask), dtype=np.asarray(nonzero_data).dtype)
    out[np.asarray(mask) != 0] = nonzero_data
    return out


def lut_to_sparse(
    indices_mask: np.ndarray, indices_nonzero_data: np.ndarray, lut: np.ndarray, vector_axis: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """iOS18 ``constexpr_lut_to_sparse``: palettized non-zeros -> (mask, non-zero values)."""
    dense = lut_to_dense(sparse_to_dense(indices_nonzero_data, indices_mask), lut, vector_axis)
    mask = np.asarray(indices_mask)
    if vector_axis is not None and lut.shape[-1] > 1:
        mask = np.repeat(mask, lut.shape[-1], axis=vector_axis)
    return mask, dense[mask != 0].reshape(-1)


def sparse_blockwise_shift_scale(
    data_mask: np.ndarray, nonzero_data: np.ndarray, scale: np.ndarray, offset: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """iOS18 ``constexpr_sparse_blockwise_shift_scale``: quantized non-zeros -> (mask, values)."""
    dense = blockwise_shift_scale(sparse_to_dense(nonzero_data, data_mask), scale, offset)
    mask = np.asarray(data_mask)
    return mask, dense[mask != 0].reshape(-1)


# --- dispatch on a MIL op -------------------------------------------------------------

ValueOf = Callable[[Any], "np.ndarray | None"]


def decompress_op(op: Any, value_of: ValueOf) -> tuple[np.ndarray, ...]:
    """Evaluate one ``constexpr_*`` MIL op; ``value_of(var)`` gives each input's dense value.

    Returns one array per op output (the sparse ops have two: mask and non-zero values).
    Raises ``KeyError`` for an op type that is not a weight decompression op.
    """
    fn = _DISPATCH[(op.op_type, _is_ios18(op))]

    def arg(name: str) -> Any:
        var = op.inputs.get(name)
        return None if var is None else value_of(var)

    out = fn(arg)
    return out if isinstance(out, tuple) else (out,)


WEIGHT_OPS = frozenset(
    {
        "constexpr_affine_dequantize",
        "constexpr_lut_to_dense",
        "constexpr_sparse_to_dense",
        "constexpr_cast",
        "constexpr_blockwise_shift_scale",
        "constexpr_lut_to_sparse",
        "constexpr_sparse_blockwise_shift_scale",
    }
)


def _is_ios18(op: Any) -> bool:
    # The iOS16 and iOS18 versions of lut_to_dense / sparse_to_dense share a name but not
    # their inputs: iOS16 carries an explicit ``shape`` and byte-packed indices/mask.
    if op.op_type in ("constexpr_lut_to_dense", "constexpr_sparse_to_dense"):
        return "shape" not in op.inputs
    return op.op_type not in ("constexpr_affine_dequantize", "constexpr_cast")


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(np.asarray(v))


_DISPATCH: dict[tuple[str, bool], Callable[[Callable[[str], Any]], Any]] = {
    ("constexpr_affine_dequantize", False): lambda a: affine_dequantize(
        a("quantized_data"), a("zero_point"), a("scale"), int(a("axis"))
    ),
    ("constexpr_lut_to_dense", False): lambda a: lut_to_dense_ios16(a("indices"), a("lut"), a("shape")),
    ("constexpr_sparse_to_dense", False): lambda a: sparse_to_dense_ios16(a("nonzero_data"), a("mask"), a("shape")),
    ("constexpr_cast", False): lambda a: cast_to_fp32(a("source_val"), a("output_dtype")),
    ("constexpr_blockwise_shift_scale", True): lambda a: blockwise_shift_scale(a("data"), a("scale"), a("offset")),
    ("constexpr_lut_to_dense", True): lambda a: lut_to_dense(a("indices"), a("lut"), _opt_int(a("vector_axis"))),
    ("constexpr_sparse_to_dense", True): lambda a: sparse_to_dense(a("nonzero_data"), a("mask")),
    ("constexpr_lut_to_sparse", True): lambda a: lut_to_sparse(
        a("indices_mask"), a("indices_nonzero_data"), a("lut"), _opt_int(a("vector_axis"))
    ),
    ("constexpr_sparse_blockwise_shift_scale", True): lambda a: sparse_blockwise_shift_scale(
        a("data_mask"), a("nonzero_data"), a("scale"), a("offset")
    ),
}


# --- helpers --------------------------------------------------------------------------


def _along_axis(param: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """Shape a scalar or per-channel vector to broadcast against a rank-``rank`` tensor."""
    if param.ndim == rank:
        return param
    if param.ndim == 0:
        return param.reshape((1,) * rank)
    shape = [1] * rank
    shape[axis % rank] = param.size
    return param.reshape(shape)


def _repeat_blocks(param: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Expand per-block parameters (one per block of each axis) to the full ``shape``."""
    out = param
    for axis, (full, blocks) in enumerate(zip(shape, param.shape)):
        if blocks != full:
            out = np.repeat(out, full // blocks, axis=axis)
    return out


def _gather_blocks(idx: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``out[p] = table[block(p), idx[p], :]`` where ``block(p) = p // block_size`` per axis."""
    rank = idx.ndim
    block_index = []
    for axis in range(rank):
        size = idx.shape[axis] // table.shape[axis]
        ar = np.arange(idx.shape[axis]) // size
        block_index.append(ar.reshape([-1 if a == axis else 1 for a in range(rank)]))
    return table[(*block_index, idx.astype(np.intp))]
