"""batchnorm (and instance normalization), mvn, l2normalize, lrn, layerNormalization, softmax."""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_coreml_quality.runtime.onnx.nn_layers import nn_layer
from pytest_coreml_quality.runtime.onnx.nn_layers.context import LayerContext


@nn_layer("batchnorm")
def batchnorm(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    p = layer.batchnorm
    c = int(p.channels)
    eps = float(p.epsilon) or 1e-5
    x = inputs[0]
    gamma = ctx.weights(p.gamma, (c,), "batchnorm.gamma")
    beta = ctx.weights(p.beta, (c,), "batchnorm.beta")
    rank = ctx.rank(x)
    if p.computeMeanVar:
        # Statistics from the input itself: per instance (over H, W) or over the batch.
        axes = [rank - 2, rank - 1] if p.instanceNormalization else [a for a in range(rank) if a != rank - 3]
        mean = ctx.node("ReduceMean", [x, ctx.ints(axes, "axes")], keepdims=1)
        centred = ctx.node("Sub", [x, mean])
        var = ctx.node("ReduceMean", [ctx.node("Mul", [centred, centred]), ctx.ints(axes, "axes")], keepdims=1)
        norm = ctx.node("Div", [centred, ctx.node("Sqrt", [ctx.node("Add", [var, ctx.const(eps, name="eps")])])])
        y = ctx.node("Mul", [norm, ctx.channel_broadcast(gamma, rank, "gamma")])
        return ctx.node("Add", [y, ctx.channel_broadcast(beta, rank, "beta")])
    mean = ctx.weights(p.mean, (c,), "batchnorm.mean")
    var = ctx.weights(p.variance, (c,), "batchnorm.variance")
    if rank == 4:
        return ctx.node("BatchNormalization", [x, ctx.const(gamma, name="gamma"), ctx.const(beta, name="beta"),
                                               ctx.const(mean, name="mean"), ctx.const(var, name="var")],
                        epsilon=eps)
    # Other ranks: the same affine map, channel axis -3.
    scale = (gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)).astype(np.float32)
    shift = (beta.astype(np.float64) - mean.astype(np.float64) * scale).astype(np.float32)
    y = ctx.node("Mul", [x, ctx.channel_broadcast(scale, rank, "scale")])
    return ctx.node("Add", [y, ctx.channel_broadcast(shift, rank, "shift")])


@nn_layer("mvn")
def mvn(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    p = layer.mvn
    x = inputs[0]
    rank = ctx.rank(x)
    axes = [rank - 3, rank - 2, rank - 1] if p.acrossChannels else [rank - 2, rank - 1]
    mean = ctx.node("ReduceMean", [x, ctx.ints(axes, "axes")], keepdims=1)
    centred = ctx.node("Sub", [x, mean])
    if not p.normalizeVariance:
        return centred
    eps = float(p.epsilon) or 1e-6
    var = ctx.node("ReduceMean", [ctx.node("Mul", [centred, centred]), ctx.ints(axes, "axes")], keepdims=1)
    return ctx.node("Div", [centred, ctx.node("Sqrt", [ctx.node("Add", [var, ctx.const(eps, name="eps")])])])


@nn_layer("l2normalize")
def l2normalize(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    x = inputs[0]
    rank = ctx.rank(x)
    eps = float(layer.l2normalize.epsilon) or 1e-6
    axes = list(range(max(0, rank - 3), rank))
    ss = ctx.node("ReduceSumSquare", [x, ctx.ints(axes, "axes")], keepdims=1)
    return ctx.node("Div", [x, ctx.node("Sqrt", [ctx.node("Add", [ss, ctx.const(eps, name="eps")])])])


@nn_layer("lrn")
def lrn(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    p = layer.lrn
    x = inputs[0]
    if ctx.rank(x) != 4:
        raise ctx.unsupported(f"has a rank-{ctx.rank(x)} input", expected="rank 4")
    return ctx.node("LRN", [x], alpha=float(p.alpha), beta=float(p.beta), bias=float(p.k) or 1.0, size=int(p.localSize))


@nn_layer("layerNormalization")
def layer_normalization(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    p = layer.layerNormalization
    shape = [int(d) for d in p.normalizedShape]
    gamma = ctx.weights(p.gamma, shape, "layerNormalization.gamma")
    beta = ctx.weights(p.beta, shape, "layerNormalization.beta")
    return ctx.node("LayerNormalization", [inputs[0], ctx.const(gamma, name="gamma"), ctx.const(beta, name="beta")],
                    axis=-len(shape), epsilon=float(p.eps) or 1e-5)


@nn_layer("softmax")
def softmax(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    return ctx.node("Softmax", inputs[:1], axis=-3)


@nn_layer("softmaxND")
def softmax_nd(ctx: LayerContext, layer: Any, inputs: list[str]) -> str:
    return ctx.node("Softmax", inputs[:1], axis=int(layer.softmaxND.axis))
