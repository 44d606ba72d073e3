"""Layer types coremltools never emits from PyTorch, built with ``NeuralNetworkBuilder``
and compared with numpy (or torch) references written from NeuralNetwork.proto."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.base import RuntimeOptions
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend

ct = pytest.importorskip("coremltools")
from coremltools.models import datatypes  # noqa: E402
from coremltools.models.neural_network import NeuralNetworkBuilder  # noqa: E402

SHAPE = (3, 6, 8)  # legacy [C, H, W] blob
TOL = 1e-5


def _x(seed: int = 0, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, SHAPE).astype(np.float32)


def run_layer(
    add: Callable[[Any], None], out_shape: tuple[int, ...], x: np.ndarray, tmp_path: Path, options: RuntimeOptions
) -> np.ndarray:
    """A one-input network of the layers ``add`` appends, ending in blob 'out'."""
    builder = NeuralNetworkBuilder([("data", datatypes.Array(*x.shape))], [("out", datatypes.Array(*out_shape))])
    add(builder)
    path = tmp_path / "layer.mlmodel"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ct.utils.save_spec(builder.spec, str(path))
    model = Model.open(path)
    out = OnnxBackend().load(model, options).predict({"data": x})["out"]
    assert out.shape == out_shape
    return out


def check(got: np.ndarray, ref: np.ndarray, tol: float = TOL) -> None:
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert np.abs(got - ref).max() <= tol * max(1.0, np.abs(ref).max())


# --- crop, padding ------------------------------------------------------------------------


def test_crop_one_input(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    x = _x()
    got = run_layer(lambda b: b.add_crop("crop", 1, 2, 1, 0, [0, 0], ["data"], "out"), (3, 5, 5), x, tmp_path,
                    fp32_options)
    check(got, x[:, 1:, 1:-2])


def test_crop_with_reference_input(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    x = _x()

    def add(b: Any) -> None:
        b.add_load_constant("ref", "ref", np.zeros(3 * 3 * 4), (3, 3, 4))
        b.add_crop("crop", 0, 0, 0, 0, [1, 2], ["data", "ref"], "out")

    check(run_layer(add, (3, 3, 4), x, tmp_path, fp32_options), x[:, 1:4, 2:6])


@pytest.mark.parametrize(("kind", "np_mode"), [("constant", "constant"), ("reflection", "reflect"),
                                               ("replication", "edge")])
def test_padding_modes(kind: str, np_mode: str, tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    x = _x()
    got = run_layer(lambda b: b.add_padding("pad", left=2, right=1, top=1, bottom=3, value=0.5, input_name="data",
                                            output_name="out", padding_type=kind), (3, 10, 11), x, tmp_path,
                    fp32_options)
    kwargs = {"constant_values": 0.5} if np_mode == "constant" else {}
    check(got, np.pad(x, ((0, 0), (1, 3), (2, 1)), mode=np_mode, **kwargs))


# --- normalisation ------------------------------------------------------------------------


@pytest.mark.parametrize("across", [True, False])
@pytest.mark.parametrize("variance", [True, False])
def test_mvn(across: bool, variance: bool, tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    x = _x(1)
    got = run_layer(lambda b: b.add_mvn("mvn", "data", "out", across, variance, 1e-4), SHAPE, x, tmp_path,
                    fp32_options)
    axes = (0, 1, 2) if across else (1, 2)
    ref = x - x.mean(axis=axes, keepdims=True)
    if variance:
        ref = ref / np.sqrt((ref**2).mean(axis=axes, keepdims=True) + 1e-4)
    check(got, ref, 1e-4)


def test_l2normalize(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    x = _x(2)
    got = run_layer(lambda b: b.add_l2_normalize("l2", "data", "out", 1e-6), SHAPE, x, tmp_path, fp32_options)
    check(got, x / np.sqrt((x**2).sum() + 1e-6))


def test_lrn(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    x = _x(3)
    got = run_layer(lambda b: b.add_lrn("lrn", "data", "out", alpha=0.3, beta=0.75, local_size=3, k=2.0), SHAPE, x,
                    tmp_path, fp32_options)
    sq = np.pad(x**2, ((1, 1), (0, 0), (0, 0)))
    window = sq[:-2] + sq[1:-1] + sq[2:]
    check(got, x / (2.0 + 0.3 / 3 * window) ** 0.75)


def test_softmax_over_channels(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    x = _x(4)
    got = run_layer(lambda b: b.add_softmax("sm", "data", "out"), SHAPE, x, tmp_path, fp32_options)
    e = np.exp(x - x.max(axis=0))
    check(got, e / e.sum(axis=0))


# --- resizing -----------------------------------------------------------------------------


def _grid(method: str, size_in: int, n: int) -> np.ndarray:
    """SamplingMode grids as NeuralNetwork.proto defines them."""
    x = float(size_in)
    if method == "STRICT_ALIGN_ENDPOINTS_MODE":
        g = np.linspace(0, x - 1, n)
    elif method == "ALIGN_ENDPOINTS_MODE":
        g = np.array([(x - 1) / 2]) if n == 1 else np.linspace(0, x - 1, n)
    elif method == "UPSAMPLE_MODE":
        g = np.minimum(x - 1, np.linspace(0, x - x / n, n))
    else:
        spacing = max(1.0, x - 1) / n
        g = np.minimum(x - 1, np.linspace(0.5 * spacing, 0.5 * spacing + (n - 1) * spacing, n))
    return g


def _bilinear(x: np.ndarray, gy: np.ndarray, gx: np.ndarray) -> np.ndarray:
    def lerp(a: np.ndarray, g: np.ndarray, axis: int) -> np.ndarray:
        lo = np.floor(g).astype(int)
        hi = np.minimum(lo + 1, a.shape[axis] - 1)
        f = (g - lo).reshape([-1 if i == axis else 1 for i in range(a.ndim)])
        return np.take(a, lo, axis) * (1 - f) + np.take(a, hi, axis) * f

    return lerp(lerp(x.astype(np.float64), gy, 1), gx, 2)


@pytest.mark.parametrize("method", ["STRICT_ALIGN_ENDPOINTS_MODE", "ALIGN_ENDPOINTS_MODE", "UPSAMPLE_MODE",
                                    "ROI_ALIGN_MODE"])
@pytest.mark.parametrize("target", [(5, 11), (13, 4), (1, 3)])
def test_resize_bilinear_sampling_modes(method: str, target: tuple[int, int], tmp_path: Path,
                                        fp32_options: RuntimeOptions) -> None:
    x = _x(5)
    got = run_layer(lambda b: b.add_resize_bilinear("rb", "data", "out", target[0], target[1], method),
                    (3, *target), x, tmp_path, fp32_options)
    check(got, _bilinear(x, _grid(method, 6, target[0]), _grid(method, 8, target[1])), 1e-5)


@pytest.mark.parametrize(("mode", "linear_mode"), [("NN", "DEFAULT"), ("BILINEAR", "DEFAULT"),
                                                   ("BILINEAR", "ALIGN_CORNERS_TRUE"),
                                                   ("BILINEAR", "ALIGN_CORNERS_FALSE")])
def test_upsample_modes(mode: str, linear_mode: str, tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    x = _x(6)
    got = run_layer(lambda b: b.add_upsample("up", 2, 3, "data", "out", mode=mode, linear_upsample_mode=linear_mode),
                    (3, 12, 24), x, tmp_path, fp32_options)
    if mode == "NN":
        ref = x.repeat(2, axis=1).repeat(3, axis=2)
    else:
        def grid(size: int, s: int) -> np.ndarray:
            i = np.arange(size * s, dtype=np.float64)
            if linear_mode == "DEFAULT":
                g = i / s
            elif linear_mode == "ALIGN_CORNERS_TRUE":
                g = i * (size - 1) / (size * s - 1)
            else:
                g = (i + 0.5) / s - 0.5
            return np.clip(g, 0, size - 1)

        ref = _bilinear(x, grid(6, 2), grid(8, 3))
    check(got, ref)


# --- elementwise and unary ------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "fn"), [
    ("sqrt", lambda v: np.sqrt(v)), ("rsqrt", lambda v: 1 / np.sqrt(v + 1e-3)), ("inverse", lambda v: 1 / (v + 1e-3)),
    ("power", lambda v: v**1.7), ("exp", np.exp), ("log", np.log), ("abs", np.abs),
    ("threshold", lambda v: np.maximum(v, 1.2)),
])
def test_unary(mode: str, fn: Callable[[np.ndarray], np.ndarray], tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    x = _x(7, 0.1, 2.0)
    got = run_layer(lambda b: b.add_unary("u", "data", "out", mode, alpha=1.7 if mode == "power" else 1.2,
                                          shift=0.25, scale=1.5, epsilon=1e-3), SHAPE, x, tmp_path, fp32_options)
    check(got, fn(1.5 * x + 0.25), 1e-5)


@pytest.mark.parametrize(("mode", "fn"), [("ADD", np.add), ("MULTIPLY", np.multiply), ("MAX", np.maximum),
                                          ("MIN", np.minimum), ("AVE", lambda a, b: (a + b) / 2)])
def test_elementwise_two_inputs_with_broadcast(mode: str, fn: Any, tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    x = _x(8)
    other = np.random.default_rng(9).uniform(-1, 1, (1, 6, 8)).astype(np.float32)

    def add(b: Any) -> None:
        b.add_load_constant("c", "c", other.ravel(), (1, 6, 8))
        b.add_elementwise("e", ["data", "c"], "out", mode)

    check(run_layer(add, SHAPE, x, tmp_path, fp32_options), fn(x, other))


def test_scale_and_bias(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    x = _x(10)
    s = np.array([0.5, -2.0, 3.0], np.float32)
    b1 = np.array([0.1, 0.2, -0.3], np.float32)
    b2 = np.random.default_rng(11).random((1, 6, 8)).astype(np.float32)

    def add(b: Any) -> None:
        b.add_scale("s", s, b1, True, "data", "scaled", shape_scale=[3], shape_bias=[3])
        b.add_bias("b", b2.ravel(), "scaled", "out", shape_bias=[1, 6, 8])

    check(run_layer(add, SHAPE, x, tmp_path, fp32_options), x * s[:, None, None] + b1[:, None, None] + b2)


@pytest.mark.parametrize(("kind", "params", "fn"), [
    ("LINEAR", [0.5, -1.0], lambda v: 0.5 * v - 1.0),
    ("SCALED_TANH", [1.7, 0.6], lambda v: 1.7 * np.tanh(0.6 * v)),
    ("THRESHOLDEDRELU", 0.25, lambda v: np.where(v >= 0.25, v, 0)),
    ("SIGMOID_HARD", [0.3, 0.4], lambda v: np.clip(0.3 * v + 0.4, 0, 1)),
    ("SOFTSIGN", None, lambda v: v / (1 + np.abs(v))),
    ("PARAMETRICSOFTPLUS", [np.array([1.0, 2.0, 0.5]), np.array([0.5, 1.0, 2.0])],
     lambda v: np.array([1.0, 2.0, 0.5])[:, None, None]
     * np.log1p(np.exp(np.array([0.5, 1.0, 2.0])[:, None, None] * v))),
])
def test_activation_params(kind: str, params: Any, fn: Any, tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    x = _x(12) * 3
    got = run_layer(lambda b: b.add_activation("a", kind, "data", "out", params), SHAPE, x, tmp_path, fp32_options)
    check(got, fn(x.astype(np.float64)))


# --- reductions ---------------------------------------------------------------------------

_AXES = {"CHW": (0, 1, 2), "HW": (1, 2), "C": (0,), "H": (1,), "W": (2,)}
_REDUCE = {
    "sum": np.sum, "avg": np.mean, "prod": np.prod, "sumsquare": lambda v, axis, keepdims: np.sum(v**2, axis, keepdims=keepdims),
    "L1": lambda v, axis, keepdims: np.sum(np.abs(v), axis, keepdims=keepdims),
    "L2": lambda v, axis, keepdims: np.sqrt(np.sum(v**2, axis, keepdims=keepdims)),
    "max": np.max, "min": np.min,
    "logsum": lambda v, axis, keepdims: np.sum(np.log(v + 1e-6), axis, keepdims=keepdims),
}


@pytest.mark.parametrize("mode", sorted(_REDUCE))
@pytest.mark.parametrize("axis", ["CHW", "HW", "C", "W"])
def test_reduce(mode: str, axis: str, tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    x = _x(13, 0.5, 1.5)
    ref = _REDUCE[mode](x.astype(np.float64), axis=_AXES[axis], keepdims=True)
    got = run_layer(lambda b: b.add_reduce("r", "data", "out", axis, mode), ref.shape, x, tmp_path, fp32_options)
    check(got, ref, 1e-5)


def test_reduce_argmax(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    x = _x(14)
    got = run_layer(lambda b: b.add_reduce("r", "data", "out", "C", "argmax"), (1, 6, 8), x, tmp_path, fp32_options)
    check(got, x.argmax(axis=0)[None].astype(np.float32))


# --- data movement ------------------------------------------------------------------------


def test_permute(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    x = _x(15)
    got = run_layer(lambda b: b.add_permute("p", (0, 3, 2, 1), "data", "out"), (8, 6, 3), x, tmp_path, fp32_options)
    check(got, x.transpose(2, 1, 0))


@pytest.mark.parametrize("mode", [0, 1])
def test_reshape_channel_first_and_last(mode: int, tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    x = _x(16)
    got = run_layer(lambda b: b.add_reshape("r", "data", "out", (4, 2, 18), mode), (4, 2, 18), x, tmp_path,
                    fp32_options)
    ref = x.reshape(4, 2, 18) if mode == 0 else x.transpose(1, 2, 0).reshape(2, 18, 4).transpose(2, 0, 1)
    check(got, ref)


@pytest.mark.parametrize("mode", [0, 1])
def test_flatten(mode: int, tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    x = _x(17)
    got = run_layer(lambda b: b.add_flatten("f", mode, "data", "out"), (144, 1, 1), x, tmp_path, fp32_options)
    ref = x.reshape(-1) if mode == 0 else x.transpose(1, 2, 0).reshape(-1)
    check(got, ref.reshape(144, 1, 1))


def test_split_and_slice(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    x = _x(18)

    def add(b: Any) -> None:
        b.add_split("s", "data", ["s0", "s1", "s2"])
        b.add_elementwise("sum", ["s0", "s2"], "s02", "ADD")
        b.add_slice("sl", "s02", "out", "width", start_index=1, end_index=-1, stride=2)

    check(run_layer(add, (1, 6, 3), x, tmp_path, fp32_options), (x[0:1] + x[2:3])[:, :, 1:-1:2])


@pytest.mark.parametrize(("kind", "padding"), [("MAX", "INCLUDE_LAST_PIXEL"), ("AVERAGE", "INCLUDE_LAST_PIXEL"),
                                               ("MAX", "SAME"), ("AVERAGE", "SAME"), ("L2", "VALID")])
def test_pooling_padding_modes(kind: str, padding: str, tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    x = _x(19, 0.0, 1.0)
    t = torch.from_numpy(x[None])
    if padding == "INCLUDE_LAST_PIXEL":
        pool = F.max_pool2d if kind == "MAX" else F.avg_pool2d
        extra = {} if kind == "MAX" else {"count_include_pad": False}
        ref = pool(t, 3, stride=2, padding=1, ceil_mode=True, **extra)[0].numpy()
        pads = {"padding_top": 1, "padding_bottom": 1, "padding_left": 1, "padding_right": 1}
    elif padding == "SAME":
        # stride 2, kernel 3 on 6x8: total padding 1 in both axes, at the bottom/right.
        padded = F.pad(t, (0, 1, 0, 1), value=float("-inf") if kind == "MAX" else 0.0)
        if kind == "MAX":
            ref = F.max_pool2d(padded, 3, stride=2)[0].numpy()
        else:
            ones = F.pad(torch.ones_like(t), (0, 1, 0, 1))
            ref = (F.avg_pool2d(padded, 3, stride=2) / F.avg_pool2d(ones, 3, stride=2))[0].numpy()
        pads = {}
    else:
        ref = F.lp_pool2d(t, 2, 2, stride=2)[0].numpy()
        pads = {}
    k, s = (2, 2) if kind == "L2" else (3, 2)
    got = run_layer(lambda b: b.add_pooling("pool", k, k, s, s, kind, padding, "data", "out", exclude_pad_area=True,
                                            **pads), ref.shape, x, tmp_path, fp32_options)
    check(got, ref, 1e-5)
