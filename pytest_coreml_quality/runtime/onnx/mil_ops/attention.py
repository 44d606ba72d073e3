"""Attention and tensor contractions: scaled_dot_product_attention (iOS18) and einsum."""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto

from pytest_coreml_quality.runtime.onnx.mil_ops.registry import MilContext, mil_op
from pytest_coreml_quality.runtime.onnx.mil_ops.selection import axis_size, onnx_type


def _swap_last_two(rank: int) -> list[int]:
    return [*range(rank - 2), rank - 1, rank - 2]


@mil_op("scaled_dot_product_attention")
def scaled_dot_product_attention(ctx: MilContext, op: Any) -> str:
    """``softmax(Q @ K^T / sqrt(E) + mask) @ V`` over the last axis.

    A bool ``attn_mask`` says which scores take part (the others become ``-inf``); a float
    mask is added to the scores, as in PyTorch.
    """
    b = ctx.builder
    q_var = op.inputs["query"]
    rank = ctx.rank(q_var)
    keys_t = b.node("Transpose", [ctx.inp(op, "key")], name=f"{op.name}_kt", perm=_swap_last_two(rank))
    scores = b.node("MatMul", [ctx.inp(op, "query"), keys_t], name=f"{op.name}_qk")
    embed = q_var.shape[-1]
    if isinstance(embed, (int, np.integer)):
        root = ctx.floats(float(np.sqrt(np.float32(embed))), "sqrt_embed")
    else:  # the embedding size is known only at run time
        size = b.node("Cast", [axis_size(ctx, q_var, rank - 1, op.name)], name=f"{op.name}_e", to=TensorProto.FLOAT)
        root = b.node("Sqrt", [size], name=f"{op.name}_sqrt_e")
    scores = b.node("Div", [scores, root], name=f"{op.name}_scaled")
    mask_var = op.inputs.get("attn_mask")
    if mask_var is not None:
        if onnx_type(mask_var) == TensorProto.BOOL:
            bias = b.node("Where", [ctx.x(mask_var), ctx.floats(0.0, "zero"), ctx.floats(-np.inf, "minus_inf")],
                          name=f"{op.name}_mask_bias")
        else:  # fp16/fp32: a float32 value in the graph
            bias = ctx.x(mask_var)
        scores = b.node("Add", [scores, bias], name=f"{op.name}_masked")
    weights = b.node("Softmax", [scores], name=f"{op.name}_softmax", axis=-1)
    return b.node("MatMul", [weights, ctx.inp(op, "value")], name=op.name)


def einsum_form(equation: str) -> int:
    """The rank of the einsum form ``equation`` spells (letters renamed freely), else ``ValueError``.

    MIL's einsum supports two forms, both a matrix product over axes -1 and -3 with the
    other axes as (broadcast) batch: ``"nchw,nwhu->nchu"`` (rank 4) and ``"chw,whu->chu"`` (rank 3).
    """
    text = equation.replace(" ", "")
    if text.count("->") != 1 or text.split("->")[0].count(",") != 1:
        raise ValueError(f"unsupported einsum equation {equation!r}")
    lhs, out = text.split("->")
    first, second = lhs.split(",")
    ids: dict[str, int] = {}
    vectors = [[ids.setdefault(c, len(ids)) for c in term] for term in (first, second, out)]
    if vectors == [[0, 1, 2, 3], [0, 3, 2, 4], [0, 1, 2, 4]]:
        return 4
    if vectors == [[0, 1, 2], [2, 1, 3], [0, 1, 3]]:
        return 3
    raise ValueError(f"unsupported einsum equation {equation!r} (MIL supports 'nchw,nwhu->nchu' and 'chw,whu->chu')")


@mil_op("einsum")
def einsum(ctx: MilContext, op: Any) -> str:
    """``[B, C, H, W1] x [B, W1, H, W2] -> [B, C, H, W2]`` (or without ``B``): move ``H`` in front
    of the two matrix axes, MatMul (which broadcasts size-1 ``B``/``H``), and move it back."""
    rank = einsum_form(str(ctx.static(op, "equation")))
    x_var, y_var = op.inputs["values"]
    if ctx.rank(x_var) != rank or ctx.rank(y_var) != rank:
        ranks = f"{ctx.rank(x_var)}, {ctx.rank(y_var)}"
        raise ValueError(f"einsum equation of rank {rank} applied to inputs of rank {ranks}")
    perm = [0, 2, 1, 3] if rank == 4 else [1, 0, 2]  # swaps C/W1 with H (its own inverse)
    b = ctx.builder
    x = b.node("Transpose", [ctx.x(x_var)], name=f"{op.name}_x", perm=perm)
    y = b.node("Transpose", [ctx.x(y_var)], name=f"{op.name}_y", perm=perm)
    product = b.node("MatMul", [x, y], name=f"{op.name}_mm")
    return b.node("Transpose", [product], name=op.name, perm=perm)
