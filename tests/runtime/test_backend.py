"""The onnx backend's cache and errors, and backend selection (``get_backend``)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_coreml_quality.cachefs import DIGEST_FILE, CacheRepairWarning
from pytest_coreml_quality.errors import BackendUnavailableError, ModelFormatError, UnsupportedModelError
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime import coreml_available, get_backend
from pytest_coreml_quality.runtime.base import Backend, RuntimeOptions
from pytest_coreml_quality.runtime.onnx import backend as onnx_backend
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend

ct = pytest.importorskip("coremltools")
from coremltools.models import datatypes  # noqa: E402
from coremltools.models.neural_network import NeuralNetworkBuilder  # noqa: E402


def _save(builder: Any, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ct.utils.save_spec(builder.spec, str(path))
    return path


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    """data[2,4,4] -> 3x3 conv (same padding) -> relu -> out[3,4,4]."""
    b = NeuralNetworkBuilder([("data", datatypes.Array(2, 4, 4))], [("out", datatypes.Array(3, 4, 4))])
    w = np.random.default_rng(0).standard_normal((3, 3, 2, 3)).astype(np.float32)  # builder layout: kH, kW, Cin, Cout
    b.add_convolution("conv", 2, 3, 3, 3, 1, 1, "same", 1, w, None, False, input_name="data", output_name="c")
    b.add_activation("relu", "RELU", "c", "out")
    return _save(b, tmp_path / "tiny.mlmodel")


def _x() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((2, 4, 4)).astype(np.float32)


# --- cache --------------------------------------------------------------------------------


def test_cold_load_writes_cache_and_warm_load_reuses_it(tiny_model: Path, fresh_cache: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    model = Model.open(tiny_model)
    opts = RuntimeOptions(cache_dir=fresh_cache)
    backend = OnnxBackend()
    calls = []
    real = onnx_backend.translate
    monkeypatch.setattr(onnx_backend, "translate", lambda m, o: calls.append(1) or real(m, o))
    first = backend.load(model, opts)
    entry = backend.cache_path(model, opts)
    assert entry.is_dir() and entry.parent == fresh_cache / "onnx"
    assert sorted(p.name for p in entry.iterdir()) == sorted([DIGEST_FILE, onnx_backend.GRAPH_FILE, onnx_backend.WEIGHTS_FILE])
    assert model.content_hash[:40] in entry.name and onnx_backend.TRANSLATOR_VERSION in entry.name
    second = backend.load(model, opts)
    assert calls == [1]  # the warm load did not translate again
    assert np.array_equal(first.predict({"data": _x()})["out"], second.predict({"data": _x()})["out"])
    assert [p.name for p in (fresh_cache / "onnx").iterdir() if not p.name.endswith(".lock")] == [entry.name]


def test_evict_makes_the_next_load_cold(tiny_model: Path, fresh_cache: Path) -> None:
    model = Model.open(tiny_model)
    opts = RuntimeOptions(cache_dir=fresh_cache)
    backend = OnnxBackend()
    backend.load(model, opts)
    backend.evict(model, opts)
    assert not backend.cache_path(model, opts).exists()
    backend.evict(model, opts)  # evicting twice is fine
    backend.load(model, opts)
    assert (backend.cache_path(model, opts) / onnx_backend.GRAPH_FILE).is_file()


def test_precisions_have_separate_entries(tiny_model: Path, fresh_cache: Path) -> None:
    model = Model.open(tiny_model)
    backend = OnnxBackend()
    p32 = backend.cache_path(model, RuntimeOptions(cache_dir=fresh_cache))
    p16 = backend.cache_path(model, RuntimeOptions(cache_dir=fresh_cache, precision="fp16"))
    assert p32 != p16


def test_a_corrupt_cache_entry_is_rebuilt(tiny_model: Path, fresh_cache: Path) -> None:
    model = Model.open(tiny_model)
    opts = RuntimeOptions(cache_dir=fresh_cache)
    backend = OnnxBackend()
    expected = backend.load(model, opts).predict({"data": _x()})["out"]
    (backend.cache_path(model, opts) / onnx_backend.GRAPH_FILE).write_bytes(b"\x08garbage")
    with pytest.warns(CacheRepairWarning, match="ignored and rebuilt: its content does not match its digest"):
        again = backend.load(model, opts).predict({"data": _x()})["out"]
    assert np.array_equal(expected, again)


@pytest.mark.parametrize("missing", ["graph", "weights", "both"])
def test_a_half_present_cache_entry_is_a_miss_and_is_rebuilt(tiny_model: Path, fresh_cache: Path, missing: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    model = Model.open(tiny_model)
    opts = RuntimeOptions(cache_dir=fresh_cache)
    backend = OnnxBackend()
    expected = backend.load(model, opts).predict({"data": _x()})["out"]
    entry = backend.cache_path(model, opts)
    if missing in ("graph", "both"):
        (entry / onnx_backend.GRAPH_FILE).unlink()
    if missing in ("weights", "both"):
        (entry / onnx_backend.WEIGHTS_FILE).unlink()
    calls = []
    real = onnx_backend.translate
    monkeypatch.setattr(onnx_backend, "translate", lambda m, o: calls.append(1) or real(m, o))
    with pytest.warns(CacheRepairWarning, match="is missing|are missing"):
        again = backend.load(model, opts).predict({"data": _x()})["out"]
    assert calls == [1]  # rebuilt, not trusted
    assert np.array_equal(expected, again)
    assert sorted(p.name for p in entry.iterdir()) == sorted([DIGEST_FILE, onnx_backend.GRAPH_FILE, onnx_backend.WEIGHTS_FILE])


def test_a_build_killed_midway_leaves_no_entry(tiny_model: Path, fresh_cache: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash after the graph is written but before the entry is renamed into place."""
    model = Model.open(tiny_model)
    opts = RuntimeOptions(cache_dir=fresh_cache)
    backend = OnnxBackend()
    real = backend._session_options

    def boom(level: str):
        if level == "ORT_ENABLE_EXTENDED":
            raise KeyboardInterrupt  # like a kill during the onnxruntime optimisation
        return real(level)

    monkeypatch.setattr(backend, "_session_options", boom)
    with pytest.raises(KeyboardInterrupt):
        backend.load(model, opts)
    entry = backend.cache_path(model, opts)
    assert not entry.exists()
    assert [p.name for p in (fresh_cache / "onnx").iterdir() if not p.name.endswith(".lock")] == []
    monkeypatch.undo()
    assert backend.load(model, opts).predict({"data": _x()})["out"].shape == (3, 4, 4)


