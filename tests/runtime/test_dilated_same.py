"""Dilated convolutions with ``same`` padding (issue 11 §4), both model kinds.

onnxruntime refuses ONNX ``auto_pad=SAME_*`` together with dilations, so the translators
must emit explicit pads. References: torch's own ``padding="same"`` for stride 1, and for
stride 2 an explicit zero padding whose amounts are worked out by hand from Core ML's
definition (output = ceil(size / stride); an odd total goes to the end, or to the start
for TOP_LEFT_HEAVY / ``same_lower``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.base import RuntimeOptions
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend

ct = pytest.importorskip("coremltools")
torch = pytest.importorskip("torch")
F = torch.nn.functional

C_IN, C_OUT, H, W = 2, 3, 8, 9
TOL = 1e-4

# (kernel, stride, heavy_begin) -> (top, bottom, left, right) for an 8x9 input and dilation 2,
# by hand: kernel 4 spans 7 pixels, kernel 3 spans 5.
#   k4 s2: H out 4 -> total 3*2+7-8 = 5; W out 5 -> total 4*2+7-9 = 6
#   k3 s2: H out 4 -> total 3*2+5-8 = 3; W out 5 -> total 4*2+5-9 = 4
HAND_PADS = {
    (4, 2, False): (2, 3, 3, 3),
    (4, 2, True): (3, 2, 3, 3),
    (3, 2, False): (1, 2, 2, 2),
    (3, 2, True): (2, 1, 2, 2),
}
CASES = [(3, 1, False), (4, 1, False), (3, 1, True), *HAND_PADS]


def _weights(k: int) -> np.ndarray:
    """[C_out, C_in, k, k] in the torch/MIL layout."""
    return np.random.default_rng(k).uniform(-1, 1, (C_OUT, C_IN, k, k)).astype(np.float32)


def _reference(x: np.ndarray, w: np.ndarray, k: int, stride: int, heavy_begin: bool) -> np.ndarray:
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    with torch.no_grad():
        if stride == 1:  # dilation 2: the total (2 * (k - 1)) is even, so both modes agree
            return F.conv2d(xt, wt, padding="same", dilation=2).numpy()
        top, bottom, left, right = HAND_PADS[(k, stride, heavy_begin)]
        return F.conv2d(F.pad(xt, (left, right, top, bottom)), wt, stride=stride, dilation=2).numpy()


def _out_size(stride: int) -> tuple[int, int]:
    return -(-H // stride), -(-W // stride)


def _save(spec_or_model: Any, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if hasattr(spec_or_model, "save"):
            spec_or_model.save(str(path))
        else:
            ct.utils.save_spec(spec_or_model, str(path))
    return path


def _neuralnetwork(k: int, stride: int, heavy_begin: bool, path: Path) -> Path:
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    oh, ow = _out_size(stride)
    b = NeuralNetworkBuilder([("x", datatypes.Array(C_IN, H, W))], [("y", datatypes.Array(C_OUT, oh, ow))])
    b.add_convolution(
        "dilated", kernel_channels=C_IN, output_channels=C_OUT, height=k, width=k, stride_height=stride,
        stride_width=stride, border_mode="same", groups=1, W=_weights(k).transpose(2, 3, 1, 0), b=None,
        has_bias=False, input_name="x", output_name="y", dilation_factors=[2, 2],
        same_padding_asymmetry_mode="TOP_LEFT_HEAVY" if heavy_begin else "BOTTOM_RIGHT_HEAVY",
    )
    return _save(b.spec, path)


def _mlprogram(k: int, stride: int, heavy_begin: bool, path: Path) -> Path:
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, C_IN, H, W))], opset_version=ct.target.iOS16)
    def prog(x: Any) -> Any:
        return mb.conv(x=x, weight=_weights(k), strides=[stride, stride], dilations=[2, 2],
                       pad_type="same_lower" if heavy_begin else "same", name="y")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
                           compute_precision=ct.precision.FLOAT32)
    return _save(model, path)


@pytest.mark.parametrize("kind", ["neuralnetwork", "mlprogram"])
@pytest.mark.parametrize(("k", "stride", "heavy_begin"), CASES)
def test_dilated_same_convolution_matches_reference(
    kind: str, k: int, stride: int, heavy_begin: bool, tmp_path: Path, fp32_options: RuntimeOptions
) -> None:
    build = _neuralnetwork if kind == "neuralnetwork" else _mlprogram
    path = build(k, stride, heavy_begin, tmp_path / ("m.mlmodel" if kind == "neuralnetwork" else "m.mlpackage"))
    model = Model.open(path)
    x = np.random.default_rng(7).uniform(-1, 1, (1, C_IN, H, W)).astype(np.float32)
    name = model.inputs[0].name
    out = OnnxBackend().load(model, fp32_options).predict({name: x if kind == "mlprogram" else x[0]})
    got = np.asarray(next(iter(out.values())), dtype=np.float32).reshape(1, C_OUT, *_out_size(stride))
    ref = _reference(x, _weights(k), k, stride, heavy_begin)
    assert ref.shape == got.shape
    assert np.abs(got - ref).max() <= TOL * max(1.0, float(np.abs(ref).max()))
