"""Data movement and reduction layers: concat, split, slice, reshape, flatten, permute,
transpose, squeeze/expand, padding, crop, loadConstant, reduce, tile, gather, argmax."""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_coreml_quality.errors import ModelFormatError
from pytest_coreml_quality.runtime.onnx.nn_layers import nn_layer
from pytest_coreml_quality.runtime.onnx.nn_layers.context import LayerContext
from pytest_coreml_quality.runtime.onnx.nn_layers.conv import border


@nn_layer("concat")
def concat(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    if layer.concat.sequenceConcat:
        rank = ctx.rank(inputs[0])
        axis = rank - 5 if rank >= 5 else 0  # rank-4 blobs fold Seq and Batch into axis 0
    else:
        # A non-negative axis: onnxruntime's NCHWc layout pass keeps a Concat in the blocked
        # layout only when its attribute is literally 1, so axis=-3 on a rank-4 blob cost two
        # layout reorders per Concat (about a tenth of ISNet's inference time).
        try:
            axis = ctx.rank(inputs[0]) - 3
        except ModelFormatError:  # shape unknown here: the same axis, counted from the end
            axis = -3
    return ctx.node("Concat", inputs, axis=axis)


@nn_layer("concatND")
def concat_nd(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    if layer.concatND.interleave:
        raise ctx.unsupported("uses interleaved concatenation", expected="interleave = false")
    return ctx.node("Concat", inputs, axis=int(layer.concatND.axis))


@nn_layer("split")
def split(ctx: LayerContext, layer: Any, inputs: list[str]) -> list[str]:
    n = int(layer.split.nOutputs) or len(layer.output)
    outs = ctx.node("Split", inputs[:1], n, axis=-3, num_outputs=n)
    return outs if isinstance(outs, list) else [outs]


@nn_layer("splitND")
def split_nd(ctx: LayerContext, layer: Any, inputs: list[str]) -> list[str]:
    p = layer.splitND
    n = len(layer.output)
    sizes = [int(s) for s in p.splitSizes]
    if sizes:
        outs = ctx.node("Split", [inputs[0], ctx.ints(sizes, "split")], n, axis=int(p.axis))
    else:
        outs = ctx.node("Split", inputs[:1], n, axis=int(p.axis), num_outputs=n)
    return outs if isinstance(outs, list) else [outs]


@nn_layer("slice")
def slice_(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    p = layer.slice
    axis = {0: -3, 1: -2, 2: -1}[int(p.axis)]
    size = ctx.shape(inputs[0])[axis]
    start = int(p.startIndex) + (size if p.startIndex < 0 else 0)
    end = int(p.endIndex) + (size if p.endIndex < 0 else 0)
    return ctx.node("Slice", [inputs[0], ctx.ints([start], "starts"), ctx.ints([end], "ends"),
                              ctx.ints([axis], "axes"), ctx.ints([int(p.stride) or 1], "steps")])


@nn_layer("sliceStatic")
def slice_static(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    p = layer.sliceStatic
    shape = ctx.shape(inputs[0])
    rank = len(shape)
    begins, ends, steps = list(p.beginIds), list(p.endIds), list(p.strides) or [1] * rank
    starts_, ends_ = [], []
    for i in range(rank):
        step = int(steps[i]) if i < len(steps) else 1
        b = int(begins[i]) if i < len(begins) else 0
        e = int(ends[i]) if i < len(ends) else shape[i]
        if i < len(p.beginMasks) and p.beginMasks[i]:
            b = 0 if step > 0 else shape[i] - 1
        if i < len(p.endMasks) and p.endMasks[i]:
            e = shape[i] if step > 0 else -(2**62)
        starts_.append(b)
        ends_.append(e)
    y = ctx.node("Slice", [inputs[0], ctx.ints(starts_, "starts"), ctx.ints(ends_, "ends"),
                           ctx.ints(list(range(rank)), "axes"), ctx.ints([int(s) for s in steps[:rank]], "steps")])
    squeeze = [i for i, m in enumerate(p.squeezeMasks) if m]
    if squeeze:
        y = ctx.node("Squeeze", [y, ctx.ints(squeeze, "axes")])
    return y


def _channel_last_to_first(ctx: LayerContext, x: str, rank: int) -> str:
    return ctx.node("Transpose", [x], perm=[*range(rank - 3), rank - 2, rank - 1, rank - 3])


@nn_layer("reshape")
def reshape(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    p = layer.reshape
    x = inputs[0]
    shape = ctx.shape(x)
    rank = len(shape)
    target = [int(d) for d in p.targetShape]
    if len(target) == 3:
        out = [*shape[:-3], *target] if rank > 3 else target
        if int(np.prod(out)) != int(np.prod(shape)):
            out = [-1, *target] if rank > 3 else target
    else:  # [Seq, C, H, W]: Seq goes to the first axis, Batch (1) stays.
        out = [target[0], 1, *target[1:]] if rank >= 5 else target
    if p.mode == 1:  # CHANNEL_LAST: flatten in H, W, C order, refill in H, W, C order
        x = ctx.node("Transpose", [x], perm=[*range(rank - 3), rank - 2, rank - 1, rank - 3])
        y = ctx.reshape(x, [*out[:-3], out[-2], out[-1], out[-3]])
        r = len(out)
        return ctx.node("Transpose", [y], perm=[*range(r - 3), r - 1, r - 3, r - 2])
    return ctx.reshape(x, out)


@nn_layer("reshapeStatic", "rankPreservingReshape")
def reshape_static(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    p = getattr(layer, layer.WhichOneof("layer"))
    return ctx.reshape(inputs[0], [int(d) for d in p.targetShape])


@nn_layer("flatten")
def flatten(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    x = inputs[0]
    shape = ctx.shape(x)
    rank = len(shape)
    if layer.flatten.mode == 1:  # CHANNEL_LAST
        x = ctx.node("Transpose", [x], perm=[*range(rank - 3), rank - 2, rank - 1, rank - 3])
    lead = list(shape[:-3])
    return ctx.reshape(x, [*lead, int(np.prod(shape[-3:])), 1, 1])


@nn_layer("flattenTo2D")
def flatten_to_2d(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    return ctx.node("Flatten", inputs[:1], axis=int(layer.flattenTo2D.axis))


@nn_layer("permute")
def permute(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    axes = [int(a) for a in layer.permute.axis] or [0, 1, 2, 3]
    rank = ctx.rank(inputs[0])
    if rank == 4:  # [Seq*Batch, C, H, W] with Batch 1
        perm = axes
    elif rank == 5:  # [Seq, Batch, C, H, W]: Batch (axis 1) stays
        to5 = [0, 2, 3, 4]
        perm = [to5[axes[0]], 1, to5[axes[1]], to5[axes[2]], to5[axes[3]]]
    else:
        raise ctx.unsupported(f"permutes a rank-{rank} blob", expected="rank 4 or 5")
    return ctx.node("Transpose", inputs[:1], perm=perm)


@nn_layer("transpose")
def transpose(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    return ctx.node("Transpose", inputs[:1], perm=[int(a) for a in layer.transpose.axes])


@nn_layer("squeeze")
def squeeze(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    p = layer.squeeze
    if p.squeezeAll:
        return ctx.node("Squeeze", inputs[:1])
    return ctx.node("Squeeze", [inputs[0], ctx.ints([int(a) for a in p.axes], "axes")])


@nn_layer("expandDims")
def expand_dims(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    return ctx.node("Unsqueeze", [inputs[0], ctx.ints([int(a) for a in layer.expandDims.axes], "axes")])


@nn_layer("copy")
def copy(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    return ctx.node("Identity", inputs[:1])


@nn_layer("loadConstant")
def load_constant(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    shape = [int(d) for d in layer.loadConstant.shape]
    data = ctx.weights(layer.loadConstant.data, shape, "loadConstant.data")
    return ctx.node("Identity", [ctx.const(data.reshape(1, *shape), name="data")])


@nn_layer("loadConstantND")
def load_constant_nd(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    shape = [int(d) for d in layer.loadConstantND.shape]
    data = ctx.weights(layer.loadConstantND.data, shape, "loadConstantND.data")
    return ctx.node("Identity", [ctx.const(data, name="data")])


_PAD_MODES = {"constant": "constant", "reflection": "reflect", "replication": "edge"}


@nn_layer("padding")
def padding(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    p = layer.padding
    kind = p.WhichOneof("PaddingType") or "constant"
    t, left, b, r = border(p.paddingAmounts)
    rank = ctx.rank(inputs[0])
    pads = [0] * (rank - 2) + [t, left] + [0] * (rank - 2) + [b, r]
    args = [inputs[0], ctx.ints(pads, "pads")]
    if kind == "constant":
        args.append(ctx.const(np.float32(p.constant.value), name="value"))
    return ctx.node("Pad", args, mode=_PAD_MODES[kind])


@nn_layer("crop")
def crop(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    p = layer.crop
    shape = ctx.shape(inputs[0])
    h, w = shape[-2:]
    if len(inputs) == 2:
        oh, ow = (int(v) for v in p.offset) if len(p.offset) == 2 else (0, 0)
        rh, rw = ctx.shape(inputs[1])[-2:]
        starts, ends = [oh, ow], [oh + rh, ow + rw]
    else:
        t, left, b, r = border(p.cropAmounts)
        starts, ends = [t, left], [h - b, w - r]
    if ends[0] > h or ends[1] > w or min(ends[0] - starts[0], ends[1] - starts[1]) <= 0:
        raise ctx.format_error(f"crops outside the {h}x{w} input", field="crop", expected="a crop inside the input")
    return ctx.node("Slice", [inputs[0], ctx.ints(starts, "starts"), ctx.ints(ends, "ends"), ctx.ints([-2, -1], "axes")])


_REDUCE_AXES = {0: [-3, -2, -1], 1: [-2, -1], 2: [-3], 3: [-2], 4: [-1]}


@nn_layer("reduce")
def reduce(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    p = layer.reduce
    mode = p.ReduceOperation.Name(p.mode)
    axes = _REDUCE_AXES[int(p.axis)]
    x = inputs[0]
    if mode == "ARGMAX":
        if len(axes) != 1:
            raise ctx.unsupported("takes ARGMAX over several axes", expected="one axis")
        return ctx.node("Cast", [ctx.node("ArgMax", [x], axis=axes[0], keepdims=1)], to=1)
    if mode == "LOGSUM":
        eps = float(p.epsilon) or 1e-6
        x = ctx.node("Log", [ctx.node("Add", [x, ctx.const(eps, name="eps")])])
        mode = "SUM"
    op = {"SUM": "ReduceSum", "AVG": "ReduceMean", "PROD": "ReduceProd", "SUMSQUARE": "ReduceSumSquare",
          "L1": "ReduceL1", "L2": "ReduceL2", "MAX": "ReduceMax", "MIN": "ReduceMin"}[mode]
    return ctx.node(op, [x, ctx.ints(axes, "axes")], keepdims=1)


_REDUCE_ND = {
    "reduceL1": "ReduceL1", "reduceL2": "ReduceL2", "reduceMax": "ReduceMax", "reduceMin": "ReduceMin",
    "reduceSum": "ReduceSum", "reduceProd": "ReduceProd", "reduceMean": "ReduceMean",
    "reduceLogSum": "ReduceLogSum", "reduceSumSquare": "ReduceSumSquare", "reduceLogSumExp": "ReduceLogSumExp",
}


@nn_layer(*_REDUCE_ND)
def reduce_nd(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    kind = layer.WhichOneof("layer")
    p = getattr(layer, kind)
    keep = 1 if p.keepDims else 0
    if p.reduceAll or not len(p.axes):
        return ctx.node(_REDUCE_ND[kind], inputs[:1], keepdims=keep)
    return ctx.node(_REDUCE_ND[kind], [inputs[0], ctx.ints([int(a) for a in p.axes], "axes")], keepdims=keep)


@nn_layer("argMax", "argMin")
def arg_extreme(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    kind = layer.WhichOneof("layer")
    p = getattr(layer, kind)
    op = "ArgMax" if kind == "argMax" else "ArgMin"
    y = ctx.node(op, inputs[:1], axis=int(p.axis), keepdims=0 if p.removeDim else 1)
    return ctx.node("Cast", [y], to=1)


@nn_layer("tile")
def tile(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    return ctx.node("Tile", [inputs[0], ctx.ints([int(r) for r in layer.tile.reps], "reps")])


@nn_layer("gather")
def gather(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    idx = ctx.node("Cast", [inputs[1]], to=7)
    return ctx.node("Gather", [inputs[0], idx], axis=int(layer.gather.axis))


@nn_layer("getShape")
def get_shape(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    return ctx.node("Cast", [ctx.node("Shape", inputs[:1])], to=1)


@nn_layer("reorganizeData")
def reorganize_data(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    p = layer.reorganizeData
    mode = p.ReorganizationType.Name(p.mode)
    block = int(p.blockSize)
    if mode == "SPACE_TO_DEPTH":
        return ctx.node("SpaceToDepth", inputs[:1], blocksize=block)
    # DEPTH_TO_SPACE follows TensorFlow's depth-column-row order; PIXEL_SHUFFLE PyTorch's.
    return ctx.node("DepthToSpace", inputs[:1], blocksize=block, mode="DCR" if mode == "DEPTH_TO_SPACE" else "CRD")
