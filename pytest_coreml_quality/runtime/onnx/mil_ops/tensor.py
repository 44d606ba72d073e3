"""Tensor layout ops: concat, split, slicing, reshape, transpose, squeeze, pad, tile, gather, ..."""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto

from pytest_coreml_quality.runtime.onnx.mil_ops.registry import MilContext, StaticValueRequired, mil_op

_BIG = np.iinfo(np.int64).max


def _slice(
    ctx: MilContext, x: str, starts: list[int], ends: list[int], axes: list[int], steps: list[int] | None, name: str
) -> str:
    """An ONNX Slice with constant starts/ends/axes(/steps)."""
    inputs = [x, ctx.ints(starts, "starts"), ctx.ints(ends, "ends"), ctx.ints(axes, "axes")]
    if steps is not None:
        inputs.append(ctx.ints(steps, "steps"))
    return ctx.builder.node("Slice", inputs, name=name)


@mil_op("concat")
def concat(ctx: MilContext, op: Any) -> str:
    values = op.inputs["values"]
    rank = ctx.rank(values[0])
    axis = int(ctx.static(op, "axis")) % rank
    names = [ctx.x(v) for v in values]
    if not bool(ctx.static(op, "interleave", False)):
        return ctx.builder.node("Concat", names, name=op.name, axis=axis)
    # Interleave: stack on a new axis after ``axis``, then merge the two axes.
    b = ctx.builder
    unsq = [b.node("Unsqueeze", [n, ctx.ints([axis + 1], "axes")], name=f"{op.name}_u") for n in names]
    stacked = b.node("Concat", unsq, name=f"{op.name}_stack", axis=axis + 1)
    return b.node("Reshape", [stacked, ctx.ints(ctx.shape(op.outputs[0]), "shape")], name=op.name)


@mil_op("stack")
def stack(ctx: MilContext, op: Any) -> str:
    values = op.inputs["values"]
    axis = int(ctx.static(op, "axis")) % (ctx.rank(values[0]) + 1)
    b = ctx.builder
    unsq = [b.node("Unsqueeze", [ctx.x(v), ctx.ints([axis], "axes")], name=f"{op.name}_u") for v in values]
    return b.node("Concat", unsq, name=op.name, axis=axis)


@mil_op("split")
def split(ctx: MilContext, op: Any) -> list[str]:
    rank = ctx.rank(op.inputs["x"])
    axis = int(ctx.static(op, "axis")) % rank
    sizes = [ctx.shape(o)[axis] for o in op.outputs]
    out = ctx.builder.node(
        "Split", [ctx.inp(op, "x"), ctx.ints(sizes, "split")], outputs=len(sizes), name=op.name, axis=axis
    )
    return out if isinstance(out, list) else [out]


@mil_op("slice_by_index")
def slice_by_index(ctx: MilContext, op: Any) -> str:
    x_var = op.inputs["x"]
    rank = ctx.rank(x_var)
    begin = ctx.static_list(op, "begin")
    end = ctx.static_list(op, "end")
    stride = ctx.static_list(op, "stride") or [1] * rank
    begin_mask = ctx.static_list(op, "begin_mask") or [0] * rank
    end_mask = ctx.static_list(op, "end_mask") or [0] * rank
    squeeze_mask = ctx.static_list(op, "squeeze_mask") or [0] * rank
    starts, ends = [], []
    for i in range(rank):
        forward = stride[i] > 0
        start = begin[i] if not begin_mask[i] else (0 if forward else -1)
        if squeeze_mask[i]:
            # A squeezed axis keeps exactly the element at ``begin``.
            stop = start + 1 if start != -1 else _BIG
            if not forward:
                stride[i] = 1
        elif end_mask[i]:
            stop = _BIG if forward else -_BIG
        else:
            stop = end[i]
        starts.append(start)
        ends.append(stop)
    b = ctx.builder
    sliced_name = f"{op.name}_slice" if any(squeeze_mask) else op.name
    y = _slice(ctx, ctx.inp(op, "x"), starts, ends, list(range(rank)), stride, sliced_name)
    squeeze_axes = [i for i in range(rank) if squeeze_mask[i]]
    if not squeeze_axes:
        return y
    if len(squeeze_axes) == rank:
        return b.node("Reshape", [y, ctx.ints(ctx.shape(op.outputs[0]), "shape")], name=op.name)
    return b.node("Squeeze", [y, ctx.ints(squeeze_axes, "axes")], name=op.name)


