"""The ``pooling`` layer: max / average / L2, global, valid / same / includeLastPixel padding."""

from __future__ import annotations

from typing import Any

from pytest_coreml_quality.runtime.onnx.nn_layers import nn_layer
from pytest_coreml_quality.runtime.onnx.nn_layers.context import LayerContext
from pytest_coreml_quality.runtime.onnx.nn_layers.conv import as_rank4, border, pair, restore_rank

_GLOBAL = {"MAX": "GlobalMaxPool", "AVERAGE": "GlobalAveragePool", "L2": "GlobalLpPool"}


@nn_layer("pooling")
def pooling(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    p = layer.pooling
    kind = p.PoolingType.Name(p.type)
    x, lead = as_rank4(ctx, inputs[0])
    if p.globalPooling:
        attrs = {"p": 2} if kind == "L2" else {}
        return restore_rank(ctx, ctx.node(_GLOBAL[kind], [x], **attrs), lead)
    kh, kw = pair(p.kernelSize, 3)
    sh, sw = pair(p.stride, 1)
    attrs: dict[str, Any] = {"kernel_shape": [kh, kw], "strides": [sh, sw]}
    which = p.WhichOneof("PoolingPaddingType")
    if which == "same":
        _, _, h, w = ctx.shape(x)
        pads = []
        for size, k, s in ((h, kh, sh), (w, kw, sw)):
            out = -(-size // s)
            total = max(0, (out - 1) * s + k - size)
            small = total // 2
            pads.append((total - small, small) if p.same.asymmetryMode == 1 else (small, total - small))
        attrs["pads"] = [pads[0][0], pads[1][0], pads[0][1], pads[1][1]]
    elif which == "includeLastPixel":
        ph, pw = pair(p.includeLastPixel.paddingAmounts, 0)
        attrs["pads"] = [ph, pw, ph, pw]
        # Core ML rounds the output size up and drops a last window that would start in
        # the padding: ONNX ceil_mode follows the same rule.
        attrs["ceil_mode"] = 1
    else:
        t, left, b, r = border(p.valid.paddingAmounts)
        attrs["pads"] = [t, left, b, r]
    if kind == "MAX":
        y = ctx.node("MaxPool", [x], **attrs)
    elif kind == "AVERAGE":
        y = ctx.node("AveragePool", [x], count_include_pad=0 if p.avgPoolExcludePadding else 1, **attrs)
    else:
        attrs.pop("ceil_mode", None)
        y = ctx.node("LpPool", [x], p=2, **attrs)
    return restore_rank(ctx, y, lead)