def test_external_weights_are_used_for_large_initializers(tmp_path: Path, fresh_cache: Path) -> None:
    b = NeuralNetworkBuilder([("data", datatypes.Array(4, 4, 4))], [("out", datatypes.Array(16, 4, 4))])
    w = np.random.default_rng(0).standard_normal((3, 3, 4, 16)).astype(np.float32)  # 2.3 kB, Core ML's HWIO
    b.add_convolution("conv", 4, 16, 3, 3, 1, 1, "same", 1, w, None, False, input_name="data", output_name="out")
    model = Model.open(_save(b, tmp_path / "wide.mlmodel"))
    opts = RuntimeOptions(cache_dir=fresh_cache)
    backend = OnnxBackend()
    x = np.random.default_rng(2).standard_normal((4, 4, 4)).astype(np.float32)
    out = backend.load(model, opts).predict({"data": x})["out"]
    entry = backend.cache_path(model, opts)
    assert (entry / onnx_backend.WEIGHTS_FILE).stat().st_size >= w.nbytes
    assert (entry / onnx_backend.GRAPH_FILE).stat().st_size < w.nbytes
    warm = OnnxBackend().load(model, opts).predict({"data": x})["out"]
    assert np.array_equal(out, warm)


def test_outputs_match_a_direct_numpy_computation(tiny_model: Path, fresh_cache: Path) -> None:
    model = Model.open(tiny_model)
    out = OnnxBackend().load(model, RuntimeOptions(cache_dir=fresh_cache)).predict({"data": _x()})["out"]
    conv = model.spec.neuralNetwork.layers[0].convolution
    w = np.asarray(conv.weights.floatValue, np.float32).reshape(3, 2, 3, 3)
    xp = np.pad(_x(), ((0, 0), (1, 1), (1, 1)))
    ref = np.zeros((3, 4, 4), np.float32)
    for i in range(4):
        for j in range(4):
            ref[:, i, j] = np.einsum("oikl,ikl->o", w, xp[:, i:i + 3, j:j + 3])
    assert out.shape == (3, 4, 4) and out.dtype == np.dtype(model.output("out").dtype)  # declared dtype
    assert np.abs(out - np.maximum(ref, 0)).max() < 1e-5


# --- errors -------------------------------------------------------------------------------