@mil_op("slice_by_size")
def slice_by_size(ctx: MilContext, op: Any) -> str:
    begin = ctx.static_list(op, "begin")
    size = ctx.static_list(op, "size")
    ends = [_BIG if s == -1 else b_ + s for b_, s in zip(begin, size)]
    return _slice(ctx, ctx.inp(op, "x"), begin, ends, list(range(len(begin))), None, op.name)


def _reshape_to_output(ctx: MilContext, op: Any) -> str:
    """Reshape to the output shape MIL's type inference computed (or, for flexible sizes,
    to the op's ``shape`` input: MIL and ONNX both read 0 as "copy" and -1 as "infer")."""
    out_var = op.outputs[0]
    if ctx.is_static(out_var):
        target = ctx.ints(ctx.shape(out_var), "shape")
    elif op.op_type == "reshape" and ctx.value(op.inputs["shape"]) is not None:
        target = ctx.ints(ctx.static_list(op, "shape"), "shape")
    else:
        raise StaticValueRequired(f"the output shape of {op.op_type} '{op.name}' depends on the input size")
    return ctx.builder.node("Reshape", [ctx.inp(op, "x"), target], name=op.name)


for _name in ("reshape", "flatten2d", "reshape_like"):
    mil_op(_name)(_reshape_to_output)


@mil_op("transpose")
def transpose(ctx: MilContext, op: Any) -> str:
    return ctx.builder.node("Transpose", [ctx.inp(op, "x")], name=op.name, perm=ctx.static_list(op, "perm"))


@mil_op("squeeze")
def squeeze(ctx: MilContext, op: Any) -> str:
    x_var = op.inputs["x"]
    rank = ctx.rank(x_var)
    axes = ctx.static_list(op, "axes")
    if axes is None:  # MIL: every size-1 dim, which needs a known shape
        axes = [i for i, d in enumerate(ctx.shape(x_var)) if d == 1]
    axes = [a % rank for a in axes]
    if len(axes) == rank:
        return ctx.builder.node("Reshape", [ctx.inp(op, "x"), ctx.ints([], "shape")], name=op.name)
    return ctx.builder.node("Squeeze", [ctx.inp(op, "x"), ctx.ints(axes, "axes")], name=op.name)


@mil_op("expand_dims")
def expand_dims(ctx: MilContext, op: Any) -> str:
    out_rank = ctx.rank(op.outputs[0])
    axes = sorted(a % out_rank for a in ctx.static_list(op, "axes"))
    return ctx.builder.node("Unsqueeze", [ctx.inp(op, "x"), ctx.ints(axes, "axes")], name=op.name)


@mil_op("pad")
def pad(ctx: MilContext, op: Any) -> str:
    """MIL pads the last ``len(pad) / 2`` axes with ``[begin, end]`` pairs."""
    rank = ctx.rank(op.inputs["x"])
    pairs = ctx.static_list(op, "pad")
    n = len(pairs) // 2
    begins = [0] * (rank - n) + pairs[0::2]
    ends = [0] * (rank - n) + pairs[1::2]
    mode = str(ctx.static(op, "mode", "constant"))
    onnx_mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}[mode]
    inputs = [ctx.inp(op, "x"), ctx.ints(begins + ends, "pads")]
    if mode == "constant":
        inputs.append(ctx.floats(float(ctx.static(op, "constant_val", 0.0)), "pad_value"))
    return ctx.builder.node("Pad", inputs, name=op.name, mode=onnx_mode)


@mil_op("tile")
def tile(ctx: MilContext, op: Any) -> str:
    return ctx.builder.node("Tile", [ctx.inp(op, "x"), ctx.ints(ctx.static_list(op, "reps"), "reps")], name=op.name)


@mil_op("gather")
def gather(ctx: MilContext, op: Any) -> str:
    if int(ctx.static(op, "batch_dims", 0)) != 0:
        raise ValueError("gather with batch_dims != 0 is not supported")
    rank = ctx.rank(op.inputs["x"])
    axis = int(ctx.static(op, "axis", 0)) % rank
    return ctx.builder.node("Gather", [ctx.inp(op, "x"), ctx.inp(op, "indices")], name=op.name, axis=axis)


@mil_op("gather_along_axis")
def gather_along_axis(ctx: MilContext, op: Any) -> str:
    rank = ctx.rank(op.inputs["x"])
    axis = int(ctx.static(op, "axis", 0)) % rank
    return ctx.builder.node("GatherElements", [ctx.inp(op, "x"), ctx.inp(op, "indices")], name=op.name, axis=axis)


