"""cropResize against a numpy reference of NeuralNetwork.proto: every BoxCoordinatesMode,
normalized and pixel coordinates, spatialScale, batch-indexed boxes, the two sampling
grids defined on a box, and the grids that are refused."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nn_zoo
from pytest_coreml_quality.errors import UnsupportedModelError
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.base import RuntimeOptions
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend

ct = pytest.importorskip("coremltools")

BOX_MODES = ["CORNERS_HEIGHT_FIRST", "CORNERS_WIDTH_FIRST", "CENTER_SIZE_HEIGHT_FIRST", "CENTER_SIZE_WIDTH_FIRST"]


def _bilinear(img: np.ndarray, y: float, x: float) -> np.ndarray:
    """img [C, H, W] at (y, x), both inside the image."""
    h, w = img.shape[-2:]
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    dy, dx = y - y0, x - x0
    top = img[:, y0, x0] * (1 - dx) + img[:, y0, x1] * dx
    bottom = img[:, y1, x0] * (1 - dx) + img[:, y1, x1] * dx
    return top * (1 - dy) + bottom * dy


def _points(start: float, end: float, n: int, method: str, size: int) -> np.ndarray:
    """numpy.linspace(start, end, n) (ALIGN_ENDPOINTS: the middle when n == 1), kept in [0, size-1]."""
    if n == 1:
        pts = np.array([(start + end) / 2 if method == "ALIGN_ENDPOINTS_MODE" else start])
    else:
        pts = np.linspace(start, end, n)
    return np.clip(pts, 0, size - 1)


def ref_crop_resize(x: np.ndarray, roi: np.ndarray, target: tuple[int, int], method: str, normalized: bool,
                    box_mode: str, scale: float) -> np.ndarray:
    """x [1, B, C, H, W], roi [N, 1, 4|5, 1, 1] -> [N, B, C, Ho, Wo] or [N, 1, C, Ho, Wo]."""
    _, nb, c, h, w = x.shape
    boxes = roi.reshape(roi.shape[0], -1).astype(np.float64)
    out = []
    for box in boxes:
        v = box[-4:]
        if box_mode == "CORNERS_HEIGHT_FIRST":
            y0, x0, y1, x1 = v
        elif box_mode == "CORNERS_WIDTH_FIRST":
            x0, y0, x1, y1 = v
        elif box_mode == "CENTER_SIZE_HEIGHT_FIRST":
            y0, x0, y1, x1 = v[0] - v[2] / 2, v[1] - v[3] / 2, v[0] + v[2] / 2, v[1] + v[3] / 2
        else:
            y0, x0, y1, x1 = v[1] - v[3] / 2, v[0] - v[2] / 2, v[1] + v[3] / 2, v[0] + v[2] / 2
        sy, sx = ((h - 1), (w - 1)) if normalized else (1, 1)
        ys = _points(y0 * sy * scale, y1 * sy * scale, target[0], method, h)
        xs = _points(x0 * sx * scale, x1 * sx * scale, target[1], method, w)
        images = [int(box[0])] if boxes.shape[1] == 5 else range(nb)
        crops = [np.stack([np.stack([_bilinear(x[0, i], yy, xx) for xx in xs], -1) for yy in ys], -2) for i in images]
        out.append(np.stack(crops))
    return np.stack(out).astype(np.float32)


def _corners(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """[N, 4] pixel boxes [h_start, w_start, h_end, w_end] inside an h x w image."""
    rng = np.random.default_rng(seed)
    ys = np.sort(rng.uniform(0, h - 1, (n, 2)), axis=1)
    xs = np.sort(rng.uniform(0, w - 1, (n, 2)), axis=1)
    return np.stack([ys[:, 0], xs[:, 0], ys[:, 1], xs[:, 1]], axis=1)


def _encode(corners: np.ndarray, box_mode: str) -> np.ndarray:
    y0, x0, y1, x1 = corners.T
    return {
        "CORNERS_HEIGHT_FIRST": [y0, x0, y1, x1],
        "CORNERS_WIDTH_FIRST": [x0, y0, x1, y1],
        "CENTER_SIZE_HEIGHT_FIRST": [(y0 + y1) / 2, (x0 + x1) / 2, y1 - y0, x1 - x0],
        "CENTER_SIZE_WIDTH_FIRST": [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0],
    }[box_mode]


def run(x: np.ndarray, roi: np.ndarray, tmp_path: Path, options: RuntimeOptions, **kwargs: Any) -> np.ndarray:
    path = nn_zoo.build_nd({"x": x.shape, "roi": roi.shape},
                           lambda b: b.add_crop_resize("cr", ["x", "roi"], "out", **kwargs), tmp_path / "cr.mlmodel")
    return OnnxBackend().load(Model.open(path), options).predict({"x": x, "roi": roi})["out"]


X = np.random.default_rng(0).uniform(-1, 1, (1, 2, 3, 7, 9)).astype(np.float32)  # [1, B, C, H, W]


@pytest.mark.parametrize("method", ["STRICT_ALIGN_ENDPOINTS_MODE", "ALIGN_ENDPOINTS_MODE"])
@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("box_mode", BOX_MODES)
def test_crop_resize_modes(method: str, normalized: bool, box_mode: str, tmp_path: Path,
                           fp32_options: RuntimeOptions) -> None:
    h, w = X.shape[-2:]
    corners = _corners(3, h, w, seed=1)
    if normalized:
        corners = corners / [h - 1, w - 1, h - 1, w - 1]
    roi = np.stack(_encode(corners, box_mode), axis=1).reshape(3, 1, 4, 1, 1).astype(np.float32)
    target = (4, 5)
    got = run(X, roi, tmp_path, fp32_options, target_height=target[0], target_width=target[1], mode=method,
              normalized_roi=normalized, box_indices_mode=box_mode)
    ref = ref_crop_resize(X, roi, target, method, normalized, box_mode, 1.0)
    assert got.shape == (3, 2, 3, 4, 5)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("method", "target"), [("ALIGN_ENDPOINTS_MODE", (1, 1)), ("STRICT_ALIGN_ENDPOINTS_MODE", (1, 3)),
                                                ("ALIGN_ENDPOINTS_MODE", (6, 1))])
def test_crop_resize_batch_indices_spatial_scale_and_single_points(method: str, target: tuple[int, int],
                                                                   tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    """[N, 1, 5, 1, 1] boxes name their image; spatialScale multiplies the coordinates."""
    h, w = X.shape[-2:]
    corners = _corners(4, h, w, seed=2) * 2  # halved again by spatialScale 0.5
    roi = np.concatenate([np.array([[1], [0], [1], [1]]), corners], axis=1).reshape(4, 1, 5, 1, 1).astype(np.float32)
    got = run(X, roi, tmp_path, fp32_options, target_height=target[0], target_width=target[1], mode=method,
              spatial_scale=0.5)
    ref = ref_crop_resize(X, roi, target, method, False, "CORNERS_HEIGHT_FIRST", 0.5)
    assert got.shape == (4, 1, 3, *target)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_crop_resize_points_outside_the_image_are_clamped(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    roi = np.array([-0.5, 0.2, 1.5, 1.25], np.float32).reshape(1, 1, 4, 1, 1)  # normalized, beyond [0, 1]
    got = run(X, roi, tmp_path, fp32_options, target_height=5, target_width=4, normalized_roi=True)
    ref = ref_crop_resize(X, roi, (5, 4), "STRICT_ALIGN_ENDPOINTS_MODE", True, "CORNERS_HEIGHT_FIRST", 1.0)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_crop_resize_in_a_rank5_mapped_network(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    """A legacy spec: [C, H, W] and [4, 1, 1] inputs are one image and one box (rank-4 blobs)."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    x = X[0, :1]  # [1, C, H, W]
    builder = NeuralNetworkBuilder([("x", datatypes.Array(*x.shape[1:])), ("roi", datatypes.Array(4, 1, 1))],
                                   [("out", datatypes.Array(3, 4, 6))])
    builder.add_crop_resize("cr", ["x", "roi"], "out", target_height=4, target_width=6, mode="ALIGN_ENDPOINTS_MODE",
                            normalized_roi=True)
    path = tmp_path / "cr.mlmodel"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ct.utils.save_spec(builder.spec, str(path))
    roi = np.array([0.1, 0.3, 0.9, 0.8], np.float32)
    got = OnnxBackend().load(Model.open(path), fp32_options).predict({"x": x[0], "roi": roi.reshape(4, 1, 1)})["out"]
    ref = ref_crop_resize(x[None], roi.reshape(1, 1, 4, 1, 1), (4, 6), "ALIGN_ENDPOINTS_MODE", True,
                          "CORNERS_HEIGHT_FIRST", 1.0)
    np.testing.assert_allclose(got, ref.reshape(3, 4, 6), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["UPSAMPLE_MODE", "ROI_ALIGN_MODE"])
def test_crop_resize_grids_defined_only_on_a_whole_axis_are_unsupported(method: str, tmp_path: Path,
                                                                        fp32_options: RuntimeOptions) -> None:
    roi = np.zeros((1, 1, 4, 1, 1), np.float32)
    with pytest.raises(UnsupportedModelError, match=rf"\(cropResize\).*{method}.*STRICT_ALIGN_ENDPOINTS_MODE or "
                                                    r"ALIGN_ENDPOINTS_MODE"):
        run(X, roi, tmp_path, fp32_options, mode=method)
