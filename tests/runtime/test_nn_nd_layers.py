"""Rank-N NeuralNetwork layers and field values coremltools' converters do not emit, built
with ``nn_zoo.build_nd`` and compared with numpy references written from NeuralNetwork.proto."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nn_zoo
from pytest_coreml_quality.errors import ModelFormatError, UnsupportedModelError
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


def test_constant_pad_two_output_sizes_for_one_axis_is_a_format_error(tmp_path: Path,
                                                                     fp32_options: RuntimeOptions) -> None:
    with pytest.raises(ModelFormatError, match=r"padAmounts.*both sides of axis 1"):
        run_nd({"data": _x((2, 4))}, lambda b: b.add_constant_pad("pad", ["data"], "out", pad_amounts=[0, 0, 6, 6],
                                                                  pad_to_given_output_size_mode=True),
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


# --- layers coremltools' NN backend emits for shape and index arithmetic --------------------


def _const(b: Any, name: str, values: Any) -> None:
    arr = np.asarray(values, np.float32).reshape(-1)
    b.add_load_constant_nd(name, name, arr, arr.shape)


X = np.random.default_rng(5).permutation(60).reshape(3, 1, 4, 5).astype(np.float32) / 7 - 4  # distinct values

EMBED = np.arange(15, dtype=np.float32).reshape(3, 5) / 4 - 1  # [embeddingSize, vocabSize]

# name -> (what to append after input 'data' = X, numpy reference of the proto's semantics)
CASES: dict[str, tuple[Callable[[Any], None], Callable[[np.ndarray], np.ndarray]]] = {
    "broadcastToStatic": (lambda b: b.add_broadcast_to_static("l", "data", "out", output_shape=[2, 3, 6, 4, 5]),
                          lambda x: np.broadcast_to(x, (2, 3, 6, 4, 5))),
    "broadcastToLike": (lambda b: (b.add_fill_static("f", "like", output_shape=[3, 6, 1, 1], value=0.0),
                                   b.add_broadcast_to_like("l", ["data", "like"], "out")),
                        lambda x: np.broadcast_to(x, (3, 6, 4, 5))),
    "broadcastToDynamic": (lambda b: (_const(b, "shape", [3, 2, 4, 5]),
                                      b.add_broadcast_to_dynamic("l", ["data", "shape"], "out")),
                           lambda x: np.broadcast_to(x, (3, 2, 4, 5))),
    "reshapeLike": (lambda b: (b.add_fill_static("f", "like", output_shape=[6, 10], value=0.0),
                               b.add_reshape_like("l", ["data", "like"], "out")),
                    lambda x: x.reshape(6, 10)),
    "fillLike": (lambda b: b.add_fill_like("l", "data", "out", value=2.5), lambda x: np.full(x.shape, 2.5)),
    "fillDynamic": (lambda b: (_const(b, "shape", [2, 3]), b.add_fill_dynamic("l", "shape", "out", value=-1.0)),
                    lambda x: np.full((2, 3), -1.0)),
    "rangeStatic": (lambda b: b.add_range_static("l", "out", end=4.0, start=-1.0, step=0.75),
                    lambda x: np.arange(-1.0, 4.0, 0.75)),
    "rangeDynamic": (lambda b: (_const(b, "end", [7]), _const(b, "start", [2]),
                                b.add_range_dynamic("l", ["end", "start"], "out", start=100, step=1.5)),
                     lambda x: np.arange(2.0, 7.0, 1.5)),
    "stack": (lambda b: b.add_stack("l", ["data", "data2"], "out", axis=-2),
              lambda x: np.stack([x, x * 2], axis=-2)),
    "topK": (lambda b: b.add_topk("l", ["data"], ["out", "idx"], k=3, axis=-1),
             lambda x: -np.sort(-x, axis=-1)[..., :3]),
    "topK_bottom_indices": (lambda b: (_const(b, "k", [2]),
                                       b.add_topk("l", ["data", "k"], ["vals", "out"], k=9, axis=2, use_bottom_k=True)),
                            lambda x: np.argsort(x, axis=2)[:, :, :2]),
    "argSort": (lambda b: b.add_argsort("l", "data", "out", axis=3, descending=True),
                lambda x: np.argsort(-x, axis=3)),
    "argSort_ascending": (lambda b: b.add_argsort("l", "data", "out", axis=2), lambda x: np.argsort(x, axis=2)),
    "sliceBySize": (lambda b: (_const(b, "begin", [1]), b.add_slice_by_size("l", ["data", "begin"], "out", axis=2,
                                                                              size=2)),
                    lambda x: x[:, :, 1:3]),
    "sliceBySize_negative_begin": (lambda b: (_const(b, "begin", [-3]),
                                              b.add_slice_by_size("l", ["data", "begin"], "out", axis=-1, size=2)),
                                   lambda x: x[..., -3:-1]),
    "gatherAlongAxis": (lambda b: (_const(b, "idx", [[2, -1, 0, 1, 3]] * 3), b.add_reshape_static("r", "idx", "idx3",
                                                                                                   [3, 1, 1, 5]),
                                   b.add_gather_along_axis("l", ["data", "idx3"], "out", axis=2)),
                        lambda x: np.take_along_axis(x, np.array([[2, 3, 0, 1, 3]] * 3).reshape(3, 1, 1, 5), axis=2)),
    "reverse": (lambda b: b.add_reverse("l", "data", "out", reverse_dim=[True, False, False, True]),
                lambda x: x[::-1, :, :, ::-1]),
    "cumSum": (lambda b: b.add_cumsum("l", ["data"], "out", axis=-2), lambda x: np.cumsum(x, axis=-2)),
    "cumSum_exclusive_reverse": (
        lambda b: b.add_cumsum("l", ["data"], "out", axis=3, reverse=True, exclusive=True),
        lambda x: np.flip(np.cumsum(np.flip(x, 3), 3), 3) - x),
    "cumSum_axis_input": (lambda b: (_const(b, "axis", [0]), b.add_cumsum("l", ["data", "axis"], "out", axis=3)),
                          lambda x: np.cumsum(x, axis=0)),
    "clampedReLU": (lambda b: b.add_clamped_relu("l", "data", "out", alpha=0.3, beta=2.0),
                    lambda x: np.minimum(2.0, np.where(x >= 0, x, 0.3 * x))),
    "gatherND": (lambda b: (_const(b, "idx", [[2, 0, 3], [0, 0, 1], [1, 0, 0]]),
                            b.add_reshape_static("r", "idx", "idx2", [3, 3]),
                            b.add_gather_nd("l", ["data", "idx2"], "out")),
                 lambda x: np.stack([x[2, 0, 3], x[0, 0, 1], x[1, 0, 0]])),
    "whereNonZero": (lambda b: (b.add_activation("relu", "RELU", "data", "pos"), b.add_where_nonzero("l", "pos", "out")),
                     lambda x: np.argwhere(np.maximum(x, 0))),
    "oneHot": (lambda b: (_const(b, "idx", [2, -1, 0, 7, 3]),
                          b.add_one_hot("l", ["idx"], "out", one_hot_vector_size=4, axis=0, on_value=5.0,
                                        off_value=-1.0)),
               lambda x: np.where(np.arange(4)[:, None] == np.array([2, -1, 0, 7, 3])[None, :], 5.0, -1.0)),
    "lowerTriangular": (lambda b: b.add_lower_triangular("l", "data", "out", k=1), lambda x: np.tril(x, 1)),
    "upperTriangular": (lambda b: b.add_upper_triangular("l", "data", "out", k=-1), lambda x: np.triu(x, -1)),
    "matrixBandPart": (lambda b: b.add_matrix_band_part("l", "data", "out", num_lower=1, num_upper=2),
                       lambda x: np.triu(np.tril(x, 2), -1)),
    "matrixBandPart_all_lower": (lambda b: b.add_matrix_band_part("l", "data", "out", num_lower=-1, num_upper=0),
                                 lambda x: np.tril(x)),
    "embeddingND": (lambda b: (_const(b, "ids", [3, 0, 4, 4]), b.add_reshape_static("r", "ids", "ids2", [2, 2, 1]),
                               b.add_embedding_nd("l", "ids2", "out", vocab_size=5, embedding_size=3, W=EMBED,
                                                  b=np.array([0.5, -1.0, 2.0]))),
                    lambda x: EMBED.T[np.array([[3, 0], [4, 4]])] + np.array([0.5, -1.0, 2.0])),
    "sliceDynamic": (lambda b: (_const(b, "begin", [1, 0, -3, 4]),
                                b.add_slice_dynamic("l", ["data", "begin"], "out", end_ids=[3, 1, 0, 0],
                                                    strides=[1, 1, 1, -2], begin_masks=[False, False, False, False],
                                                    end_masks=[False, False, True, True],
                                                    squeeze_masks=[False, True, False, False])),
                     lambda x: x[1:3, 0, -3:, 4::-2]),
    "sliceDynamic_end_input": (lambda b: (_const(b, "begin", [0, 0, 9, 1]), _const(b, "end", [-1, 1, 1, 5]),
                                          b.add_slice_dynamic("l", ["data", "begin", "end"], "out", end_ids=[9, 9, 9, 9],
                                                              strides=[2, 1, -1, 2],
                                                              begin_masks=[False, False, True, False])),
                               lambda x: x[0:-1:2, 0:1, :1:-1, 1:5:2]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_nd_layer_matches_numpy(case: str, tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    add, ref_fn = CASES[case]
    feeds = {"data": X, "data2": X * 2} if case == "stack" else {"data": X}
    got = run_nd(feeds, add, tmp_path, fp32_options)
    ref = np.asarray(ref_fn(X), np.float32)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-5)


def test_slice_dynamic_with_strides_as_input_is_unsupported(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    def add(b: Any) -> None:
        _const(b, "begin", [0, 0, 0, 0])
        _const(b, "end", [1, 1, 1, 1])
        _const(b, "strides", [1, 1, 1, 1])
        b.add_slice_dynamic("l", ["data", "begin", "end", "strides"], "out")

    with pytest.raises(UnsupportedModelError, match=r"sliceDynamic\).*strides or masks as inputs"):
        run_nd({"data": X}, add, tmp_path, fp32_options)


def test_reverse_flag_count_is_a_format_error(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    with pytest.raises(ModelFormatError, match=r"reverse\)\.reverseDim.*4 values"):
        run_nd({"data": X}, lambda b: b.add_reverse("l", "data", "out", reverse_dim=[True]), tmp_path, fp32_options)
