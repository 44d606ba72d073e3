"""Translate an ML Program (``.mlpackage``) into ONNX nodes.

The program is read straight from the spec's protobuf through a thin read-only view
(:mod:`.milproto`), its weights from a memory map of ``weights/weight.bin``
(:mod:`.mil_blob`), then each op of the ``main`` function is handed to its handler in
:mod:`.mil_ops`. Compressed weights (``constexpr_*`` ops) are decompressed at translation
time by :mod:`.mil_weights` and become float32 initializers. Each weight is decoded when
an op first uses it and dropped once it is an initializer, so with a builder that streams
initializers to a file (``GraphBuilder(external=...)``) no copy of all weights is alive.

coremltools' own loader (``reader="coremltools"``, its Python MIL objects) gives the same
graph; it is kept as the cross-check the tests compare against.

Contract with the backend:

* one graph input per Core ML input, named exactly as the feature: image inputs are
  float32 NCHW raw pixel values 0..255 in the colour layout's channel order (the
  program's own leading ``mul``/``add`` ops apply scale and bias); multiarray inputs are
  float32 with the declared shape (rounded to fp16 inside when the program takes fp16);
* one graph output per Core ML output, named exactly as the feature, float32.

Precision: the graph computes in float32. fp16 weights keep their fp16 values (exact in
float32); the program's ``cast`` to fp16 rounds values to the nearest fp16 and keeps
them in float32, and so does an fp16 program output. This reproduces the rounding points
the converter placed, without fp16 arithmetic in between; the backend's fp16 option
(``GraphBuilder.build(emulate_fp16=True)``) additionally rounds every op's output.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from onnx import TensorProto

from pytest_coreml_quality.errors import ModelFormatError, UnsupportedModelError
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.onnx.builder import GraphBuilder
from pytest_coreml_quality.runtime.onnx.mil_ops import (
    MIL_OPS,
    MalformedWeights,
    MilContext,
    StaticValueRequired,
    is_supported,
)
from pytest_coreml_quality.runtime.onnx.mil_ops.registry import dtype_name
from pytest_coreml_quality.runtime.onnx.milproto import BlobFiles, Function, all_ops, read_function

# Bump when a translation changes, so cached graphs from an older translator are rebuilt.
MLPROGRAM_TRANSLATOR_VERSION = 1


def translate_mlprogram(model: Model, builder: GraphBuilder, reader: str = "proto") -> None:
    """Add the ONNX translation of ``model``'s ``main`` function to ``builder``.

    Raises :class:`ModelFormatError` for a program that cannot be read (missing or
    truncated ``weight.bin``, malformed protobuf) and :class:`UnsupportedModelError`
    listing every op without a handler, before any node is added. ``reader`` picks the
    program reader: ``"proto"`` (this package's) or ``"coremltools"`` (the reference).
    """
    if reader == "coremltools":
        _translate(model, load_main_function_coremltools(model), builder)
        return
    blobs = BlobFiles(model.weights_dir)
    try:
        _translate(model, load_main_function(model, blobs), builder)
    finally:
        blobs.close()


def _translate(model: Model, func: Any, builder: GraphBuilder) -> None:
    check_supported(model, func)
    ctx = MilContext(builder)
    for out_var in func.outputs:
        builder.reserve(out_var.name)
    _add_inputs(model, func, ctx)
    for op in func.operations:
        if op.op_type == "const" or op.op_type.startswith("constexpr_"):
            continue  # materialised lazily when an op uses them
        try:
            result = MIL_OPS[op.op_type](ctx, op)
        except MalformedWeights as exc:
            raise ModelFormatError(str(exc), path=model.path, field=f"mlProgram.main.{op.name}") from None
        except (StaticValueRequired, ValueError, KeyError, IndexError, TypeError) as exc:
            raise UnsupportedModelError(
                f"{op.op_type} op '{op.name}' cannot be translated: {exc}",
                path=model.path,
                field=f"mlProgram.main.{op.name}",
            ) from None
        names = result if isinstance(result, list) else [result]
        for var, name in zip(op.outputs, names):
            ctx.bind(var, name)
        ctx.release_values()
    try:
        _add_outputs(model, func, ctx)
    except MalformedWeights as exc:
        raise ModelFormatError(str(exc), path=model.path, field="mlProgram.main") from None


def load_main_function(model: Model, blobs: BlobFiles | None = None) -> Function:
    """The protobuf view of the program's ``main`` function (weights read lazily through ``blobs``)."""
    weights = _check_program(model)
    if "main" not in model.spec.mlProgram.functions:
        raise ModelFormatError("has no 'main' function", path=model.path, field="mlProgram.functions")
    try:
        return read_function(model.spec.mlProgram.functions["main"], blobs or BlobFiles(weights))
    except (KeyError, ValueError) as exc:
        raise ModelFormatError(
            f"cannot be read as an ML Program ({exc})", path=model.path, field="mlProgram.main",
            expected="a well-formed ML Program",
        ) from None


def _check_program(model: Model) -> Path | None:
    """The weights folder of an ML Program; a clear error for other kinds or a missing weight.bin."""
    if model.kind != "mlProgram":
        raise ModelFormatError(
            f"is a {model.kind} model, not an ML Program", path=model.path, field="Type", expected="mlProgram"
        )
    weights = model.weights_dir
    blob = None if weights is None else weights / "weight.bin"
    if blob is not None and _uses_blob(model) and not blob.is_file():
        raise ModelFormatError(
            "is missing its weights file", path=blob, expected="weights/weight.bin inside the .mlpackage"
        )
    return weights


def load_main_function_coremltools(model: Model) -> Any:
    """The ``main`` function as coremltools' Python MIL objects (the reference reader)."""
    weights = _check_program(model)
    blob = None if weights is None else weights / "weight.bin"
    try:
        from coremltools.converters.mil.frontend.milproto import load as milproto_load

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prog = milproto_load.load(
                model.spec,
                specification_version=model.spec.specificationVersion,
                file_weights_dir=str(weights) if weights is not None else "",
            )
    except Exception as exc:  # the loader raises many types for a damaged program/blob
        where = blob if blob is not None and blob.is_file() else model.path
        raise ModelFormatError(
            f"cannot be read as an ML Program ({type(exc).__name__}: {exc})",
            path=where,
            expected="a well-formed ML Program and weight.bin",
        ) from None
    if "main" not in prog.functions:
        raise ModelFormatError("has no 'main' function", path=model.path, field="mlProgram.functions")
    return prog.functions["main"]


# TensorFlow-style dynamic control flow and tensor lists: no static ONNX graph to translate to.
_CONTROL_FLOW = frozenset({"cond", "while_loop", "make_list", "list_length", "list_read", "list_write",
                           "list_gather", "list_scatter"})
_MAX_NAMED_OPS = 10


def check_supported(model: Model, func: Any) -> None:
    """Raise one :class:`UnsupportedModelError` naming every untranslatable op type (and op)."""
    ops = [op for op in all_ops(func.operations) if not is_supported(op.op_type)]
    if not ops:
        return
    types = list(dict.fromkeys(op.op_type for op in ops))
    named = ", ".join(f"{op.op_type} '{op.name}'" for op in ops[:_MAX_NAMED_OPS])
    if len(ops) > _MAX_NAMED_OPS:
        named += f", ... and {len(ops) - _MAX_NAMED_OPS} more"
    message = (f"uses {len(ops)} ML Program op(s) this runtime cannot translate (op types: {', '.join(types)}): "
               f"{named}")
    flow = [t for t in types if t in _CONTROL_FLOW or t.startswith("list_")]
    if flow:
        message += (f"; {', '.join(flow)} {'is' if len(flow) == 1 else 'are'} TensorFlow-style control flow, "
                    "which has no static ONNX graph")
    raise UnsupportedModelError(
        message, path=model.path, field="mlProgram.main",
        expected=f"op types among the {len(MIL_OPS)} the onnx runtime translates; the coreml backend on macOS runs every op",
    )


def _uses_blob(model: Model) -> bool:
    """Whether any op of the spec reads a value from ``weight.bin``."""
    for fn in model.spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            for op in block.operations:
                for value in op.attributes.values():
                    if value.HasField("blobFileValue"):
                        return True
    return False


def _add_inputs(model: Model, func: Any, ctx: MilContext) -> None:
    declared = {f.name: f for f in model.inputs}
    for name, var in func.inputs.items():
        shape = [d if isinstance(d, int) else str(d) for d in var.shape]
        feature = declared.get(name)
        static = not any(isinstance(d, str) for d in shape)
        if feature is not None and feature.is_multiarray and feature.shape and static:
            if tuple(feature.shape) != tuple(shape):
                raise ModelFormatError(
                    f"input '{name}' is declared with shape {feature.shape} but the program takes {tuple(shape)}",
                    path=model.path,
                    field=f"description.input.{name}",
                )
        ctx.builder.add_input(name, TensorProto.FLOAT, shape)
        value = name
        dtype = dtype_name(var)
        if dtype == "fp16":
            value = ctx.round_fp16(name, f"{name}_fp16")
        elif dtype.startswith("int"):
            value = ctx.builder.node("Cast", [name], name=f"{name}_int", to=TensorProto.INT32)
        ctx.bind(var, value)


def _add_outputs(model: Model, func: Any, ctx: MilContext) -> None:
    for var in func.outputs:
        src = ctx.x(var)
        if var.op is not None and var.op.op_type == "classify":
            # The label (as its class index) and the probability vector: see mil_ops.classify.
            ctx.builder.identity(src, var.name)
            ctx.builder.add_output(var.name, TensorProto.FLOAT)
            continue
        dtype = dtype_name(var)
        if dtype == "fp16" and var.op is not None and var.op.op_type != "cast":
            src = ctx.round_fp16(src, f"{var.name}_out16")
        elif dtype != "fp32" and dtype != "fp16":
            src = ctx.builder.node("Cast", [src], name=f"{var.name}_f32", to=TensorProto.FLOAT)
        ctx.builder.identity(src, var.name)
        shape = [d if isinstance(d, int) else str(d) for d in var.shape]
        ctx.builder.add_output(var.name, TensorProto.FLOAT, shape)


__all__ = [
    "MLPROGRAM_TRANSLATOR_VERSION", "check_supported", "load_main_function", "load_main_function_coremltools",
    "translate_mlprogram",
]