def test_unsupported_layers_are_all_listed_before_prediction(tmp_path: Path, fresh_cache: Path) -> None:
    from coremltools.proto import NeuralNetwork_pb2

    b = NeuralNetworkBuilder([("data", datatypes.Array(2, 4, 4))], [("out", datatypes.Array(2, 4, 4))])
    custom = NeuralNetwork_pb2.CustomLayerParams()
    custom.className = "MyFancyOp"
    b.add_custom("fancy", ["data"], ["f"], custom_proto_spec=custom)
    b.add_activation("relu", "RELU", "f", "r")
    b.add_random_normal_like("random", "r", "out")
    path = _save(b, tmp_path / "exotic.mlmodel")
    with pytest.raises(UnsupportedModelError) as info:
        OnnxBackend().load(Model.open(path), RuntimeOptions(cache_dir=fresh_cache))
    text = str(info.value)
    assert "exotic.mlmodel" in text
    assert "'custom' (layer 'fancy')" in text and "'randomNormalLike' (layer 'random')" in text
    assert "relu" not in text.split("expected")[0]  # supported layers are not reported
    if (fresh_cache / "onnx").exists():  # no entry, no leftover scratch directory
        assert [p.name for p in (fresh_cache / "onnx").iterdir() if not p.name.endswith(".lock")] == []


def test_truncated_mlmodel_is_a_format_error(tiny_model: Path, tmp_path: Path) -> None:
    data = tiny_model.read_bytes()
    broken = tmp_path / "broken.mlmodel"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError) as info:
        OnnxBackend().load(Model.open(broken), RuntimeOptions(cache_dir=tmp_path / "c"))
    assert "broken.mlmodel" in str(info.value)


def test_weights_that_do_not_fit_the_layer_are_a_format_error(tiny_model: Path, tmp_path: Path) -> None:
    spec = ct.utils.load_spec(str(tiny_model))
    del spec.neuralNetwork.layers[0].convolution.weights.floatValue[-5:]
    path = tmp_path / "short.mlmodel"
    ct.utils.save_spec(spec, str(path))
    with pytest.raises(ModelFormatError) as info:
        OnnxBackend().load(Model.open(path), RuntimeOptions(cache_dir=tmp_path / "c"))
    text = str(info.value)
    assert "short.mlmodel" in text and "layer 'conv'" in text and "49 values" in text and "54 values" in text


def test_layer_reading_an_unknown_blob_is_a_format_error(tiny_model: Path, tmp_path: Path) -> None:
    spec = ct.utils.load_spec(str(tiny_model))
    spec.neuralNetwork.layers[1].input[0] = "nowhere"
    path = tmp_path / "dangling.mlmodel"
    ct.utils.save_spec(spec, str(path))
    with pytest.raises(ModelFormatError, match="layer 'relu'.*'nowhere'"):
        OnnxBackend().load(Model.open(path), RuntimeOptions(cache_dir=tmp_path / "c"))


def test_wrong_array_shape_is_a_clear_error(tiny_model: Path, fresh_cache: Path) -> None:
    predictor = OnnxBackend().load(Model.open(tiny_model), RuntimeOptions(cache_dir=fresh_cache))
    with pytest.raises(Exception) as info:
        predictor.predict({"data": np.zeros((3, 4, 4), np.float32)})
    assert "tiny.mlmodel" in str(info.value) and "[3, 4, 4]" in str(info.value) and "[2, 4, 4]" in str(info.value)


