"""convolution / deconvolution, innerProduct, batchedMatmul."""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_coreml_quality.runtime.onnx.nn_layers import nn_layer
from pytest_coreml_quality.runtime.onnx.nn_layers.context import LayerContext
from pytest_coreml_quality.runtime.onnx.padding import same_pads


def pair(values: Any, default: int) -> tuple[int, int]:
    v = [int(x) for x in values]
    return (v[0], v[1]) if len(v) >= 2 else (default, default)


def border(amounts: Any) -> tuple[int, int, int, int]:
    """BorderAmounts -> (top, left, bottom, right)."""
    b = list(amounts.borderAmounts)
    if len(b) < 2:
        return (0, 0, 0, 0)
    return (int(b[0].startEdgeSize), int(b[1].startEdgeSize), int(b[0].endEdgeSize), int(b[1].endEdgeSize))


def as_rank4(ctx: LayerContext, x: str) -> tuple[str, tuple[int, ...] | None]:
    """Fold leading dims into one batch dim (layers on rank != 4 act on the last 3 axes)."""
    shape = ctx.shape(x)
    if len(shape) == 4:
        return x, None
    if len(shape) < 3:
        raise ctx.format_error(f"input has rank {len(shape)}", expected="rank >= 3")
    return ctx.reshape(x, (-1, *shape[-3:])), shape[:-3]


def restore_rank(ctx: LayerContext, y: str, lead: tuple[int, ...] | None) -> str:
    if lead is None:
        return y
    c, h, w = ctx.shape(y)[-3:]
    return ctx.reshape(y, (*lead, c, h, w))


