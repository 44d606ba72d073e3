"""MIL ops that PyTorch conversion rarely emits, built directly with coremltools' MIL
builder and checked against numpy implementations of the op definitions' formulas."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch builds the ML Program test models (test-only dependency)")


from pytest_coreml_quality.model import Model
from tests.runtime import mil_refs, mil_zoo

pytestmark = pytest.mark.filterwarnings("ignore")

SHAPE = (1, 4, 6, 8)
BOUND = 1e-4


def _bilinear(x: np.ndarray, out_h: int, out_w: int, mode: str) -> np.ndarray:
    def weights(n_in: int, n_out: int) -> np.ndarray:
        g = mil_refs.sampling_grid(n_in, n_out, mode)
        lo = np.floor(g).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        m = np.zeros((n_out, n_in))
        np.add.at(m, (np.arange(n_out), lo), 1 - (g - lo))
        np.add.at(m, (np.arange(n_out), hi), g - lo)
        return m

    return np.einsum("oh,nchw,pw->ncop", weights(x.shape[2], out_h), x, weights(x.shape[3], out_w))


def _d2s(x: np.ndarray, b: int) -> np.ndarray:  # TensorFlow DCR order
    n, c, h, w = x.shape
    y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    return y.reshape(n, c // (b * b), h * b, w * b)


def _s2d(x: np.ndarray, b: int) -> np.ndarray:
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4)
    return y.reshape(n, c * b * b, h // b, w // b)


def _l2_pool(x: np.ndarray) -> np.ndarray:  # kernel 2, stride 2, valid
    n, c, h, w = x.shape
    return np.sqrt((x**2).reshape(n, c, h // 2, 2, w // 2, 2).sum(axis=(3, 5)))


def _layer_norm_13(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=(1, 3), keepdims=True)
    var = ((x - mean) ** 2).mean(axis=(1, 3), keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * gamma[None, :, None, :] + beta[None, :, None, :]


GAMMA = np.linspace(0.5, 1.5, 32, dtype=np.float32).reshape(4, 8)
BETA = np.linspace(-0.3, 0.3, 32, dtype=np.float32).reshape(4, 8)
ALPHA_C = np.array([0.5, 1.0, 1.5, 2.0], dtype=np.float32)
BETA_C = np.array([1.0, 0.5, 2.0, 1.5], dtype=np.float32)

# name -> (MIL construction from the input ``x`` in [-2, 2], numpy reference)
CASES: dict[str, tuple[Callable[[Any, Any], Any], Callable[[np.ndarray], np.ndarray]]] = {
    **{
        f"resize_bilinear_{mode.lower()}": (
            (lambda mode: lambda mb, x: mb.resize_bilinear(x=x, target_size_height=9, target_size_width=13, sampling_mode=mode))(mode),
            (lambda mode: lambda v: _bilinear(v, 9, 13, mode))(mode),
        )
        for mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS", "DEFAULT", "OFFSET_CORNERS", "UNALIGN_CORNERS")
    },
    "upsample_bilinear_align": (
        lambda mb, x: mb.upsample_bilinear(x=x, scale_factor_height=2.0, scale_factor_width=1.5, align_corners=True),
        lambda v: _bilinear(v, 12, 12, "ALIGN_CORNERS"),
    ),
    "resize_nearest_neighbor": (
        lambda mb, x: mb.resize_nearest_neighbor(x=x, target_size_height=12, target_size_width=24),
        lambda v: v[:, :, (np.arange(12) * 6 // 12)][:, :, :, (np.arange(24) * 8 // 24)],
    ),
    "slice_by_size": (lambda mb, x: mb.slice_by_size(x=x, begin=[0, 1, 2, 3], size=[1, 2, -1, 4]), lambda v: v[:, 1:3, 2:, 3:7]),
    "l2_pool": (
        lambda mb, x: mb.l2_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid"),
        _l2_pool,
    ),
    "sigmoid_hard": (lambda mb, x: mb.sigmoid_hard(x=x, alpha=0.3, beta=0.4), lambda v: np.clip(0.3 * v + 0.4, 0, 1)),
    "scaled_tanh": (lambda mb, x: mb.scaled_tanh(x=x, alpha=1.5, beta=0.7), lambda v: 1.5 * np.tanh(0.7 * v)),
    "clamped_relu": (lambda mb, x: mb.clamped_relu(x=x, alpha=0.2, beta=1.1), lambda v: np.minimum(np.where(v >= 0, v, 0.2 * v), 1.1)),
    "linear_activation": (lambda mb, x: mb.linear_activation(x=x, alpha=-0.7, beta=0.2), lambda v: -0.7 * v + 0.2),
    "threshold": (lambda mb, x: mb.threshold(x=x, alpha=0.25), lambda v: np.maximum(v, 0.25)),
    "softplus_parametric": (
        lambda mb, x: mb.softplus_parametric(x=x, alpha=ALPHA_C, beta=BETA_C),
        lambda v: ALPHA_C.reshape(1, 4, 1, 1) * np.log1p(np.exp(BETA_C.reshape(1, 4, 1, 1) * v)),
    ),
    "gelu_sigmoid": (lambda mb, x: mb.gelu(x=x, mode="SIGMOID_APPROXIMATION"), lambda v: v / (1 + np.exp(-1.702 * v))),
    "gelu_tanh": (
        lambda mb, x: mb.gelu(x=x, mode="TANH_APPROXIMATION"),
        lambda v: 0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3))),
    ),
    "exp2": (lambda mb, x: mb.exp2(x=x), lambda v: np.exp2(v)),
    "round": (lambda mb, x: mb.round(x=mb.mul(x=x, y=2.25)), lambda v: np.round(v * 2.25)),
    "floor_div": (lambda mb, x: mb.floor_div(x=x, y=0.7), lambda v: np.floor(v / np.float32(0.7))),
    "mod": (lambda mb, x: mb.mod(x=x, y=0.7), lambda v: v - np.floor(v / np.float32(0.7)) * np.float32(0.7)),
    "reduce_prod": (lambda mb, x: mb.reduce_prod(x=x, axes=[1], keep_dims=True), lambda v: v.prod(axis=1, keepdims=True)),
    "reduce_l1_norm": (lambda mb, x: mb.reduce_l1_norm(x=x, axes=[2, 3]), lambda v: np.abs(v).sum(axis=(2, 3))),
    "reduce_sum_square": (lambda mb, x: mb.reduce_sum_square(x=x, axes=[-1]), lambda v: (v**2).sum(axis=-1)),
    "reduce_log_sum": (lambda mb, x: mb.reduce_log_sum(x=mb.abs(x=x), axes=[1]), lambda v: np.log(np.abs(v).sum(axis=1))),
    "reduce_argmax": (
        lambda mb, x: mb.cast(x=mb.reduce_argmax(x=x, axis=2, keep_dims=False), dtype="fp32"),
        lambda v: v.argmax(axis=2).astype(np.float32),
    ),
    "reduce_argmin": (
        lambda mb, x: mb.cast(x=mb.reduce_argmin(x=x, axis=-1, keep_dims=True), dtype="fp32"),
        lambda v: v.argmin(axis=-1)[..., None].astype(np.float32),
    ),
    "concat_interleave": (
        lambda mb, x: mb.concat(values=[x, mb.mul(x=x, y=-1.0)], axis=1, interleave=True),
        lambda v: np.stack([v, -v], axis=2).reshape(1, 8, 6, 8),
    ),
    "depth_to_space": (lambda mb, x: mb.depth_to_space(x=x, block_size=2), lambda v: _d2s(v, 2)),
    "space_to_depth": (lambda mb, x: mb.space_to_depth(x=x, block_size=2), lambda v: _s2d(v, 2)),
    "layer_norm_axes_1_3": (
        lambda mb, x: mb.layer_norm(x=x, axes=[1, 3], gamma=GAMMA, beta=BETA, epsilon=1e-5),
        lambda v: _layer_norm_13(v, GAMMA, BETA),
    ),
    "pad_reflect_last_axis": (
        lambda mb, x: mb.pad(x=x, pad=np.array([2, 1], dtype=np.int32), mode="reflect"),
        lambda v: np.pad(v, [(0, 0), (0, 0), (0, 0), (2, 1)], mode="reflect"),
    ),
    "slice_by_index_masks": (
        lambda mb, x: mb.slice_by_index(
            x=x, begin=[0, 3, 1, 0], end=[1, 0, 5, 8], stride=[1, -1, 2, 1],
            begin_mask=[False, False, False, True], end_mask=[False, True, False, True], squeeze_mask=[True, False, False, False],
        ),
        lambda v: v[0, 3::-1, 1:5:2, :],
    ),  # fmt: skip
    "gather_along_axis": (
        lambda mb, x: mb.gather_along_axis(x=x, indices=np.tile(np.array([5, 0, 2], dtype=np.int32).reshape(1, 1, 3, 1), (1, 4, 1, 8)), axis=2),
        lambda v: v[:, :, [5, 0, 2], :],
    ),
    "logical": (
        lambda mb, x: mb.cast(
            x=mb.logical_xor(x=mb.greater(x=x, y=0.5), y=mb.logical_not(x=mb.less_equal(x=x, y=-0.5))), dtype="fp32"
        ),
        lambda v: np.logical_xor(v > 0.5, ~(v <= -0.5)).astype(np.float32),
    ),
    "not_equal": (lambda mb, x: mb.cast(x=mb.not_equal(x=mb.floor(x=x), y=0.0), dtype="fp32"), lambda v: (np.floor(v) != 0).astype(np.float32)),
    "l2_norm": (
        lambda mb, x: mb.l2_norm(x=x, epsilon=1e-6),
        lambda v: v / np.sqrt((v**2).sum(axis=(1, 2, 3), keepdims=True) + 1e-6),
    ),
    "pixel_shuffle": (
        lambda mb, x: mb.pixel_shuffle(x=x, upscale_factor=2),  # PyTorch's (CRD) order
        lambda v: v.reshape(1, 1, 2, 2, 6, 8).transpose(0, 1, 4, 2, 5, 3).reshape(1, 1, 12, 16),
    ),
    "softsign": (lambda mb, x: mb.softsign(x=x), lambda v: v / (1 + np.abs(v))),
    "thresholded_relu": (lambda mb, x: mb.thresholded_relu(x=x, alpha=0.6), lambda v: np.where(v > 0.6, v, 0)),
    "square": (lambda mb, x: mb.square(x=x), lambda v: v * v),
    "trig": (
        lambda mb, x: mb.add(
            x=mb.add(x=mb.acos(x=mb.mul(x=x, y=0.45)), y=mb.asin(x=mb.mul(x=x, y=0.45))),
            y=mb.add(x=mb.atanh(x=mb.mul(x=x, y=0.45)), y=mb.mul(x=mb.tan(x=mb.mul(x=x, y=0.5)), y=mb.atan(x=x))),
        ),
        lambda v: np.arccos(v * 0.45) + np.arcsin(v * 0.45) + np.arctanh(v * 0.45) + np.tan(v * 0.5) * np.arctan(v),
    ),
    "hyperbolic": (lambda mb, x: mb.sub(x=mb.cosh(x=x), y=mb.sinh(x=x)), lambda v: np.exp(-v)),
    "conv_transpose_same": (
        lambda mb, x: mb.conv_transpose(
            x=x, weight=np.linspace(-1, 1, 4 * 3 * 3 * 3, dtype=np.float32).reshape(4, 3, 3, 3), strides=[2, 2], pad_type="same"
        ),
        None,  # compared with PyTorch below
    ),
}


@pytest.fixture(scope="module")
def op_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ML Program with every case as a separate output (one conversion for the lot)."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=SHAPE)], opset_version=ct.target.iOS16)
    def prog(x: Any) -> Any:
        x = mb.sub(x=mb.mul(x=x, y=4.0), y=2.0)
        return tuple(mb.identity(x=build(mb, x), name=name) for name, (build, _) in CASES.items())

    return mil_zoo.save_program(prog, tmp_path_factory.mktemp("mil_ops") / "suite.mlpackage")


@pytest.fixture(scope="module")
def suite_outputs(op_suite: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    x = mil_zoo.sample_input(SHAPE, seed=11)
    name = Model.open(op_suite).inputs[0].name
    return x * 4 - 2, mil_zoo.run(op_suite, {name: x})


@pytest.mark.parametrize("case", [c for c, (_, ref) in CASES.items() if ref is not None])
def test_mil_op_matches_formula(case: str, suite_outputs: tuple[np.ndarray, dict[str, np.ndarray]]) -> None:
    x, outputs = suite_outputs
    expected = CASES[case][1](x.astype(np.float64))
    got = outputs[case]
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= BOUND * max(1.0, float(np.abs(expected).max()))


def test_conv_transpose_same_padding(suite_outputs: tuple[np.ndarray, dict[str, np.ndarray]]) -> None:
    import torch

    x, outputs = suite_outputs
    w = torch.from_numpy(np.linspace(-1, 1, 4 * 3 * 3 * 3, dtype=np.float32).reshape(4, 3, 3, 3))
    full = torch.nn.functional.conv_transpose2d(torch.from_numpy(x), w, stride=2).numpy()  # [1, 3, 13, 17]
    got = outputs["conv_transpose_same"]
    assert got.shape == (1, 3, 12, 16)  # "same": input size times stride
    # The one extra row/column of the full result is cut at the end, as for conv "same".
    assert np.abs(got - full[:, :, :12, :16]).max() <= BOUND * np.abs(full).max()
