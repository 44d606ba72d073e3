"""Explicit ONNX pads for Core ML's ``same`` padding.

ONNX ``auto_pad=SAME_*`` would express the same thing, but onnxruntime refuses it together
with dilations ("Dilation not supported for AutoPadType::SAME_UPPER") and only says so at
the first prediction; explicit pads work for every kernel, stride and dilation.
"""

from __future__ import annotations

from collections.abc import Sequence


def same_pads(
    sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int], heavy_begin: bool
) -> list[int]:
    """ONNX ``pads`` (all begins, then all ends) giving an output of ``ceil(size / stride)``.

    The total padding of each axis is what the dilated kernel needs to cover that output;
    an odd total puts the extra row/column at the end (Core ML BOTTOM_RIGHT_HEAVY, MIL
    ``same``) or, with ``heavy_begin``, at the start (TOP_LEFT_HEAVY, MIL ``same_lower``).
    """
    begins, ends = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        out = -(-int(size) // int(s))
        total = max(0, (out - 1) * int(s) + (int(k) - 1) * int(d) + 1 - int(size))
        small, big = total // 2, total - total // 2
        begins.append(big if heavy_begin else small)
        ends.append(small if heavy_begin else big)
    return begins + ends
