"""Rank-N NeuralNetwork layers and field values coremltools' converters do not emit, built
with ``nn_zoo.build_nd`` and compared with numpy references written from NeuralNetwork.proto."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nn_zoo
from pytest_coreml_quality.errors import ModelFormatError
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.base import RuntimeOptions
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend

pytest.importorskip("coremltools")


def run_nd(inputs: dict[str, np.ndarray], add: Callable[[Any], None], tmp_path: Path,
           options: RuntimeOptions) -> np.ndarray:
    path = nn_zoo.build_nd({k: v.shape for k, v in inputs.items()}, add, tmp_path / "nd.mlmodel")
    return OnnxBackend().load(Model.open(path), options).predict(inputs)["out"]


def _x(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


# --- constantPad ---------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "amounts"), [
    ((2, 3, 4, 5), [0, 0, 1, 4, 2, 0, 3, 1]),  # [before_i, after_i] per axis, channels included
    ((5,), [2, 3]),
    ((3, 4), [0, 1, 4, 0]),  # the proto's example: (20,10) -> (21,14) style
])
def test_constant_pad_amounts(shape: tuple[int, ...], amounts: list[int], tmp_path: Path,
                              fp32_options: RuntimeOptions) -> None:
    x = _x(shape)
    got = run_nd({"data": x}, lambda b: b.add_constant_pad("pad", ["data"], "out", value=-2.5, pad_amounts=amounts),
                 tmp_path, fp32_options)
    ref = np.pad(x, np.asarray(amounts).reshape(-1, 2), constant_values=-2.5)
    np.testing.assert_array_equal(got, ref)


def _to_size(x: np.ndarray, sizes: list[int], left: bool, value: float) -> np.ndarray:
    """The proto's padToGivenOutputSizeMode: pad one side of each axis up to its size."""
    grow = [max(s - n, 0) if s else 0 for s, n in zip(sizes, x.shape)]
    return np.pad(x, [(g, 0) if left else (0, g) for g in grow], constant_values=value)


@pytest.mark.parametrize("left", [True, False])
def test_constant_pad_to_given_output_size(left: bool, tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    x = _x((2, 4, 5))
    sizes = [0, 7, 3]  # 0: axis kept; 3 < 5: an output size below the input's does not crop
    amounts = [v for s in sizes for v in ((s, 0) if left else (0, s))]
    got = run_nd({"data": x}, lambda b: b.add_constant_pad("pad", ["data"], "out", value=34.0, pad_amounts=amounts,
                                                           pad_to_given_output_size_mode=True), tmp_path, fp32_options)
    np.testing.assert_array_equal(got, _to_size(x, sizes, left, 34.0))


@pytest.mark.parametrize("to_size", [False, True])
def test_constant_pad_amounts_from_second_input(to_size: bool, tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    x = _x((2, 4, 5))
    amounts = np.array([0, 1, 6, 0, 0, 8] if to_size else [1, 0, 2, 3, 0, 4], np.float32)
    got = run_nd({"data": x, "pads": amounts},
                 lambda b: b.add_constant_pad("pad", ["data", "pads"], "out", value=0.5,
                                              pad_to_given_output_size_mode=to_size), tmp_path, fp32_options)
    if to_size:
        ref = np.pad(x, [(0, 0), (2, 0), (0, 3)], constant_values=0.5)
    else:
        ref = np.pad(x, amounts.astype(int).reshape(-1, 2), constant_values=0.5)
    np.testing.assert_array_equal(got, ref)


def test_constant_pad_wrong_amount_count_is_a_format_error(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    with pytest.raises(ModelFormatError, match=r"constantPad\)\.padAmounts.*6 values"):
        run_nd({"data": _x((2, 4, 5))}, lambda b: b.add_constant_pad("pad", ["data"], "out", pad_amounts=[1, 1]),
               tmp_path, fp32_options)


# --- reshapeDynamic, whereBroadcastable ----------------------------------------------------


@pytest.mark.parametrize("target", [[3, 20], [5, -1, 2], [0, 4, 5]])
def test_reshape_dynamic(target: list[int], tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    x = _x((3, 4, 5))

    def add(b: Any) -> None:
        # The target is computed inside the model (as converters do), never an input: the
        # backend's load-time probe feeds zeros, and an all-zero shape is no shape.
        b.add_load_constant_nd("shape", "shape", np.asarray(target, np.float32), (len(target),))
        b.add_reshape_dynamic("r", ["data", "shape"], "out")

    got = run_nd({"data": x}, add, tmp_path, fp32_options)
    np.testing.assert_array_equal(got, x.reshape([x.shape[i] if d == 0 else d for i, d in enumerate(target)]))


def test_where_broadcastable(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    cond = np.array([[0.0], [2.0], [-1.0]], np.float32)  # any non-zero value is true
    x, y = _x((4,), 1), _x((2, 1, 1), 2)
    got = run_nd({"cond": cond, "x": x, "y": y},
                 lambda b: b.add_where_broadcastable("w", ["cond", "x", "y"], "out"), tmp_path, fp32_options)
    np.testing.assert_array_equal(got, np.where(cond != 0, x, y))
