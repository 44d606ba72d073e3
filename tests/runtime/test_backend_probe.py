"""The onnx backend's load-time probe (issue 11 §4/§7): a graph onnxruntime builds but cannot
run fails when the model loads, with the layer named, and no raw onnxruntime log lines."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_coreml_quality.errors import UnsupportedModelError
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.base import RuntimeOptions
from pytest_coreml_quality.runtime.onnx import backend as onnx_backend
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend

ct = pytest.importorskip("coremltools")
from coremltools.models import datatypes  # noqa: E402
from coremltools.models.neural_network import NeuralNetworkBuilder  # noqa: E402


@pytest.fixture
def conv_model(tmp_path: Path) -> Path:
    """data[2,8,8] -> 3x3 conv 'dilatable' (same padding) -> out[3,8,8]."""
    b = NeuralNetworkBuilder([("data", datatypes.Array(2, 8, 8))], [("out", datatypes.Array(3, 8, 8))])
    w = np.random.default_rng(0).standard_normal((3, 3, 2, 3)).astype(np.float32)
    b.add_convolution("dilatable", 2, 3, 3, 3, 1, 1, "same", 1, w, None, False, input_name="data", output_name="out")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ct.utils.save_spec(b.spec, str(tmp_path / "conv.mlmodel"))
    return tmp_path / "conv.mlmodel"


def _with_auto_pad_and_dilation(real: Any) -> Any:
    """The real translation with its Conv rewritten the way onnxruntime refuses only at run
    time (auto_pad SAME_UPPER together with dilations): the kind of graph the probe is for."""
    from onnx import helper

    def translate(model: Model, options: RuntimeOptions) -> Any:
        proto = real(model, options)
        for node in proto.graph.node:
            if node.op_type == "Conv":
                keep = [a for a in node.attribute if a.name not in ("pads", "auto_pad", "dilations")]
                del node.attribute[:]
                node.attribute.extend([*keep, helper.make_attribute("auto_pad", "SAME_UPPER"),
                                       helper.make_attribute("dilations", [2, 2])])
        return proto

    return translate


def test_a_graph_onnxruntime_cannot_run_fails_at_load_naming_the_layer(
    conv_model: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(onnx_backend, "translate", _with_auto_pad_and_dilation(onnx_backend.translate))
    model = Model.open(conv_model)
    opts = RuntimeOptions(cache_dir=fresh_cache)
    with pytest.raises(UnsupportedModelError) as info:
        OnnxBackend().load(model, opts)
    text = str(info.value)
    assert text.startswith(f"{conv_model}: field 'layer/op 'dilatable' (Conv)': onnxruntime cannot run it: ")
    assert "Dilation not supported for AutoPadType::SAME_UPPER" in text
    # The broken entry is not left for a warm load to trust.
    assert not OnnxBackend().cache_path(model, opts).exists()
    out, err = capfd.readouterr()
    assert "onnxruntime" not in out + err  # no raw log line such as "[E:onnxruntime:, sequential_executor.cc ...]"


def test_only_a_cold_build_runs_the_probe(conv_model: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = onnx_backend.probe
    monkeypatch.setattr(onnx_backend, "probe", lambda m, s: calls.append(m.name) or real(m, s))
    model = Model.open(conv_model)
    opts = RuntimeOptions(cache_dir=fresh_cache)
    backend = OnnxBackend()
    backend.load(model, opts)
    assert calls == [model.name]
    predictor = backend.load(model, opts)  # warm: the entry was probed when it was built
    assert calls == [model.name]
    assert predictor.predict({"data": np.ones((2, 8, 8), np.float32)})["out"].shape == (3, 8, 8)
    backend.evict(model, opts)
    backend.load(model, opts)
    assert calls == [model.name, model.name]


def test_flexible_sizes_are_probed_at_the_default_size_or_not_at_all(conv_model: Path) -> None:
    model = Model.open(conv_model)  # input 'data' is a [2, 8, 8] multiarray
    assert onnx_backend.probe_shape(model, "data", [2, 8, 8]) == [2, 8, 8]
    assert onnx_backend.probe_shape(model, "data", ["c", "h", "w"]) == [2, 8, 8]  # the declared default
    assert onnx_backend.probe_shape(model, "data", ["n", 2, 8, 8]) is None  # rank differs: no guess
    assert onnx_backend.probe_shape(model, "other", ["h", "w"]) is None


def test_a_timed_cold_load_probes_after_the_clock_and_still_fails_at_load(
    conv_model: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_coreml_quality.loadtime import time_plainly

    monkeypatch.setattr(onnx_backend, "translate", _with_auto_pad_and_dilation(onnx_backend.translate))
    model = Model.open(conv_model)
    opts = RuntimeOptions(cache_dir=fresh_cache)
    with pytest.raises(UnsupportedModelError, match="layer/op 'dilatable' \\(Conv\\)': onnxruntime cannot run it"):
        time_plainly(OnnxBackend(), model, opts, "cold", rounds=1)
    assert not OnnxBackend().cache_path(model, opts).exists()  # no unprobed entry left for warm loads
