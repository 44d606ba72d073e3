"""Masks, predictions and figures that pin the metrics bit for bit (see test_golden_figures.py).

The figures in ``golden_figures.json`` were computed by the metrics code before its speed
work (``python -m tests.data.golden_figures`` rewrites them: only ever do that from code
whose figures are known to be right). Cases: every mask of the fixture golden set with a
prediction derived from it, shapes that exercise each branch of the ground-truth preparation
(small and large objects, objects on the border, empty and full masks), a synthetic 1 MP set,
and the drift path (a soft prediction as the reference).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
FIGURES = Path(__file__).with_name("golden_figures.json")


def _prediction(gt: NDArray[np.float32], seed: int) -> NDArray[np.float32]:
    """A plausible soft prediction of ``gt``: shifted, blurred a little, with noise."""
    rng = np.random.default_rng(seed)
    shifted = np.roll(gt, (seed % 5 - 2, seed % 3 - 1), axis=(0, 1)).astype(np.float64)
    blurred = (shifted + np.roll(shifted, 1, 0) + np.roll(shifted, 1, 1) + np.roll(shifted, -1, 0)) / 4.0
    noisy = blurred + rng.normal(0.0, 0.08, gt.shape)
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def _blob(h: int, w: int, cy: float, cx: float, r: float) -> NDArray[np.float32]:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.clip(1.5 - np.hypot(xx - cx, yy - cy) / r, 0.0, 1.0).astype(np.float32)


def cases() -> Iterator[tuple[str, NDArray[np.float32], NDArray[np.float32], bool]]:
    """(name, prediction, reference mask, with_drift) for every pinned case."""
    for k, path in enumerate(sorted((ROOT / "fixtures" / "golden" / "masks").iterdir())):
        gt = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / np.float32(255.0)
        yield f"fixture/{path.stem}", _prediction(gt, k), gt, False
    h, w = 240, 320
    shapes = {
        "small_centre": _blob(h, w, 120, 160, 20),
        "large_centre": _blob(h, w, 120, 160, 150),  # box over half the frame: the one-transform branch
        "top_left_corner": _blob(h, w, 0, 0, 40),
        "right_border": _blob(h, w, 120, 319, 30),
        "bottom_strip": np.pad(np.ones((3, w), np.float32), ((h - 3, 0), (0, 0))),
        "single_pixel": np.pad(np.ones((1, 1), np.float32), ((57, h - 58), (91, w - 92))),
        "two_objects": np.maximum(_blob(h, w, 40, 40, 15), _blob(h, w, 200, 290, 25)),
        "empty": np.zeros((h, w), np.float32),
        "full": np.ones((h, w), np.float32),
    }
    for k, (name, gt) in enumerate(shapes.items()):
        yield f"shape/{name}", _prediction(gt, 100 + k), gt, False
    for k, (cy, cx, r) in enumerate(((433, 577, 220), (300, 800, 120), (700, 200, 300))):
        gt = _blob(866, 1155, cy, cx, r)
        yield f"1mp/{k}", _prediction(gt, 200 + k), gt, False
    for k, name in enumerate(("small_centre", "two_objects")):
        base = _prediction(shapes[name], 300 + k)
        yield f"drift/{name}", _prediction(base, 310 + k), base, True


def figures() -> dict[str, dict[str, str]]:
    """Every case's per-image values (as float.hex) and curve digests, plus summaries."""
    from pytest_coreml_quality.metrics import Reference, score_mask, summarize

    out: dict[str, dict[str, str]] = {}
    by_group: dict[str, list] = {}
    for name, pred, gt, drift in cases():
        scores = score_mask(pred, Reference(gt), with_drift=drift)
        entry = {key: float(value).hex() for key, value in scores.values.items()}
        for curve in ("f_curve", "e_curve"):
            entry[curve] = hashlib.sha256(np.ascontiguousarray(getattr(scores, curve), np.float64).tobytes()).hexdigest()
        out[name] = entry
        by_group.setdefault(name.split("/")[0], []).append(scores)
    for group, scores in by_group.items():
        out[f"summary/{group}"] = {key: float(value).hex() for key, value in summarize(scores).items()}
    return out


if __name__ == "__main__":
    FIGURES.write_text(json.dumps(figures(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIGURES}")
