"""The metrics give exactly the figures they gave before their speed work (bit for bit).

``golden_figures.json`` holds, as float.hex, every per-image value, a digest of the F/E
curves and the summaries of cases covering the fixture golden set, each branch of the
ground-truth preparation, a synthetic 1 MP set and the drift path (see golden_figures.py).
"""

from __future__ import annotations

import json

from tests.data.golden_figures import FIGURES, figures


def test_metrics_figures_are_bit_for_bit_unchanged() -> None:
    expected = json.loads(FIGURES.read_text())
    actual = figures()
    assert sorted(actual) == sorted(expected)
    changed = [(case, key) for case in expected for key in expected[case] if actual[case].get(key) != expected[case][key]]
    assert not changed, f"figures changed: {changed[:10]}"
    assert all(sorted(actual[case]) == sorted(expected[case]) for case in expected)


def test_importance_is_exactly_two_beyond_its_reach() -> None:
    """Pixel distances are square roots of integers; from IMPORTANCE_REACH on (checked over a
    wide span; the importance only grows with distance) ``2 - 0.5 ** (d / 5)`` is 2.0 exactly."""
    import numpy as np

    from pytest_coreml_quality.metrics.reference import IMPORTANCE_REACH

    squared = np.arange(IMPORTANCE_REACH**2, (6 * IMPORTANCE_REACH) ** 2, dtype=np.float64)
    importance = 2.0 - np.exp(np.log(0.5) / 5.0 * np.sqrt(squared))
    assert np.all(importance == 2.0)
    assert 2.0 - np.exp(np.log(0.5) / 5.0 * 260.0) < 2.0  # the reach is not much larger than needed


def test_prepared_reference_equals_a_whole_frame_transform() -> None:
    """The box-limited transform gives the importance and nearest pixels of a whole-frame one."""
    import numpy as np
    from scipy import ndimage

    from pytest_coreml_quality.metrics import Reference

    h, w = 900, 1000
    yy, xx = np.mgrid[0:h, 0:w]
    for cy, cx, r in ((450, 500, 40), (50, 940, 60), (700, 300, 350)):
        mask = (np.hypot(yy - cy, xx - cx) <= r).astype(np.float32)
        ref = Reference(mask)
        dist, (iy, ix) = ndimage.distance_transform_edt(~ref.binary, return_indices=True)
        whole = np.where(ref.binary, 1.0, 2.0 - np.exp(np.log(0.5) / 5.0 * dist))
        assert np.array_equal(ref.importance, whole)
        rows, cols = ref.dependency_box
        ny, nx = ref.nearest_fg
        # Ties may pick another nearest pixel at the same distance; the distance is what counts.
        assert np.array_equal((ny + rows.start - yy[rows, cols]) ** 2 + (nx + cols.start - xx[rows, cols]) ** 2,
                              (iy[rows, cols] - yy[rows, cols]) ** 2 + (ix[rows, cols] - xx[rows, cols]) ** 2)
