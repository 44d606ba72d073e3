"""The NonMaximumSuppression layer against a numpy greedy NMS written from NeuralNetwork.proto:
batches, per-class suppression, thresholds as inputs, padding, the no-survivor rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_coreml_quality.errors import ModelFormatError, UnsupportedModelError
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.base import RuntimeOptions
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend
from tests.runtime import nn_zoo

ct = pytest.importorskip("coremltools")

OUTPUTS = ["out_boxes", "out_scores", "out_indices", "out_count"]


def run(feeds: dict[str, np.ndarray], tmp_path: Path, options: RuntimeOptions, **kwargs: Any) -> list[np.ndarray]:
    path = nn_zoo.build_nd({k: v.shape for k, v in feeds.items()},
                           lambda b: b.add_nms("nms", list(feeds), OUTPUTS, **kwargs), tmp_path / "nms.mlmodel", OUTPUTS)
    out = OnnxBackend().load(Model.open(path), options).predict(feeds)
    return [out[o] for o in OUTPUTS]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two [x_center, y_center, width, height] boxes."""
    a0, a1 = a[:2] - a[2:] / 2, a[:2] + a[2:] / 2
    b0, b1 = b[:2] - b[2:] / 2, b[:2] + b[2:] / 2
    inter = np.prod(np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None))
    return float(inter / (np.prod(a[2:]) + np.prod(b[2:]) - inter))


def ref_nms(boxes: np.ndarray, scores: np.ndarray, iou: float, threshold: float, max_boxes: int,
            per_class: bool) -> list[np.ndarray]:
    bsz, _, c = scores.shape
    out_b, out_s = np.zeros((bsz, max_boxes, 4)), np.zeros((bsz, max_boxes, c))
    out_i, out_n = -np.ones((bsz, max_boxes)), np.zeros(bsz)
    for bi in range(bsz):
        best, cls = scores[bi].max(1), scores[bi].argmax(1)
        order = [i for i in np.argsort(-best, kind="stable") if best[i] >= threshold]
        taken: list[int] = []
        for i in order:
            if len(taken) == max_boxes:
                break
            if any(_iou(boxes[bi, i], boxes[bi, j]) > iou and (not per_class or cls[i] == cls[j]) for j in taken):
                continue
            taken.append(i)
        if not taken:
            taken = [int(np.argmax(best))]
        for r, i in enumerate(taken):
            out_b[bi, r], out_s[bi, r], out_i[bi, r] = boxes[bi, i], scores[bi, i], i
        out_n[bi] = len(taken)
    return [out_b, out_s, out_i, out_n]


def _inputs(b: int, n: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes clustered so that many overlap; distinct scores (no ties to order)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 5, (b, n, 2))
    sizes = rng.uniform(1, 4, (b, n, 2))
    scores = rng.permutation(b * n * c).reshape(b, n, c) / (b * n * c)
    return np.concatenate([centres, sizes], -1).astype(np.float32), scores.astype(np.float32)


def check(got: list[np.ndarray], ref: list[np.ndarray]) -> None:
    for g, r in zip(got, ref):
        assert g.shape == r.shape, (g.shape, r.shape)
        np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("per_class", [False, True])
@pytest.mark.parametrize(("iou", "threshold", "max_boxes"), [(0.3, 0.2, 12), (0.45, 0.0, 20), (0.1, 0.5, 3)])
def test_nms(per_class: bool, iou: float, threshold: float, max_boxes: int, tmp_path: Path,
             fp32_options: RuntimeOptions) -> None:
    boxes, scores = _inputs(2, 12, 3, seed=int(iou * 10) + max_boxes)
    got = run({"boxes": boxes, "scores": scores}, tmp_path, fp32_options, iou_threshold=iou,
              score_threshold=threshold, max_boxes=max_boxes, per_class_suppression=per_class)
    check(got, ref_nms(boxes, scores, iou, threshold, max_boxes, per_class))


def test_nms_score_equal_to_the_threshold_is_kept(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    boxes = np.array([[[0, 0, 1, 1], [5, 5, 1, 1], [9, 9, 1, 1]]], np.float32)
    scores = np.array([[[0.5], [0.25], [0.75]]], np.float32)
    got = run({"boxes": boxes, "scores": scores}, tmp_path, fp32_options, score_threshold=0.5, max_boxes=3)
    check(got, ref_nms(boxes, scores, 0.5, 0.5, 3, False))
    assert got[3][0] == 2


def test_nms_with_no_box_above_the_threshold_gives_the_best_one(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    boxes, scores = _inputs(2, 6, 2, seed=3)
    scores[1] += 1.0  # batch 1 passes the threshold, batch 0 does not
    got = run({"boxes": boxes, "scores": scores}, tmp_path, fp32_options, score_threshold=1.0, max_boxes=4)
    check(got, ref_nms(boxes, scores, 0.5, 1.0, 4, False))
    assert got[3][0] == 1 and got[2][0, 0] == np.argmax(scores[0].max(1))


def test_nms_thresholds_from_inputs(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    boxes, scores = _inputs(1, 10, 2, seed=4)
    feeds = {"boxes": boxes, "scores": scores, "iou": np.array([0.2], np.float32), "thr": np.array([0.3], np.float32)}
    got = run(feeds, tmp_path, fp32_options, iou_threshold=0.9, score_threshold=0.0, max_boxes=6)
    check(got, ref_nms(boxes, scores, 0.2, 0.3, 6, False))


def test_nms_max_boxes_as_input_is_unsupported(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    boxes, scores = _inputs(1, 4, 1, seed=5)
    feeds = {"boxes": boxes, "scores": scores, "iou": np.array([0.5], np.float32), "thr": np.zeros(1, np.float32),
             "max": np.array([2], np.float32)}
    with pytest.raises(UnsupportedModelError, match=r"\(NonMaximumSuppression\).*fifth input"):
        run(feeds, tmp_path, fp32_options)


def test_nms_boxes_of_the_wrong_shape_are_a_format_error(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    feeds = {"boxes": np.zeros((1, 4, 5), np.float32), "scores": np.zeros((1, 4, 2), np.float32)}
    with pytest.raises(ModelFormatError, match=r"\(NonMaximumSuppression\)\.input.*\(B, N, 4\)"):
        run(feeds, tmp_path, fp32_options)
