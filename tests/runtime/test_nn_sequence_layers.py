"""reverseSeq, slidingWindows, sequenceRepeat, dot and (legacy) embedding against numpy
references written from NeuralNetwork.proto, including the proto's own examples."""

from __future__ import annotations

import warnings
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

ct = pytest.importorskip("coremltools")


def run(feeds: dict[str, np.ndarray], add: Callable[[Any], None], tmp_path: Path, options: RuntimeOptions) -> np.ndarray:
    path = nn_zoo.build_nd({k: v.shape for k, v in feeds.items()}, add, tmp_path / "seq.mlmodel")
    return OnnxBackend().load(Model.open(path), options).predict(feeds)["out"]


def _x(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


# --- reverseSeq ---------------------------------------------------------------------------


def ref_reverse_seq(x: np.ndarray, lengths: np.ndarray, batch_axis: int, seq_axis: int) -> np.ndarray:
    """Per batch element b: the first lengths[b] entries along the sequence axis, flipped."""
    out = x.copy()
    b, s = batch_axis % x.ndim, seq_axis % x.ndim
    for i, n in enumerate(lengths.astype(int)):
        sel: list[Any] = [slice(None)] * x.ndim
        sel[b] = i
        sel[s] = slice(0, n)
        out[tuple(sel)] = np.flip(x[tuple(sel)], axis=s - (1 if s > b else 0))
    return out


def test_reverse_seq_proto_examples(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    got = run({"x": x, "n": np.array([3, 0], np.float32)},
              lambda b: b.add_reverse_sequence("r", ["x", "n"], "out", batch_axis=0, seq_axis=1), tmp_path, fp32_options)
    np.testing.assert_array_equal(got, [[2, 1, 0, 3], [4, 5, 6, 7]])
    x = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    got = run({"x": x, "n": np.array([2, 3], np.float32)},
              lambda b: b.add_reverse_sequence("r", ["x", "n"], "out", batch_axis=0, seq_axis=1), tmp_path, fp32_options)
    np.testing.assert_array_equal(got, [[[2, 3], [0, 1], [4, 5]], [[10, 11], [8, 9], [6, 7]]])


@pytest.mark.parametrize(("shape", "batch_axis", "seq_axis"), [((3, 2, 5, 4), 1, -1), ((4, 3, 2), -3, 1),
                                                               ((2, 6, 3), 2, 1)])
def test_reverse_seq_axes(shape: tuple[int, ...], batch_axis: int, seq_axis: int, tmp_path: Path,
                          fp32_options: RuntimeOptions) -> None:
    x = _x(shape)
    t = shape[seq_axis]
    lengths = np.random.default_rng(1).integers(0, t + 1, shape[batch_axis]).astype(np.float32)
    lengths[0] = t  # the whole axis
    got = run({"x": x, "n": lengths},
              lambda b: b.add_reverse_sequence("r", ["x", "n"], "out", batch_axis=batch_axis, seq_axis=seq_axis),
              tmp_path, fp32_options)
    np.testing.assert_array_equal(got, ref_reverse_seq(x, lengths, batch_axis, seq_axis))


def test_reverse_seq_under_fp16_emulation(tmp_path: Path, fp16_options: RuntimeOptions) -> None:
    """fp16 emulation rounds arithmetic outputs through float: the position arithmetic must stay float."""
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    got = run({"x": x, "n": np.array([3, 2], np.float32)},
              lambda b: b.add_reverse_sequence("r", ["x", "n"], "out", batch_axis=0, seq_axis=1), tmp_path, fp16_options)
    np.testing.assert_array_equal(got, [[2, 1, 0, 3], [5, 4, 6, 7]])


def test_reverse_seq_lengths_of_the_wrong_size_are_a_format_error(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    with pytest.raises(ModelFormatError, match=r"\(reverseSeq\)\.input\[1\].*2 lengths"):
        run({"x": _x((2, 4)), "n": np.ones(3, np.float32)},
            lambda b: b.add_reverse_sequence("r", ["x", "n"], "out", batch_axis=0, seq_axis=1), tmp_path, fp32_options)


# --- slidingWindows -----------------------------------------------------------------------


def ref_sliding_windows(x: np.ndarray, axis: int, size: int, step: int) -> np.ndarray:
    a = axis % x.ndim
    win = np.lib.stride_tricks.sliding_window_view(x, size, axis=a)  # window axis last
    win = np.take(win, np.arange(0, x.shape[a] - size + 1, step), axis=a)
    return np.moveaxis(win, -1, a + 1)


@pytest.mark.parametrize(("shape", "axis", "size", "step"), [
    ((7,), 0, 3, 2),  # (L,) -> (M, W)
    ((2, 9, 3), 1, 4, 1),  # (B1, L, C1) -> (B1, M, W, C1)
    ((2, 3, 10, 2, 1), 2, 3, 3),  # M = (10 - 3) // 3 + 1 = 3: the last element is in no window
    ((4, 5), -1, 5, 2),  # one window of the whole axis
])
def test_sliding_windows(shape: tuple[int, ...], axis: int, size: int, step: int, tmp_path: Path,
                         fp32_options: RuntimeOptions) -> None:
    x = _x(shape)
    got = run({"x": x}, lambda b: b.add_sliding_windows("w", "x", "out", axis=axis, window_size=size, step=step),
              tmp_path, fp32_options)
    ref = ref_sliding_windows(x, axis, size, step)
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)


def test_sliding_window_longer_than_the_axis_is_a_format_error(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    with pytest.raises(ModelFormatError, match=r"\(slidingWindows\)\.windowSize.*from 1 to 4"):
        run({"x": _x((3, 4))}, lambda b: b.add_sliding_windows("w", "x", "out", axis=1, window_size=5),
            tmp_path, fp32_options)


# --- sequenceRepeat -----------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "reps", "expected"), [((2, 1, 3, 2, 2), 3, 3), ((2, 3, 1, 3, 1, 2), 2, 2),
                                                          ((3, 2, 1, 1), 4, 4), ((2, 1, 3, 1, 1), 0, 1)])
def test_sequence_repeat(shape: tuple[int, ...], reps: int, expected: int, tmp_path: Path,
                         fp32_options: RuntimeOptions) -> None:
    x = _x(shape)
    got = run({"x": x}, lambda b: b.add_sequence_repeat("r", reps, "x", "out"), tmp_path, fp32_options)
    axis = x.ndim - 5 if x.ndim >= 5 else 0  # Seq: axis -5 (a rank-4 blob folds Seq into axis 0)
    np.testing.assert_array_equal(got, np.concatenate([x] * expected, axis=axis))


# --- dot ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cosine", [False, True])
@pytest.mark.parametrize("shape", [(3, 6, 1, 1), (2, 3, 5, 1, 1), (4, 1, 1)])
def test_dot(cosine: bool, shape: tuple[int, ...], tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    a, b = _x(shape, 1), _x(shape, 2)
    got = run({"a": a, "b": b}, lambda nb: nb.add_elementwise("d", ["a", "b"], "out", "COS" if cosine else "DOT"),
              tmp_path, fp32_options)
    if cosine:
        a = a / np.linalg.norm(a, axis=-3, keepdims=True)
        b = b / np.linalg.norm(b, axis=-3, keepdims=True)
    np.testing.assert_allclose(got, np.sum(a * b, axis=-3, keepdims=True), rtol=1e-5, atol=1e-6)


def test_dot_in_a_rank5_mapped_network(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    """A legacy (rank-5 mapped) spec: rank-1 inputs are [C] vectors seen as [1, C, 1, 1] blobs."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    builder = NeuralNetworkBuilder([("a", datatypes.Array(5)), ("b", datatypes.Array(5))],
                                   [("out", datatypes.Array(1))])
    builder.add_elementwise("d", ["a", "b"], "out", "DOT")
    path = tmp_path / "dot.mlmodel"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ct.utils.save_spec(builder.spec, str(path))
    a, b = _x((5,), 3), _x((5,), 4)
    got = OnnxBackend().load(Model.open(path), fp32_options).predict({"a": a, "b": b})["out"]
    np.testing.assert_allclose(got, [np.dot(a, b)], rtol=1e-5)


def test_dot_of_spatial_blobs_is_a_format_error(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    with pytest.raises(ModelFormatError, match=r"\(dot\).*last two axes 1"):
        run({"a": _x((3, 2, 2)), "b": _x((3, 2, 2))}, lambda nb: nb.add_elementwise("d", ["a", "b"], "out", "DOT"),
            tmp_path, fp32_options)


# --- embedding ----------------------------------------------------------------------------

TABLE = np.arange(15, dtype=np.float32).reshape(3, 5) / 4 - 1  # [outputChannels, inputDim]
BIAS = np.array([0.5, -1.0, 2.0], np.float32)


@pytest.mark.parametrize("has_bias", [True, False])
@pytest.mark.parametrize("ids", [np.array([3, 0, 4, 4]).reshape(4, 1, 1, 1),
                                 np.array([1, 2, 0, 4, 3, 1]).reshape(2, 3, 1, 1, 1)])
def test_embedding(ids: np.ndarray, has_bias: bool, tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    got = run({"ids": ids.astype(np.float32)},
              lambda b: b.add_embedding("e", TABLE, BIAS, input_dim=5, output_channels=3, has_bias=has_bias,
                                        input_name="ids", output_name="out"), tmp_path, fp32_options)
    ref = TABLE.T[ids.reshape(ids.shape[:-3])] + (BIAS if has_bias else 0)  # [..., outputChannels]
    np.testing.assert_allclose(got, ref[..., None, None], rtol=1e-6)


def test_embedding_of_a_spatial_blob_is_a_format_error(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    with pytest.raises(ModelFormatError, match=r"\(embedding\).*rank 4 \(x1, 1, 1, 1\)"):
        run({"ids": np.zeros((2, 1, 2, 1), np.float32)},
            lambda b: b.add_embedding("e", TABLE, BIAS, 5, 3, True, "ids", "out"), tmp_path, fp32_options)


def test_embedding_table_of_the_wrong_size_is_a_format_error(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    with pytest.raises(ModelFormatError, match=r"embedding\.weights"):
        run({"ids": np.zeros((2, 1, 1, 1), np.float32)},
            lambda b: b.add_embedding("e", TABLE, BIAS, 6, 3, True, "ids", "out"), tmp_path, fp32_options)
