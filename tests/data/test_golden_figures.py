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