@mil_op("depth_to_space")
def depth_to_space(ctx: MilContext, op: Any) -> str:
    # MIL's depth_to_space is the DCR ordering TensorFlow uses (ONNX's default).
    block = int(ctx.static(op, "block_size"))
    return ctx.builder.node("DepthToSpace", [ctx.inp(op, "x")], name=op.name, blocksize=block, mode="DCR")


@mil_op("pixel_shuffle")
def pixel_shuffle(ctx: MilContext, op: Any) -> str:
    # PyTorch's pixel_shuffle is ONNX's CRD ordering.
    block = int(ctx.static(op, "upscale_factor"))
    return ctx.builder.node("DepthToSpace", [ctx.inp(op, "x")], name=op.name, blocksize=block, mode="CRD")


@mil_op("space_to_depth")
def space_to_depth(ctx: MilContext, op: Any) -> str:
    block = int(ctx.static(op, "block_size"))
    return ctx.builder.node("SpaceToDepth", [ctx.inp(op, "x")], name=op.name, blocksize=block)


@mil_op("shape")
def shape(ctx: MilContext, op: Any) -> str:
    # Shapes are static after MIL type inference; a symbolic dim raises StaticValueRequired.
    return ctx.builder.const(np.asarray(ctx.shape(op.inputs["x"]), dtype=np.int32), name=op.name)


_REDUCE = {
    "reduce_sum": "ReduceSum",
    "reduce_mean": "ReduceMean",
    "reduce_max": "ReduceMax",
    "reduce_min": "ReduceMin",
    "reduce_prod": "ReduceProd",
    "reduce_l1_norm": "ReduceL1",
    "reduce_l2_norm": "ReduceL2",
    "reduce_log_sum": "ReduceLogSum",
    "reduce_log_sum_exp": "ReduceLogSumExp",
    "reduce_sum_square": "ReduceSumSquare",
}


def _reduce(onnx_op: str):  # noqa: ANN202 - a handler factory
    def handler(ctx: MilContext, op: Any) -> str:
        rank = ctx.rank(op.inputs["x"])
        axes = ctx.static_list(op, "axes")
        axes = list(range(rank)) if axes is None else [a % rank for a in axes]
        keep = int(bool(ctx.static(op, "keep_dims", False)))
        return ctx.builder.node(onnx_op, [ctx.inp(op, "x"), ctx.ints(axes, "axes")], name=op.name, keepdims=keep)

    return handler


for _mil, _onnx in _REDUCE.items():
    mil_op(_mil)(_reduce(_onnx))


def _arg_reduce(onnx_op: str):  # noqa: ANN202 - a handler factory
    def handler(ctx: MilContext, op: Any) -> str:
        rank = ctx.rank(op.inputs["x"])
        axis = int(ctx.static(op, "axis", -1)) % rank
        keep = int(bool(ctx.static(op, "keep_dims", False)))
        idx = ctx.builder.node(onnx_op, [ctx.inp(op, "x")], name=f"{op.name}_i64", axis=axis, keepdims=keep)
        return ctx.builder.node("Cast", [idx], name=op.name, to=TensorProto.INT32)

    return handler


mil_op("reduce_argmax")(_arg_reduce("ArgMax"))
mil_op("reduce_argmin")(_arg_reduce("ArgMin"))


@mil_op("reverse")
def reverse(ctx: MilContext, op: Any) -> str:
    rank = ctx.rank(op.inputs["x"])
    axes = ctx.static_list(op, "axes")
    axes = list(range(rank)) if axes is None else [a % rank for a in axes]
    n = len(axes)
    return _slice(ctx, ctx.inp(op, "x"), [-1] * n, [-_BIG] * n, axes, [-1] * n, op.name)


@mil_op("crop")
def crop(ctx: MilContext, op: Any) -> str:
    """Remove ``crop_height = [top, bottom]`` and ``crop_width = [left, right]`` from the last two axes."""
    top, bottom = ctx.static_list(op, "crop_height")
    left, right = ctx.static_list(op, "crop_width")
    rank = ctx.rank(op.inputs["x"])
    # Negative ends count from the far edge, so flexible input sizes need no shape.
    ends = [-bottom if bottom else _BIG, -right if right else _BIG]
    return _slice(ctx, ctx.inp(op, "x"), [top, left], ends, [rank - 2, rank - 1], None, op.name)
