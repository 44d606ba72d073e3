"""NeuralNetwork weight decoding: bit-for-bit equal to coremltools' own dequantization."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_coreml_quality.errors import ModelFormatError
from pytest_coreml_quality.runtime.onnx.nn_weights import unpack_codes, weight_array

torch = pytest.importorskip("torch", reason="torch builds the test models (test extra)")

from torch import nn  # noqa: E402

from pytest_coreml_quality.model import Model  # noqa: E402
from pytest_coreml_quality.runtime.base import RuntimeOptions  # noqa: E402
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend  # noqa: E402

qu = pytest.importorskip("coremltools.models.neural_network.quantization_utils")

# (nbits, mode) pairs quantize_weights accepts; linear_symmetric exists only for 8 bits.
VARIANTS = (
    [(n, "linear") for n in range(1, 9)]
    + [(n, "linear_lut") for n in range(1, 9)]
    + [(8, "linear_symmetric"), (16, "linear")]
    + [(n, "kmeans_lut") for n in (2, 4, 8)]
)


@pytest.mark.parametrize("nbits", range(1, 9))
def test_unpack_codes_inverts_coremltools_packing(nbits: int) -> None:
    rng = np.random.default_rng(nbits)
    for count in (1, 7, 8, 9, 61, 256):
        codes = rng.integers(0, 1 << nbits, size=count).astype(np.uint8)
        packed = codes.tobytes() if nbits == 8 else qu._convert_array_to_nbit_quantized_bytes(codes, nbits).tobytes()
        assert np.array_equal(unpack_codes(packed, count, nbits), codes)
        # coremltools' own (slow) unpacker agrees too.
        assert np.array_equal(qu._unpack_to_bytes(np.frombuffer(packed, np.uint8), count, nbits), codes)


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.d1 = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.fc = nn.Linear(4 * 16 * 16, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.d1(torch.relu(self.c1(x)))
        return self.fc(y.reshape(1, -1))


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    import coremltools as ct

    module = Small().eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, torch.rand(1, 3, 8, 8))
        ml = ct.convert(traced, convert_to="neuralnetwork", inputs=[ct.TensorType(name="input", shape=(1, 3, 8, 8))])
    path = tmp_path_factory.mktemp("nn-weights") / "small.mlmodel"
    ml.save(str(path))
    return ml, path


def _quantize(ml: Any, nbits: int, mode: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            q = qu.quantize_weights(ml, nbits, mode)
        except Exception as exc:  # kmeans needs a scikit-learn that coremltools supports
            if mode == "kmeans_lut":
                pytest.skip(f"coremltools cannot run kmeans_lut here ({type(exc).__name__}: {exc})")
            raise
    return q.get_spec() if hasattr(q, "get_spec") else q


def _weight_fields(spec: Any) -> list[tuple[str, Any, tuple[int, ...], int]]:
    """(label, WeightParams, shape, axis) of every weight the small model carries."""
    out = []
    for layer in spec.neuralNetwork.layers:
        kind = layer.WhichOneof("layer")
        if kind == "convolution":
            p = layer.convolution
            kh, kw = p.kernelSize
            if p.isDeconvolution:
                shape, axis = (p.kernelChannels, p.outputChannels // (p.nGroups or 1), kh, kw), 1
            else:
                shape, axis = (p.outputChannels, p.kernelChannels, kh, kw), 0
            out.append((f"{layer.name}.weights", p.weights, shape, axis))
            out.append((f"{layer.name}.bias", p.bias, (p.outputChannels,), 0))
        elif kind == "innerProduct":
            p = layer.innerProduct
            out.append((f"{layer.name}.weights", p.weights, (p.outputChannels, p.inputChannels), 0))
            out.append((f"{layer.name}.bias", p.bias, (p.outputChannels,), 0))
    return out


def _coremltools_values(wp: Any, shape: tuple[int, ...], axis: int) -> np.ndarray:
    wp = copy.deepcopy(wp)
    if len(wp.float16Value):
        return np.frombuffer(wp.float16Value, np.float16).astype(np.float32).reshape(shape)
    qu._dequantize_wp(wp, shape, axis)  # no-op for float weights
    return np.asarray(wp.floatValue, np.float32).reshape(shape)


@pytest.mark.parametrize(("nbits", "mode"), VARIANTS, ids=[f"{m}-{n}" for n, m in VARIANTS])
def test_dequantized_weights_equal_coremltools_bit_for_bit(small_model: tuple[Any, Path], nbits: int, mode: str) -> None:
    spec = _quantize(small_model[0], nbits, mode)
    fields = _weight_fields(spec)
    assert fields
    quantized = 0
    for label, wp, shape, axis in fields:
        quantized += wp.HasField("quantization") or len(wp.float16Value) > 0
        ours = weight_array(wp, shape, axis=axis)
        theirs = _coremltools_values(wp, shape, axis)
        assert ours.dtype == np.float32
        assert np.array_equal(ours.view(np.uint32), theirs.view(np.uint32)), label
    assert quantized > 0  # the variant really carries compressed weights


@pytest.mark.parametrize(("nbits", "mode"), [(8, "linear"), (4, "linear_lut"), (3, "linear"), (16, "linear")])
def test_quantized_model_matches_pytorch_with_dequantized_weights(
    small_model: tuple[Any, Path], nbits: int, mode: str, tmp_path: Path, fp32_options: RuntimeOptions
) -> None:
    import coremltools as ct

    spec = _quantize(small_model[0], nbits, mode)
    path = tmp_path / f"q{nbits}{mode}.mlmodel"
    ct.utils.save_spec(spec, str(path))
    # PyTorch module with coremltools' decompressed weights (layer order matches module order).
    module = Small().eval()
    values = {label: _coremltools_values(wp, shape, axis) for label, wp, shape, axis in _weight_fields(spec)}
    convs = [lbl for lbl in values if lbl.endswith(".weights")]
    params = [(module.c1.weight, module.c1.bias), (module.d1.weight, module.d1.bias), (module.fc.weight, module.fc.bias)]
    for lbl, (w, b) in zip(convs, params):
        w.data = torch.from_numpy(values[lbl].reshape(w.shape).copy())
        b.data = torch.from_numpy(values[lbl.replace(".weights", ".bias")].copy())
    x = np.random.default_rng(2).random((1, 3, 8, 8), dtype=np.float32)
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    model = Model.open(path)
    got = OnnxBackend().load(model, fp32_options).predict({"input": x})[model.outputs[0].name]
    assert np.abs(got.reshape(ref.shape) - ref).max() <= 1e-4


def test_float_and_fp16_weights_decode() -> None:
    from coremltools.proto import NeuralNetwork_pb2

    wp = NeuralNetwork_pb2.WeightParams()
    wp.floatValue.extend([1.0, -2.5, 3.25, 0.0])
    assert np.array_equal(weight_array(wp, (2, 2)), np.array([[1.0, -2.5], [3.25, 0.0]], np.float32))
    wp16 = NeuralNetwork_pb2.WeightParams()
    wp16.float16Value = np.array([0.1, -7.0], "<f2").tobytes()
    assert np.array_equal(weight_array(wp16, (2,)), np.array([0.1, -7.0], np.float16).astype(np.float32))


def test_wrong_weight_count_names_file_and_field() -> None:
    from coremltools.proto import NeuralNetwork_pb2

    wp = NeuralNetwork_pb2.WeightParams()
    wp.floatValue.extend([1.0, 2.0, 3.0])
    with pytest.raises(ModelFormatError) as info:
        weight_array(wp, (2, 2), path="m.mlmodel", field="layer 'conv1' convolution.weights")
    text = str(info.value)
    assert "m.mlmodel" in text and "conv1" in text and "3 values" in text and "4 values" in text


def test_truncated_quantized_bytes_are_a_clear_error() -> None:
    from coremltools.proto import NeuralNetwork_pb2

    wp = NeuralNetwork_pb2.WeightParams()
    wp.quantization.numberOfBits = 4
    wp.quantization.linearQuantization.scale.append(1.0)
    wp.quantization.linearQuantization.bias.append(0.0)
    wp.rawValue = bytes(3)  # 6 codes where 16 are needed
    with pytest.raises(ModelFormatError, match="3 bytes of 4-bit codes for 16 weights"):
        weight_array(wp, (4, 4), path="q.mlmodel")
