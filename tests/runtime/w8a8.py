"""Make a W8A8 ML Program on Linux: coremltools' ``linear_quantize_activations`` calibrates by
running the model with Core ML (macOS only), so the activation ranges come from this
package's ONNX translation instead, and coremltools' own passes insert the quantize /
dequantize pairs from them, as that function does; weights then go through
``linear_quantize_weights`` (no run needed)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
from onnx import TensorProto, helper

from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.onnx.builder import GraphBuilder
from pytest_coreml_quality.runtime.onnx.mil_ops.registry import MilContext, dtype_name
from pytest_coreml_quality.runtime.onnx.mlprogram import translate_mlprogram


def activation_ranges(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """``{var name: {"rmin", "rmax"}}`` of every float input and op output, on ``feeds``."""
    import onnxruntime as ort

    bound: dict[str, str] = {}
    original = MilContext.bind

    def recording(self: MilContext, var: Any, name: str) -> None:
        if dtype_name(var) in ("fp16", "fp32"):
            bound[var.name] = name
        original(self, var, name)

    builder = GraphBuilder(name=path.stem)
    with mock.patch.object(MilContext, "bind", recording):
        translate_mlprogram(Model.open(path), builder)
    proto = builder.build()
    outputs = {o.name for o in proto.graph.output}
    for onnx_name in set(bound.values()) - outputs:
        proto.graph.output.append(helper.make_tensor_value_info(onnx_name, TensorProto.FLOAT, None))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(None, {k: np.asarray(v, np.float32) for k, v in feeds.items()})))
    values.update(feeds)
    return {
        mil: {"rmin": float(np.min(values[onnx])), "rmax": float(np.max(values[onnx]))}
        for mil, onnx in {**bound, **{k: k for k in feeds}}.items()
        if onnx in values
    }


def quantize_w8a8(src: Path, dst: Path, feeds: dict[str, np.ndarray]) -> Path:
    """Save the W8A8 version of the ML Program ``src`` (int8 symmetric activations and weights)."""
    import coremltools as ct
    import coremltools.optimize as cto
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY
    from coremltools.converters.mil.mil.passes.graph_pass import PassOption
    from coremltools.models import utils as model_utils

    config = cto.coreml.OptimizationConfig(global_config=cto.coreml.OpLinearQuantizerConfig(mode="linear_symmetric"))
    stats = activation_ranges(src, feeds)
    passes = []
    for name in ("insert_prefix_quantize_dequantize_pair", "insert_suffix_quantize_dequantize_pair"):
        graph_pass = PASS_REGISTRY[f"compression::{name}"]
        graph_pass.set_options([PassOption("config", config), PassOption("activation_stats", stats)])
        passes.append(graph_pass)
    passes.append(PASS_REGISTRY["common::dequantize_quantize_pair_elimination"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlmodel = ct.models.MLModel(str(src), skip_model_load=True)
        a8 = model_utils._apply_graph_pass(
            mlmodel, passes, spec_version=ct._SPECIFICATION_VERSION_IOS_17,
            pymil_load_func=milproto_load, skip_model_load=True,
        )  # fmt: skip
        # Every weight, however small (the default threshold skips tiny test layers).
        weights = cto.coreml.OptimizationConfig(
            global_config=cto.coreml.OpLinearQuantizerConfig(mode="linear_symmetric", weight_threshold=1)
        )
        w8a8 = cto.coreml.linear_quantize_weights(a8, weights)
    w8a8.save(str(dst))
    return dst
