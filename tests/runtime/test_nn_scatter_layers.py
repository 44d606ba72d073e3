"""scatter, scatterND and scatterAlongAxis in every ScatterMode, against numpy loops written
from NeuralNetwork.proto ("output = container; for each update in order: output[target] op= update"),
including duplicate and negative indices."""

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

OPS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "UPDATE": lambda o, u: u,
    "ADD": lambda o, u: o + u,
    "SUB": lambda o, u: o - u,
    "MUL": lambda o, u: o * u,
    "DIV": lambda o, u: o / u,
    "MAX": np.maximum,
    "MIN": np.minimum,
}


def run(feeds: dict[str, np.ndarray], add: Callable[[Any], None], tmp_path: Path, options: RuntimeOptions) -> np.ndarray:
    path = nn_zoo.build_nd({k: v.shape for k, v in feeds.items()}, add, tmp_path / "scatter.mlmodel")
    return OnnxBackend().load(Model.open(path), options).predict(feeds)["out"]


def _values(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Values away from zero (DIV divides by them), of both signs."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)).astype(np.float32)


def ref_scatter(c: np.ndarray, idx: np.ndarray, u: np.ndarray, axis: int, mode: str) -> np.ndarray:
    out = c.copy()
    view = np.moveaxis(out, axis, 0)  # writes go to ``out``
    a = axis % c.ndim
    slices = np.moveaxis(u, list(range(a, a + idx.ndim)), list(range(idx.ndim))).reshape(idx.size, *view.shape[1:])
    for i, k in enumerate(idx.reshape(-1)):
        view[int(k)] = OPS[mode](view[int(k)], slices[i])
    return out


def ref_scatter_nd(c: np.ndarray, idx: np.ndarray, u: np.ndarray, mode: str) -> np.ndarray:
    out = c.copy()
    for pos in np.ndindex(idx.shape[:-1]):
        t = tuple(int(v) for v in idx[pos])
        out[t] = OPS[mode](out[t], u[pos])
    return out


def ref_scatter_along_axis(c: np.ndarray, idx: np.ndarray, u: np.ndarray, axis: int, mode: str) -> np.ndarray:
    out = c.copy()
    a = axis % c.ndim
    for pos in np.ndindex(idx.shape):
        t = list(pos)
        t[a] = int(idx[pos])
        out[tuple(t)] = OPS[mode](out[tuple(t)], u[pos])
    return out


MODES = sorted(OPS)


@pytest.mark.parametrize("mode", MODES)
def test_scatter_every_mode_with_duplicate_and_negative_indices(mode: str, tmp_path: Path,
                                                                 fp32_options: RuntimeOptions) -> None:
    c = _values((4, 5, 3), 0)
    idx = np.array([[1, -1], [3, 1], [1, 0]], np.float32)  # 1 three times; -1 is 4
    u = _values((4, 3, 2, 3), 1)  # container[:1] + indices.shape + container[2:]
    got = run({"c": c, "i": idx, "u": u},
              lambda b: b.add_scatter("s", ["c", "i", "u"], "out", axis=1, mode=mode), tmp_path, fp32_options)
    np.testing.assert_allclose(got, ref_scatter(c, idx, u, 1, mode), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("axis", "cshape", "ishape"), [(0, (5, 2), (6,)), (-1, (2, 3, 4), (2, 3)), (-3, (3, 2, 2), (4,))])
def test_scatter_axes_update(axis: int, cshape: tuple[int, ...], ishape: tuple[int, ...], tmp_path: Path,
                             fp32_options: RuntimeOptions) -> None:
    rng = np.random.default_rng(2)
    n = cshape[axis]
    c = _values(cshape, 3)
    idx = rng.integers(-n, n, ishape).astype(np.float32)
    a = axis % len(cshape)
    u = _values((*cshape[:a], *ishape, *cshape[a + 1:]), 4)
    got = run({"c": c, "i": idx, "u": u},
              lambda b: b.add_scatter("s", ["c", "i", "u"], "out", axis=axis, mode="UPDATE"), tmp_path, fp32_options)
    np.testing.assert_array_equal(got, ref_scatter(c, idx, u, axis, "UPDATE"))


def test_scatter_update_keeps_the_last_of_many_duplicates(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    c = np.zeros((3, 2), np.float32)
    idx = np.array([2, 0, 2, -1, 2, 0], np.float32)  # -1 is 2 as well
    u = np.arange(12, dtype=np.float32).reshape(6, 2) + 1
    got = run({"c": c, "i": idx, "u": u},
              lambda b: b.add_scatter("s", ["c", "i", "u"], "out", axis=0, mode="UPDATE"), tmp_path, fp32_options)
    np.testing.assert_array_equal(got, [[11, 12], [0, 0], [9, 10]])


@pytest.mark.parametrize("mode", MODES)
def test_scatter_nd_every_mode(mode: str, tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    c = _values((4, 3, 5), 5)
    idx = np.array([[[0, 2], [3, -1]], [[0, 2], [1, 0]], [[-4, -1], [2, 2]]], np.float32)  # [3, 2, 2]: dup (0,2), (3,2)
    u = _values((3, 2, 5), 6)
    got = run({"c": c, "i": idx, "u": u},
              lambda b: b.add_scatter_nd("s", ["c", "i", "u"], "out", mode=mode), tmp_path, fp32_options)
    np.testing.assert_allclose(got, ref_scatter_nd(c, idx, u, mode), rtol=1e-6, atol=1e-6)


def test_scatter_nd_full_indices(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    """Indices with as many components as the container's rank: scalar updates."""
    c = _values((3, 2), 7)
    idx = np.array([[0, 1], [2, 0], [0, 1], [1, 1]], np.float32)
    u = np.array([5.0, 6.0, 7.0, 8.0], np.float32)
    got = run({"c": c, "i": idx, "u": u},
              lambda b: b.add_scatter_nd("s", ["c", "i", "u"], "out", mode="UPDATE"), tmp_path, fp32_options)
    np.testing.assert_array_equal(got, ref_scatter_nd(c, idx, u, "UPDATE"))


@pytest.mark.parametrize("mode", MODES)
def test_scatter_along_axis_every_mode(mode: str, tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    c = _values((2, 5, 3), 8)
    idx = np.array([[[4, 0, 1], [4, -1, 1], [0, 3, -5]], [[1, 1, 1], [2, 2, 2], [1, 0, 4]]], np.float32)
    u = _values((2, 3, 3), 9)
    got = run({"c": c, "i": idx, "u": u},
              lambda b: b.add_scatter_along_axis("s", ["c", "i", "u"], "out", axis=-2, mode=mode), tmp_path,
              fp32_options)
    np.testing.assert_allclose(got, ref_scatter_along_axis(c, idx, u, -2, mode), rtol=1e-6, atol=1e-6)


def test_scatter_along_axis_first_axis(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    rng = np.random.default_rng(10)
    c = _values((4, 6), 11)
    idx = rng.integers(-4, 4, (7, 6)).astype(np.float32)
    u = _values((7, 6), 12)
    got = run({"c": c, "i": idx, "u": u},
              lambda b: b.add_scatter_along_axis("s", ["c", "i", "u"], "out", axis=0), tmp_path, fp32_options)
    np.testing.assert_array_equal(got, ref_scatter_along_axis(c, idx, u, 0, "UPDATE"))


def test_scatter_updates_of_the_wrong_shape_are_a_format_error(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    feeds = {"c": _values((4, 3), 0), "i": np.zeros(2, np.float32), "u": _values((3, 3), 1)}
    with pytest.raises(ModelFormatError, match=r"\(scatter\)\.input\[2\].*shape \[2, 3\]"):
        run(feeds, lambda b: b.add_scatter("s", ["c", "i", "u"], "out", axis=0), tmp_path, fp32_options)


def test_scatter_nd_too_many_index_components_is_a_format_error(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    feeds = {"c": _values((4, 3), 0), "i": np.zeros((2, 3), np.float32), "u": _values((2,), 1)}
    with pytest.raises(ModelFormatError, match=r"\(scatterND\)\.input\[1\].*1 to 2 index components"):
        run(feeds, lambda b: b.add_scatter_nd("s", ["c", "i", "u"], "out"), tmp_path, fp32_options)


@pytest.mark.parametrize("layer", ["scatter", "scatterND", "scatterAlongAxis"])
def test_scatter_under_fp16_emulation(layer: str, tmp_path: Path, fp16_options: RuntimeOptions) -> None:
    """fp16 emulation rounds arithmetic outputs through float: index arithmetic must stay float."""
    c = np.arange(12, dtype=np.float32).reshape(4, 3)  # small integers: exact in fp16
    u = -np.arange(6, dtype=np.float32).reshape(2, 3) - 1
    if layer == "scatter":
        idx = np.array([-1, 0], np.float32)
        add, ref = (lambda b: b.add_scatter("s", ["c", "i", "u"], "out", axis=0)), ref_scatter(c, idx, u, 0, "UPDATE")
    elif layer == "scatterND":
        idx = np.array([[1], [-2]], np.float32)
        add, ref = (lambda b: b.add_scatter_nd("s", ["c", "i", "u"], "out")), ref_scatter_nd(c, idx, u, "UPDATE")
    else:
        idx = np.array([[3, -1, 0], [0, 1, 0]], np.float32)
        add = lambda b: b.add_scatter_along_axis("s", ["c", "i", "u"], "out", axis=0)  # noqa: E731
        ref = ref_scatter_along_axis(c, idx, u, 0, "UPDATE")
    np.testing.assert_array_equal(run({"c": c, "i": idx, "u": u}, add, tmp_path, fp16_options), ref)
