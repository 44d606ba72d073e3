"""The MIL ``classify`` op of an ML Program classifier, and its class labels read from the spec.

``ct.convert(..., classifier_config=...)`` ends an ML Program with
``classLabel, classLabel_probs = classify(probabilities=..., classes=[...])``: a string (or
int64) label and a class-probability dictionary. ONNX has neither strings nor dictionaries,
so the graph outputs the probability vector under the dictionary's name and the top-1 class
index under the label's name; the predictor builds the label and the dictionary from the
vector and the labels, exactly as for a NeuralNetworkClassifier.
"""

from __future__ import annotations

from typing import Any

from onnx import TensorProto

from pytest_coreml_quality.runtime.onnx.mil_ops.registry import MilContext, mil_op


@mil_op("classify")
def classify(ctx: MilContext, op: Any) -> list[str]:
    probs = ctx.inp(op, "probabilities")
    # Core ML's label is the class with the largest probability (first one on ties, as ArgMax).
    index = ctx.builder.node("ArgMax", [probs], name=f"{op.name}_argmax", axis=-1, keepdims=0)
    label = ctx.builder.node("Cast", [index], name=f"{op.name}_label", to=TensorProto.FLOAT)
    return [label, probs]


def mlprogram_classifier_outputs(spec: Any) -> tuple[str, str, str, list[Any]] | None:
    """(probabilities graph output, probabilities output, label output, class labels) of an
    ML Program whose ``main`` function ends in ``classify``; None for any other program.

    Read from the protobuf, so it needs neither the weights nor coremltools' MIL loader.
    """
    if spec.WhichOneof("Type") != "mlProgram" or "main" not in spec.mlProgram.functions:
        return None
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations.get(fn.opset)
    if block is None:
        block = next(iter(fn.block_specializations.values()), None)
    if block is None:
        return None
    ops = list(block.operations)
    found = next((op for op in ops if op.type == "classify"), None)
    if found is None or len(found.outputs) < 2:
        return None
    labels = _classes(found, ops)
    label_var, probs_var = found.outputs[0].name, found.outputs[1].name
    desc = spec.description
    return probs_var, desc.predictedProbabilitiesName or probs_var, desc.predictedFeatureName or label_var, labels


def _classes(op: Any, ops: list[Any]) -> list[Any]:
    """The ``classes`` list of a classify op: inline, or the ``val`` of the const op it names."""
    args = op.inputs["classes"].arguments if "classes" in op.inputs else []
    if not args:
        return []
    arg = args[0]
    if arg.HasField("value"):
        return _list_values(arg.value)
    source = next((o for o in ops if o.type == "const" and o.outputs and o.outputs[0].name == arg.name), None)
    if source is None or "val" not in source.attributes:
        return []
    return _list_values(source.attributes["val"])


def _list_values(value: Any) -> list[Any]:
    """Python labels from a MIL list value whose items are scalar string/int tensors."""
    if not value.HasField("immediateValue") or not value.immediateValue.HasField("list"):
        return []
    out: list[Any] = []
    for item in value.immediateValue.list.values:
        tensor = item.immediateValue.tensor
        which = tensor.WhichOneof("value")
        if which == "strings":
            out.extend(tensor.strings.values)
        elif which in ("ints", "longInts"):
            out.extend(int(v) for v in getattr(tensor, which).values)
        else:
            return []  # a label type Core ML classifiers do not use: treat as unreadable
    return out
