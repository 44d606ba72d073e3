"""Weight summaries: how many weights a model has and how many bytes store them.

*Parameters* are the weights of the uncompressed network (compression keeps their number);
*weight bytes* are what the file spends on them, lookup tables, scales and sparsity masks
included. ``bits_per_weight = weight_bytes * 8 / parameters``: 32 for an fp32
NeuralNetwork, about 16 for an fp16 ML Program, about 4 after 4-bit palettization.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pytest_coreml_quality.cachefs import path_size
from pytest_coreml_quality.model import Model

_FLOAT_DTYPES = frozenset({"FLOAT16", "FLOAT32", "FLOAT64", "BFLOAT16"})


@dataclass(frozen=True)
class WeightSummary:
    """Parameter count and the bytes spent storing them."""

    parameters: int
    weight_bytes: int

    @property
    def bits_per_weight(self) -> float:
        return self.weight_bytes * 8 / self.parameters if self.parameters else 0.0


def weight_summary(model: Model) -> WeightSummary:
    """Summarise ``model``'s weights (NeuralNetwork, pipeline of them, or ML Program)."""
    if model.kind == "mlProgram":
        weights_dir = model.weights_dir
        stored = path_size(weights_dir) if weights_dir is not None and weights_dir.exists() else 0
        return WeightSummary(parameters=_mlprogram_parameters(model.spec), weight_bytes=stored)
    parameters = 0
    stored = 0
    for wp in _weight_params(model.spec):
        count, nbytes = _weight_param_size(wp)
        parameters += count
        stored += nbytes
    return WeightSummary(parameters=parameters, weight_bytes=stored)


# --- NeuralNetwork ------------------------------------------------------------------------


def _weight_params(message: Any) -> Iterator[Any]:
    """Every ``WeightParams`` message set anywhere under ``message`` (layers, nested networks)."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        # A single message has ListFields; a repeated field is a container of messages.
        values = [value] if hasattr(value, "ListFields") else list(value)
        if field.message_type.name == "WeightParams":
            yield from values
        elif field.message_type.full_name.startswith("CoreML.Specification."):
            for v in values:
                if hasattr(v, "ListFields"):  # maps of scalars yield keys, not messages
                    yield from _weight_params(v)


def _weight_param_size(wp: Any) -> tuple[int, int]:
    """(weights, stored bytes) of one ``WeightParams``."""
    if len(wp.floatValue):
        return len(wp.floatValue), 4 * len(wp.floatValue)
    if len(wp.float16Value):
        return len(wp.float16Value) // 2, len(wp.float16Value)
    if len(wp.int8RawValue):
        return len(wp.int8RawValue), len(wp.int8RawValue)
    raw = len(wp.rawValue)
    q = wp.quantization
    nbits = q.numberOfBits or 8
    extra = 4 * (len(q.linearQuantization.scale) + len(q.linearQuantization.bias) + len(q.lookupTableQuantization.floatValue))
    # Packed sub-byte weights are padded to whole bytes, so this may count up to 7 extra.
    return raw * 8 // nbits, raw + extra


# --- ML Program ---------------------------------------------------------------------------


def _mlprogram_parameters(spec: Any) -> int:
    """Elements of the float tensors that ``const``/``constexpr_*`` ops finally produce."""
    return sum(count for _, _, count in final_weight_tensors(spec))


def final_weight_tensors(spec: Any) -> list[tuple[str, str, int]]:
    """(producing op type, float dtype name, elements) of every weight an ML Program finally computes.

    A compressed weight is a chain (indices, lookup table -> ``constexpr_lut_to_dense`` ->
    dense weight); only the last link, which no other constexpr consumes, is listed.
    """
    return [(op.type, dtype, count) for op, dtype, count, _ in _final_weights(spec)]


def final_weight_chains(spec: Any) -> list[tuple[tuple[str, ...], str, int]]:
    """Like :func:`final_weight_tensors`, with every constexpr op type of each weight's chain.

    A jointly compressed weight ends in the same op as a singly compressed one (pruned, or
    pruned then palettized: both end in ``constexpr_sparse_to_dense``); the chain tells them
    apart: ``("constexpr_sparse_to_dense", "constexpr_lut_to_sparse")``, final op first.
    """
    return [(chain, dtype, count) for _, dtype, count, chain in _final_weights(spec)]


def _final_weights(spec: Any) -> list[tuple[Any, str, int, tuple[str, ...]]]:
    """(op, float dtype name, elements, constexpr chain) of every final weight."""
    from coremltools.proto import MIL_pb2

    produced: dict[str, tuple[Any, str, int]] = {}
    producer: dict[str, Any] = {}  # every constexpr output, whatever its type (masks, indices)
    consumed_by_constexpr: set[str] = set()
    for op in _operations(spec.mlProgram):
        if op.type != "const" and not op.type.startswith("constexpr_"):
            continue
        if op.type.startswith("constexpr_"):
            for arg in op.inputs.values():
                consumed_by_constexpr.update(a.name for a in arg.arguments)
        for out in op.outputs:
            if op.type.startswith("constexpr_"):
                producer[out.name] = op
            tensor = out.type.tensorType
            if out.type.WhichOneof("type") != "tensorType" or tensor.rank < 1:
                continue
            dtype = MIL_pb2.DataType.Name(tensor.dataType)
            if dtype not in _FLOAT_DTYPES:
                continue
            count = 1
            for dim in tensor.dimensions:
                count *= int(dim.constant.size)
            produced[out.name] = (op, dtype, count)

    def chain(op: Any, seen: set[str]) -> list[str]:
        types = [op.type]
        for arg in op.inputs.values():
            for a in arg.arguments:
                inner = producer.get(a.name)
                if inner is not None and a.name not in seen:
                    seen.add(a.name)
                    types += [t for t in chain(inner, seen) if t not in types]
        return types

    return [
        (op, dtype, count, tuple(chain(op, {name})) if op.type.startswith("constexpr_") else (op.type,))
        for name, (op, dtype, count) in produced.items()
        if name not in consumed_by_constexpr
    ]


def _operations(program: Any) -> Iterator[Any]:
    for function in program.functions.values():
        for block in function.block_specializations.values():
            yield from _block_operations(block)


def _block_operations(block: Any) -> Iterator[Any]:
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from _block_operations(inner)
