"""The layer fusions ``quantize_weights`` makes before quantizing a NeuralNetwork, with a
working convolution + batch norm fold.

coremltools 9's ``_optimize_nn`` folds a batchnorm into the convolution before it, but
its ``_conv_bn_fusion`` broadcasts the per-channel factors against the whole weight matrix
and then fails on ``bias.floatValue.extend`` with a 2-D array (TypeError), so neither
``quantize_weights`` nor our fast path could compress any model with conv + batch norm.

:func:`optimize_nn` walks the layers in the same order and under the same conditions as
``_optimize_nn`` (a layer whose output feeds exactly one layer, which reads from no other
layer), uses coremltools' own scale and bias fusions (so their bytes stay coremltools'),
and folds batch norms with :func:`fold_batchnorm` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from typing import Any

import numpy as np

Fusion = Callable[[int, int, Any], None]


def optimize_nn(layers: Any, keep: Collection[str] = ()) -> int:
    """Fuse layers in place as ``quantize_weights`` does; return how many fusions were made.

    ``keep`` names blobs that must survive (the model's outputs): a layer producing one is
    never merged into the next, since the merge renames its output.
    """
    fusions = _coremltools_fusions()
    count = 0
    while _fuse_one(layers, fusions, frozenset(keep)):
        count += 1
    return count


def networks(spec: Any) -> Iterator[Any]:
    """Every NeuralNetwork (plain, classifier, regressor) in ``spec``, inside pipelines too."""
    kind = spec.WhichOneof("Type")
    if kind in ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor"):
        yield getattr(spec, kind)
    elif kind in ("pipeline", "pipelineClassifier", "pipelineRegressor"):
        for sub in getattr(spec, kind).pipeline.models if kind != "pipeline" else spec.pipeline.models:
            yield from networks(sub)


def _coremltools_fusions() -> dict[str, Fusion]:
    from coremltools.models.neural_network import optimization_utils as ou

    return {"scale": ou._fuse_layer_with_scale_layer, "bias": ou._fuse_layer_with_bias_layer,
            "bn_scale": ou._bn_scale_fusion}


def _fuse_one(layers: Any, fusions: dict[str, Fusion], keep: frozenset[str]) -> bool:
    producer: dict[str, int] = {}
    for i, layer in enumerate(layers):
        for blob in layer.output:
            producer.setdefault(blob, i)
    consumers: list[list[int]] = [[] for _ in layers]
    producers: list[set[int]] = [set() for _ in layers]
    for j, layer in enumerate(layers):
        for blob in layer.input:
            i = producer.get(blob)
            if i is not None and i != j:
                producers[j].add(i)
                if j not in consumers[i]:
                    consumers[i].append(j)

    def only_next(i: int) -> int | None:
        if len(consumers[i]) != 1 or keep.intersection(layers[i].output):
            return None
        j = consumers[i][0]
        return j if len(producers[j]) == 1 else None

    def plain_bn(j: int) -> bool:
        return not layers[j].batchnorm.instanceNormalization

    # The order of _optimize_nn: convolutions (batchnorm, scale, bias), inner products
    # (scale, bias), then batchnorm followed by scale; one fusion per pass.
    plans: list[tuple[str, dict[str, Fusion]]] = [
        ("convolution", {"batchnorm": fold_batchnorm, "scale": fusions["scale"], "bias": fusions["bias"]}),
        ("innerProduct", {"scale": fusions["scale"], "bias": fusions["bias"]}),
        ("batchnorm", {"scale": fusions["bn_scale"]}),
    ]
    for kind, by_next in plans:
        for i, layer in enumerate(layers):
            if layer.WhichOneof("layer") != kind or (kind == "batchnorm" and not plain_bn(i)):
                continue
            j = only_next(i)
            if j is None:
                continue
            nxt = layers[j].WhichOneof("layer")
            if nxt not in by_next or (nxt == "batchnorm" and not plain_bn(j)):
                continue
            if nxt == "batchnorm" and not can_fold(layers[i].convolution, layers[j].batchnorm):
                continue
            by_next[nxt](i, j, layers)
            return True
    return False


def _floats(wp: Any) -> np.ndarray | None:
    """A WeightParams' values as float64, or None when they are quantized (not foldable)."""
    if len(wp.floatValue):
        return np.array(wp.floatValue, dtype=np.float64)
    if len(wp.float16Value):
        return np.frombuffer(wp.float16Value, dtype=np.float16).astype(np.float64)
    return None


def can_fold(conv: Any, bn: Any) -> bool:
    """Whether every value involved is a plain float and the statistics are stored
    (``computeMeanVar`` takes them from each input at run time: nothing to fold)."""
    stored = [conv.weights, *([conv.bias] if conv.hasBias else []), bn.gamma, bn.beta, bn.mean, bn.variance]
    return not bn.computeMeanVar and all(_floats(wp) is not None for wp in stored)


def _store(wp: Any, values: np.ndarray) -> None:
    wp.ClearField("float16Value")
    del wp.floatValue[:]
    wp.floatValue.extend(np.asarray(values, dtype=np.float32).reshape(-1).tolist())


def fold_batchnorm(conv_idx: int, bn_idx: int, layers: Any) -> None:
    """Fold the batchnorm at ``bn_idx`` into the convolution at ``conv_idx`` and remove it.

    ``bn(conv(x)) = factor * (W x + b - mean) + beta`` with ``factor = gamma / sqrt(var + eps)``
    per output channel: the weights of each output channel are scaled by ``factor`` and the
    bias becomes ``factor * (b - mean) + beta`` (computed in float64, stored as float32).
    """
    conv = layers[conv_idx].convolution
    bn = layers[bn_idx].batchnorm
    cout = int(conv.outputChannels)
    factor = _floats(bn.gamma) / np.sqrt(_floats(bn.variance) + float(bn.epsilon))  # type: ignore[operator]
    weights = _floats(conv.weights)
    assert weights is not None  # can_fold checked every value
    if conv.isDeconvolution:
        # Layout [C_in, C_out / groups, kH, kW]: output channel g * C_out/groups + j.
        groups = int(conv.nGroups) or 1
        per = cout // groups
        scaled = weights.reshape(groups, -1, per, int(np.prod(conv.kernelSize))) * factor.reshape(groups, 1, per, 1)
    else:
        scaled = weights.reshape(cout, -1) * factor[:, None]
    bias = _floats(conv.bias) if conv.hasBias else np.zeros(cout)
    _store(conv.weights, scaled)
    _store(conv.bias, factor * (bias - _floats(bn.mean)) + _floats(bn.beta))  # type: ignore[operator]
    conv.hasBias = True
    del layers[conv_idx].output[:]
    layers[conv_idx].output.extend(layers[bn_idx].output)
    del layers[bn_idx]