def test_ml_programs_dispatch_to_the_mil_translator_or_fail_clearly(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(torch.nn.ReLU().eval(), torch.rand(1, 2, 4, 4))
        ml = ct.convert(traced, convert_to="mlprogram", inputs=[ct.TensorType(name="x", shape=(1, 2, 4, 4))],
                        minimum_deployment_target=ct.target.iOS16)
    path = tmp_path / "relu.mlpackage"
    ml.save(str(path))
    model = Model.open(path)
    try:
        translate = onnx_backend.translator_for(model)
    except UnsupportedModelError as exc:
        assert "relu.mlpackage" in str(exc) and "ML Program" in str(exc)
    else:
        assert translate.__name__ == "translate_mlprogram"


# --- backend selection --------------------------------------------------------------------


def test_auto_picks_onnx_where_core_ml_cannot_run() -> None:
    backend = get_backend("auto")
    assert isinstance(backend, Backend)
    assert backend.name == ("coreml" if coreml_available() else "onnx")
    assert get_backend("onnx").name == "onnx"


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML is available on macOS")
def test_coreml_off_macos_is_a_clear_error() -> None:
    with pytest.raises(BackendUnavailableError) as info:
        get_backend("coreml")
    text = str(info.value)
    assert "coreml backend" in text and sys.platform in text and "macOS" in text and "onnx" in text


def test_unknown_backend_name_is_rejected() -> None:
    with pytest.raises(BackendUnavailableError, match="unknown backend 'tensorrt'.*auto or coreml or onnx"):
        get_backend("tensorrt")


def test_coreml_compute_units_are_validated() -> None:
    from pytest_coreml_quality.runtime.coreml import COMPUTE_UNITS, compute_unit

    assert [compute_unit(u).name for u in COMPUTE_UNITS] == list(COMPUTE_UNITS)
    with pytest.raises(BackendUnavailableError, match="unknown compute units 'GPU'"):
        compute_unit("GPU")


def test_coreml_backend_keeps_one_compiled_copy_per_model(tiny_model: Path, tmp_path: Path) -> None:
    from pytest_coreml_quality.runtime.coreml import CoreMLBackend

    model = Model.open(tiny_model)
    backend = CoreMLBackend()
    path = backend.compiled_path(model, RuntimeOptions(cache_dir=tmp_path, compute_units="CPU_ONLY"))
    assert path == backend.compiled_path(model, RuntimeOptions(cache_dir=tmp_path))  # units do not change the copy
    assert path.suffix == ".mlmodelc" and path.parent == tmp_path / "coreml"
    path.mkdir(parents=True)
    backend.evict(model, RuntimeOptions(cache_dir=tmp_path))
    assert not path.exists()


# --- wrappers: classifier, pipeline ---------------------------------------------------------


def test_classifier_wrapper_returns_probabilities_and_label(tmp_path: Path, fresh_cache: Path) -> None:
    b = NeuralNetworkBuilder([("data", datatypes.Array(3))], [("probs", None)], mode="classifier")
    w = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, -1.0]], np.float32)
    b.add_inner_product("fc", w, None, 3, 3, False, "data", "logits")
    b.add_softmax("sm", "logits", "probs")
    b.set_class_labels(["cat", "dog", "bird"], predicted_feature_name="label", prediction_blob="probs")
    path = _save(b, tmp_path / "cls.mlmodel")
    out = OnnxBackend().load(Model.open(path), RuntimeOptions(cache_dir=fresh_cache)).predict(
        {"data": np.array([0.5, 1.0, 0.2], np.float32)})
    logits = w @ np.array([0.5, 1.0, 0.2])
    ref = np.exp(logits) / np.exp(logits).sum()
    probs = out[Model.open(path).spec.description.predictedProbabilitiesName]
    assert set(probs) == {"cat", "dog", "bird"}
    assert np.allclose([probs["cat"], probs["dog"], probs["bird"]], ref, atol=1e-6)
    assert out["label"] == "dog"


def test_pipeline_of_two_networks_runs_stage_after_stage(tmp_path: Path, fresh_cache: Path) -> None:
    from coremltools.models.pipeline import Pipeline

    first = NeuralNetworkBuilder([("data", datatypes.Array(2, 4, 4))], [("mid", datatypes.Array(2, 4, 4))])
    first.add_elementwise("scale", ["data"], "mid", "MULTIPLY", alpha=3.0)
    second = NeuralNetworkBuilder([("mid", datatypes.Array(2, 4, 4))], [("out", datatypes.Array(2, 4, 4))])
    second.add_unary("exp", "mid", "out", "exp")
    pipe = Pipeline([("data", datatypes.Array(2, 4, 4))], [("out", datatypes.Array(2, 4, 4))])
    pipe.add_model(first.spec)
    pipe.add_model(second.spec)
    path = tmp_path / "pipe.mlmodel"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ct.utils.save_spec(pipe.spec, str(path))
    model = Model.open(path)
    assert model.kind == "pipeline"
    out = OnnxBackend().load(model, RuntimeOptions(cache_dir=fresh_cache)).predict({"data": _x()})["out"]
    assert np.allclose(out, np.exp(3 * _x()), rtol=1e-6)


def test_inconsistent_layer_parameters_name_the_layer(tiny_model: Path, tmp_path: Path) -> None:
    spec = ct.utils.load_spec(str(tiny_model))
    conv = spec.neuralNetwork.layers[0].convolution
    conv.kernelChannels = 5  # the input has 2 channels; weights no longer match either
    path = tmp_path / "inconsistent.mlmodel"
    ct.utils.save_spec(spec, str(path))
    with pytest.raises(ModelFormatError) as info:
        OnnxBackend().load(Model.open(path), RuntimeOptions(cache_dir=tmp_path / "c"))
    text = str(info.value)
    assert "inconsistent.mlmodel" in text and "conv" in text