@nn_layer("convolution")
def convolution(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    p = layer.convolution
    if len(inputs) > 1:
        raise ctx.unsupported("takes its weights from a second input", expected="weights stored in the layer")
    kh, kw = pair(p.kernelSize, 3)
    sh, sw = pair(p.stride, 1)
    groups = int(p.nGroups) or 1
    cout, kc = int(p.outputChannels), int(p.kernelChannels)
    x, lead = as_rank4(ctx, inputs[0])
    if p.isDeconvolution:
        y = _deconvolution(ctx, p, x, (kh, kw), (sh, sw), groups, cout, kc)
    else:
        dh, dw = pair(p.dilationFactor, 1)
        w = ctx.weights(p.weights, (cout, kc, kh, kw), "convolution.weights")
        args = [x, ctx.const(w, name="W")]
        if p.hasBias:
            args.append(ctx.const(ctx.weights(p.bias, (cout,), "convolution.bias"), name="B"))
        attrs: dict[str, Any] = dict(kernel_shape=[kh, kw], strides=[sh, sw], dilations=[dh, dw], group=groups)
        if p.WhichOneof("ConvolutionPaddingType") == "same":
            # Explicit pads, not auto_pad: onnxruntime refuses SAME_* with dilations.
            attrs["pads"] = same_pads(ctx.shape(x)[2:], (kh, kw), (sh, sw), (dh, dw),
                                      heavy_begin=p.same.asymmetryMode == 1)
        else:
            t, left, btm, r = border(p.valid.paddingAmounts)
            attrs["pads"] = [t, left, btm, r]
        y = ctx.node("Conv", args, **attrs)
    return restore_rank(ctx, y, lead)


def _deconvolution(ctx: LayerContext, p: Any, x: str, k: tuple[int, int], s: tuple[int, int], groups: int,
                   cout: int, kc: int) -> str:
    w = ctx.weights(p.weights, (kc, cout // groups, k[0], k[1]), "convolution.weights", axis=1)
    # Full (unpadded) transposed convolution, then crop/extend to what Core ML specifies.
    y = ctx.node("ConvTranspose", [x, ctx.const(w, name="W")], kernel_shape=list(k), strides=list(s), group=groups)
    _, _, h_in, w_in = ctx.shape(x)
    full = ((h_in - 1) * s[0] + k[0], (w_in - 1) * s[1] + k[1])
    which = p.WhichOneof("ConvolutionPaddingType")
    if which == "same":
        out = (h_in * s[0], w_in * s[1])
        begin = []
        for i in range(2):
            total = max(0, full[i] - out[i])
            begin.append(total - total // 2 if p.same.asymmetryMode == 1 else total // 2)
    else:
        t, left, btm, r = border(p.valid.paddingAmounts)
        begin = [t, left]
        out = (full[0] - t - btm, full[1] - left - r)
    if len(p.outputShape) == 2:
        out = (int(p.outputShape[0]), int(p.outputShape[1]))
    avail = (full[0] - begin[0], full[1] - begin[1])
    crop = (min(out[0], avail[0]), min(out[1], avail[1]))
    if begin != [0, 0] or crop != full:
        y = ctx.node("Slice", [y, ctx.ints(begin, "starts"), ctx.ints([begin[0] + crop[0], begin[1] + crop[1]], "ends"),
                               ctx.ints([2, 3], "axes")])
    if crop != out:  # outputShape beyond the full output: rows/columns with no contribution.
        y = ctx.node("Pad", [y, ctx.ints([0, 0, 0, 0, 0, 0, out[0] - crop[0], out[1] - crop[1]], "pads")])
    if p.hasBias:
        bias = ctx.weights(p.bias, (cout,), "convolution.bias")
        y = ctx.node("Add", [y, ctx.const(bias.reshape(cout, 1, 1), name="B")])
    return y


@nn_layer("innerProduct")
def inner_product(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    p = layer.innerProduct
    cin, cout = int(p.inputChannels), int(p.outputChannels)
    x = inputs[0]
    shape = ctx.shape(x)
    rank = len(shape)
    if rank == 1:
        flat, out_shape = (1, cin), (cout,)
    elif rank == 2:
        flat, out_shape = (shape[0], cin), (shape[0], cout)
    elif rank == 3:
        flat, out_shape = (shape[0] * shape[1], cin), (shape[0], shape[1], cout)
    elif rank == 4:
        flat, out_shape = (shape[0], cin), (shape[0], cout, 1, 1)
    else:
        flat, out_shape = (shape[0] * shape[1], cin), (shape[0], shape[1], cout, 1, 1)
    if int(np.prod(flat)) != int(np.prod(shape)):
        raise ctx.format_error(f"input of shape {list(shape)} does not hold {cin} input channels",
                               field="innerProduct.inputChannels", expected=f"{cin} values per row")
    w = ctx.weights(p.weights, (cout, cin), "innerProduct.weights")
    args = [ctx.reshape(x, flat), ctx.const(w, name="W")]
    if p.hasBias:
        args.append(ctx.const(ctx.weights(p.bias, (cout,), "innerProduct.bias"), name="B"))
    y = ctx.node("Gemm", args, transB=1)
    return ctx.reshape(y, out_shape)


@nn_layer("batchedMatmul")
def batched_matmul(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    p = layer.batchedMatmul
    a = inputs[0]
    if p.transposeA:
        r = ctx.rank(a)
        a = ctx.node("Transpose", [a], perm=[*range(r - 2), r - 1, r - 2])
    if len(inputs) >= 2:
        bname = inputs[1]
        if p.transposeB:
            r = ctx.rank(bname)
            bname = ctx.node("Transpose", [bname], perm=[*range(r - 2), r - 1, r - 2])
        return ctx.node("MatMul", [a, bname])
    rows, cols = int(p.weightMatrixFirstDimension), int(p.weightMatrixSecondDimension)
    w = ctx.weights(p.weights, (cols, rows), "batchedMatmul.weights").T  # stored [C_out, C_in]
    y = ctx.node("MatMul", [a, ctx.const(np.ascontiguousarray(w), name="W")])
    if p.hasBias:
        y = ctx.node("Add", [y, ctx.const(ctx.weights(p.bias, (cols,), "batchedMatmul.bias"), name="B")])
    return y
