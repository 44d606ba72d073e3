"""Compression that changes nothing: say so instead of showing a silent ratio of 1.000.

coremltools compresses only float weights: ``quantize_weights`` skips NeuralNetwork weights
already stored as fp16 or quantized, and ``coremltools.optimize.coreml`` skips ML Program
weights already palettized, quantized or sparse (and tensors below its ``weight_threshold``).
A recipe applied to such a model returns it (nearly) as it was. :func:`weight_encodings`
tells how each model stores its weights; :func:`compression_note` compares the base with
the built variant and words what happened, e.g. ``q8: no change, weights already 8-bit (LUT)``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from pytest_coreml_quality.variants.recipes import NNQuantize, Recipe
from pytest_coreml_quality.variants.summary import _weight_params, final_weight_chains

#: The encodings each family's compressions take as input; anything else is skipped.
NN_COMPRESSIBLE = frozenset({"float32"})
ML_COMPRESSIBLE = frozenset({"float32", "fp16"})
#: Below this share of compressed weights (and with already-compressed weights in the base),
#: the variant is "mostly unchanged" and the note says how little was compressed.
MOSTLY_UNCHANGED = 0.5

# ML Program ops that produce a weight, and how the weight is stored.
_ML_OPS = {
    "constexpr_lut_to_dense": "palettized",
    "constexpr_affine_dequantize": "linear-quantized",
    "constexpr_blockwise_shift_scale": "linear-quantized",
    "constexpr_sparse_to_dense": "sparse",
    "constexpr_cast": "fp16",
    # joint compression (iOS18): the nonzero values of a sparse weight, palettized or quantized
    "constexpr_lut_to_sparse": "palettized",
    "constexpr_sparse_blockwise_shift_scale": "linear-quantized",
}
_ENCODING_ORDER = ["sparse", "palettized", "linear-quantized", "fp16"]


@dataclass(frozen=True)
class CompressionNote:
    """What a recipe did to the weights: ``unchanged`` when it compressed none of them."""

    unchanged: bool
    note: str  # '' when the recipe compressed the weights as one would expect


def weight_encodings(spec: Any) -> dict[str, int]:
    """Parameters per storage encoding (``float32``, ``fp16``, ``8-bit (LUT)``...) of a model spec."""
    counts: Counter[str] = Counter()
    if spec.WhichOneof("Type") == "mlProgram":
        for label, count in _ml_weights(spec):
            counts[label] += count
        return dict(counts)
    for wp in _weight_params(spec):
        label, count = _nn_encoding(wp)
        if count:
            counts[label] += count
    return dict(counts)


def _nn_encoding(wp: Any) -> tuple[str, int]:
    if len(wp.floatValue):
        return "float32", len(wp.floatValue)
    if len(wp.float16Value):
        return "fp16", len(wp.float16Value) // 2
    q = wp.quantization
    kind = {"linearQuantization": "linear", "lookupTableQuantization": "LUT"}.get(q.WhichOneof("QuantizationType") or "", "")
    nbits = q.numberOfBits or 8
    label = f"{nbits}-bit ({kind})" if kind else f"{nbits}-bit"
    if len(wp.int8RawValue):
        return label, len(wp.int8RawValue)
    return label, len(wp.rawValue) * 8 // nbits


def _ml_weights(spec: Any) -> list[tuple[str, int]]:
    """(encoding, elements) of every weight an ML Program finally computes.

    The encoding names every compression of the weight's constexpr chain, so a joint
    compression (``sparse, palettized``) is told from the single one it started from.
    """
    out = []
    for ops, dtype, count in final_weight_chains(spec):
        if ops == ("const",):
            out.append(("fp16" if dtype == "FLOAT16" else "float32", count))
            continue
        names = [_ML_OPS.get(op_type, op_type) for op_type in ops if op_type != "constexpr_cast"] or ["fp16"]
        out.append((", ".join(sorted(set(names), key=_encoding_rank)), count))
    return out


def _encoding_rank(name: str) -> tuple[int, str]:
    return (_ENCODING_ORDER.index(name) if name in _ENCODING_ORDER else len(_ENCODING_ORDER), name)


def compression_note(recipe: Recipe, base: dict[str, int], variant: dict[str, int], identical: bool = False) -> CompressionNote:
    """Compare the base's weight encodings with the variant's and word the outcome.

    A weight counts as compressed when its encoding's count went down (float32 turned
    8-bit, or 8-bit LUT re-quantized to 4-bit). ``identical`` says the variant's file has
    the base's very bytes. A recipe that compressed no weight (or only a small share next
    to already-compressed ones) gets a note naming how the weights were already stored and,
    for a recipe with fewer bits, why they stayed so; re-quantized weights are named too.
    """
    compressible = ML_COMPRESSIBLE if recipe.family == "mlProgram" else NN_COMPRESSIBLE
    dropped = {label: n - variant.get(label, 0) for label, n in base.items() if n > variant.get(label, 0)}
    compressed = 0 if identical else sum(dropped.values())
    already = {label: n for label, n in base.items() if label not in compressible and label not in dropped and n}
    # NeuralNetwork weights of fewer bits are dequantized and re-quantized; on an ML Program a
    # dropped compressed encoding is a joint compression on top of it (prune50+pal4 on sparse weights).
    requantized = {} if recipe.family == "mlProgram" else {label: n for label, n in dropped.items() if label not in compressible}
    total = sum(base.values())
    if compressed == 0:
        if already:
            return CompressionNote(True, f"{recipe.name}: no change, weights already {_labels(already)}{_why(recipe, already)}")
        skipped = "; coremltools skips tensors smaller than its weight_threshold" if recipe.family == "mlProgram" else ""
        return CompressionNote(True, f"{recipe.name}: no change, no weight was compressed{skipped}")
    if already and total and compressed / total < MOSTLY_UNCHANGED:
        share = 100 * compressed / total
        return CompressionNote(
            False, f"{recipe.name}: only {share:.0f}% of weights compressed, the rest already {_labels(already)}{_why(recipe, already)}"
        )
    if requantized:
        step = recipe.steps[0] if recipe.steps else None
        target = f" to {step.nbits}-bit" if isinstance(step, NNQuantize) else ""
        return CompressionNote(False, f"{recipe.name}: weights already {_labels(requantized)} were dequantized, then re-quantized{target}")
    return CompressionNote(False, "")


def _labels(counts: dict[str, int]) -> str:
    """'8-bit (LUT)', or '8-bit (LUT) and fp16' (most weights first)."""
    ordered = [label for label, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]
    return ordered[0] if len(ordered) == 1 else ", ".join(ordered[:-1]) + " and " + ordered[-1]


def _bits(label: str) -> int | None:
    if label == "fp16":
        return 16
    head = label.split("-bit", 1)[0]
    return int(head) if head.isdigit() else None


def _why(recipe: Recipe, already: dict[str, int]) -> str:
    """Why a recipe that would store fewer bits than the model does left those weights alone."""
    step = recipe.steps[0] if recipe.steps else None
    if isinstance(step, NNQuantize):
        target = step.nbits
        if any((bits := _bits(label)) is not None and bits > target for label in already):
            return f" (stored in a layout this tool cannot dequantize; quantize the float model to get {target}-bit)"
        return ""
    if recipe.family == "mlProgram":
        return " (coremltools.optimize.coreml skips compressed weights; decompress_weights() the model first to re-compress)"
    return ""
