"""Translate a NeuralNetwork spec (plain, classifier/regressor wrapper, or a pipeline of
them) into an ONNX graph, one registered handler per layer type (see ``nn_layers``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto

from pytest_coreml_quality.errors import ModelFormatError, UnsupportedModelError
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.onnx.builder import GraphBuilder
from pytest_coreml_quality.runtime.onnx.nn_layers import HANDLERS, LayerContext

NETWORK_KINDS = ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor")
PIPELINE_KINDS = ("pipeline", "pipelineClassifier", "pipelineRegressor")

_GRAY = (10, 40)  # ImageFeatureType.ColorSpace GRAYSCALE, GRAYSCALE_FLOAT16
_BGR = 30


def networks_of(spec: Any) -> list[tuple[Any, Any]]:
    """(stage spec, network) for a NeuralNetwork spec or each stage of a pipeline."""
    kind = spec.WhichOneof("Type")
    if kind in NETWORK_KINDS:
        return [(spec, getattr(spec, kind))]
    if kind in PIPELINE_KINDS:
        pipe = getattr(spec, kind)
        pipe = pipe.pipeline if kind != "pipeline" else pipe
        out: list[tuple[Any, Any]] = []
        for stage in pipe.models:
            out.extend(networks_of(stage))
        return out
    return []


# Why a pipeline stage of this kind cannot run here, and what would run it.
_STAGE_REASONS = {
    "nonMaximumSuppression": "non-maximum suppression (object-detection post-processing) has no ONNX "
                             "translation here; the coreml backend on macOS runs it",
    "visionFeaturePrint": "a Vision feature print is built into Apple's operating systems (Apple-only): "
                          "it needs the coreml backend on macOS",
    "glmClassifier": "GLM classifiers have no ONNX translation here; the coreml backend on macOS runs them",
    "customModel": "a custom model{cls} needs its Swift implementation, which exists only in the app",
    "mlProgram": "ML Program stages inside a pipeline are not translated yet; the coreml backend on macOS runs them",
}
_OTHER_STAGE = "'{kind}' models have no ONNX translation here; the coreml backend on macOS runs them"


def _stage_problem(index: int, stage: Any) -> str:
    kind = stage.WhichOneof("Type")
    cls = f" (class {stage.customModel.className})" if kind == "customModel" and stage.customModel.className else ""
    reason = _STAGE_REASONS.get(kind, _OTHER_STAGE).format(kind=kind, cls=cls)
    outputs = ", ".join(f.name for f in stage.description.output)
    return f"stage {index} '{kind}'{f' (outputs: {outputs})' if outputs else ''}: {reason}"


def unsupported_layers(spec: Any) -> list[str]:
    """Every layer (or pipeline stage) this translator cannot run, as 'type (layer name)'
    or 'stage i 'kind' (outputs): why' for a pipeline stage that is not a NeuralNetwork."""
    problems: list[str] = []
    kind = spec.WhichOneof("Type")
    if kind in PIPELINE_KINDS:
        pipe = getattr(spec, kind)
        pipe = pipe.pipeline if kind != "pipeline" else pipe
        for i, stage in enumerate(pipe.models):
            stage_kind = stage.WhichOneof("Type")
            if stage_kind in NETWORK_KINDS or stage_kind in PIPELINE_KINDS:
                problems.extend(unsupported_layers(stage))
            else:
                problems.append(_stage_problem(i, stage))
        return problems
    if kind not in NETWORK_KINDS:
        return [f"model type '{kind}'"]
    for layer in getattr(spec, kind).layers:
        t = layer.WhichOneof("layer")
        if t == "custom":
            cls = f" (class {layer.custom.className})" if layer.custom.className else ""
            problems.append(f"'custom' (layer '{layer.name}'): a custom layer{cls} needs its Swift implementation, "
                            "which exists only in the app")
        elif t not in HANDLERS:
            problems.append(f"'{t}' (layer '{layer.name}')")
    return problems


def translate_neuralnetwork(model: Model, builder: GraphBuilder) -> None:
    """Add ``model``'s inputs, layers and outputs to ``builder``.

    Raises :class:`UnsupportedModelError` listing every unsupported layer or pipeline stage
    before any translation work, and :class:`ModelFormatError` for malformed specs.
    """
    problems = unsupported_layers(model.spec)
    stages = [p for p in problems if p.startswith("stage ")]
    layers = [p for p in problems if not p.startswith("stage ")]
    if stages:
        more = f"; and {len(layers)} layer(s) it cannot translate: {', '.join(layers)}" if layers else ""
        raise UnsupportedModelError(
            f"has {len(stages)} pipeline stage(s) the onnx runtime cannot run: {'; '.join(stages)}{more}",
            path=model.path,
            field=f"{model.kind}.models",
            expected="pipeline stages that are NeuralNetworks",
        )
    if layers:
        only_custom = all(p.startswith("'custom' ") for p in layers)
        raise UnsupportedModelError(
            f"uses {len(layers)} layer(s) the onnx runtime cannot translate: {', '.join(layers)}",
            path=model.path,
            field=f"{model.kind}.layers",
            expected="layers Core ML itself defines (a custom layer runs only inside the app that implements it)"
            if only_custom else f"layer types among: {', '.join(sorted(HANDLERS))}",
        )
    ctx = LayerContext(builder, model.path, model.spec_version)
    for f in model.outputs:  # claim the exact output names before generated names can take them
        if f.is_image or f.is_multiarray:
            builder.reserve(f.name)
    env: dict[str, str] = {}
    for f in model.inputs:
        if f.is_image:
            c = f.channels or 3
            if not (f.width and f.height):
                raise ModelFormatError("image input has no size", path=model.path,
                                       field=f"input '{f.name}'", expected="a width and a height")
            shape = (1, c, int(f.height), int(f.width))
        elif f.is_multiarray:
            shape = tuple(f.shape)
            if not shape:
                raise UnsupportedModelError("multiarray input has no declared shape", path=model.path,
                                            field=f"input '{f.name}'", expected="a default shape")
        else:
            raise UnsupportedModelError(f"input of type '{f.type}'", path=model.path, field=f"input '{f.name}'",
                                        expected="image or multiarray inputs")
        builder.add_input(f.name, TensorProto.FLOAT, list(shape))
        ctx.shapes.declare(f.name, TensorProto.FLOAT, shape)
        env[f.name] = f.name
    for stage, net in networks_of(model.spec):
        _translate_network(ctx, stage, net, env)
    classifier = classifier_outputs(model.spec)
    if classifier is not None:
        # The class-probability dictionary is computed from this blob (see OnnxPredictor).
        probs_blob, probs_name, _, _ = classifier
        if probs_blob not in env:
            raise ModelFormatError("no layer produces the class probabilities", path=model.path,
                                   field="neuralNetworkClassifier.labelProbabilityLayerName",
                                   expected=f"a layer output named '{probs_blob}'")
        builder.identity(env[probs_blob], builder.reserve(probs_name))
        builder.add_output(probs_name, TensorProto.FLOAT)
    for f in model.outputs:
        if not (f.is_image or f.is_multiarray):
            continue  # classifier labels/dictionaries are not tensors
        if f.name not in env:
            raise ModelFormatError("no layer produces this output", path=model.path, field=f"output '{f.name}'",
                                   expected="a layer whose output has this name")
        value = env[f.name]
        if f.is_multiarray and f.shape:
            got = ctx.shape(value)
            if tuple(got) != tuple(f.shape) and int(np.prod(got)) == int(np.prod(f.shape)):
                ctx.layer = _OutputLayer(f.name)
                value = ctx.reshape(value, f.shape)
        builder.identity(value, f.name)
        builder.add_output(f.name, TensorProto.FLOAT)


def classifier_outputs(spec: Any) -> tuple[str, str, str, list[Any]] | None:
    """(probability blob, probabilities output, label output, class labels) of a classifier."""
    if spec.WhichOneof("Type") == "mlProgram":
        from pytest_coreml_quality.runtime.onnx.mil_ops.classify import mlprogram_classifier_outputs

        return mlprogram_classifier_outputs(spec)
    if spec.WhichOneof("Type") != "neuralNetworkClassifier":
        return None
    net = spec.neuralNetworkClassifier
    which = net.WhichOneof("ClassLabels")
    labels = list(getattr(net, which).vector) if which else []
    blob = net.labelProbabilityLayerName or (net.layers[-1].output[0] if net.layers else "")
    desc = spec.description
    probs_name = desc.predictedProbabilitiesName or f"{blob}_probabilities"
    return blob, probs_name, desc.predictedFeatureName, labels


class _OutputLayer:
    """Stand-in 'layer' so helper nodes for outputs get readable names."""

    def __init__(self, name: str) -> None:
        self.name = f"{name}_out"

    def WhichOneof(self, _: str) -> str:  # noqa: N802 - mirrors the protobuf API
        return "output"


def _translate_network(ctx: LayerContext, stage: Any, net: Any, env: dict[str, str]) -> None:
    local = dict(env)
    _apply_preprocessing(ctx, stage, net, local)
    _apply_rank5_mapping(ctx, stage, net, local)
    for layer in net.layers:
        ctx.layer = layer
        missing = [i for i in layer.input if i not in local]
        if missing:
            raise ModelFormatError(
                f"reads {', '.join(repr(m) for m in missing)}, which no earlier layer or input produces",
                path=ctx.path, field=f"layer '{layer.name}'.input", expected="inputs produced by earlier layers")
        try:
            outs = HANDLERS[layer.WhichOneof("layer")](ctx, layer, [local[i] for i in layer.input])
        except (ModelFormatError, UnsupportedModelError):
            raise
        except Exception as exc:  # parameters the handler cannot make sense of: name the layer
            raise ctx.format_error(
                f"has parameters that cannot be translated ({type(exc).__name__}: {exc})",
                expected="parameters consistent with NeuralNetwork.proto and the input shapes",
            ) from exc
        outs = [outs] if isinstance(outs, str) else list(outs)
        if len(outs) != len(layer.output):
            raise ctx.format_error(f"declares {len(layer.output)} outputs", expected=f"{len(outs)} outputs")
        for name, value in zip(layer.output, outs):
            local[name] = value
    for f in stage.description.output:
        if f.name in local:
            env[f.name] = local[f.name]


def _apply_preprocessing(ctx: LayerContext, stage: Any, net: Any, env: dict[str, str]) -> None:
    """Scaler / mean-image preprocessing of image inputs, as Core ML applies it before layer 1."""
    images = {i.name: i.type.imageType for i in stage.description.input if i.type.WhichOneof("Type") == "imageType"}
    for pre in net.preprocessing:
        name = pre.featureName or (next(iter(images)) if len(images) == 1 else "")
        if name not in images or name not in env:
            continue
        ctx.layer = _OutputLayer(f"{name}_preprocess")
        x = env[name]
        which = pre.WhichOneof("preprocessor")
        if which == "scaler":
            sc = pre.scaler
            space = images[name].colorSpace
            if space in _GRAY:
                bias = [sc.grayBias]
            elif space == _BGR:
                bias = [sc.blueBias, sc.greenBias, sc.redBias]
            else:
                bias = [sc.redBias, sc.greenBias, sc.blueBias]
            scale = sc.channelScale if sc.channelScale != 0 else 1.0
            if scale != 1.0:
                x = ctx.node("Mul", [x, ctx.const(np.float32(scale), name="scale")])
            if any(b != 0 for b in bias):
                x = ctx.node("Add", [x, ctx.const(np.asarray(bias, np.float32).reshape(-1, 1, 1), name="bias")])
        elif which == "meanImage":
            mean = np.asarray(pre.meanImage.meanImage, np.float32)
            _, c, h, w = ctx.shape(x)
            if mean.size != c * h * w:
                raise ModelFormatError(f"mean image has {mean.size} values", path=ctx.path,
                                       field=f"preprocessing '{name}'.meanImage", expected=f"{c * h * w} (C*H*W)")
            x = ctx.node("Sub", [x, ctx.const(mean.reshape(c, h, w), name="mean")])
        env[name] = x


def _apply_rank5_mapping(ctx: LayerContext, stage: Any, net: Any, env: dict[str, str]) -> None:
    """Legacy specs see rank-1 / rank-3 multiarrays as [C,1,1] / [C,H,W] blobs with a batch axis."""
    if net.arrayInputShapeMapping != 0:
        return
    for f in stage.description.input:
        if f.type.WhichOneof("Type") != "multiArrayType" or f.name not in env:
            continue
        shape = [int(d) for d in f.type.multiArrayType.shape]
        if len(shape) in (1, 3) and ctx.shape(env[f.name]) == tuple(shape):
            ctx.layer = _OutputLayer(f"{f.name}_rank5")
            env[f.name] = ctx.reshape(env[f.name], [1, shape[0], 1, 1] if len(shape) == 1 else [1, *shape])
