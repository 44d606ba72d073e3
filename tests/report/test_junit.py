"""JUnit properties: one flat, stable name per figure."""

from __future__ import annotations

import math

import pytest

from pytest_coreml_quality.report.junit import junit_properties
from pytest_coreml_quality.results import CheckOutcome, LoadTimes, VariantResult
from tests.report.sample import make_run


def test_every_measured_figure_is_a_property() -> None:
    v = make_run().models["TinySeg.mlmodel"].variants["q8"]
    props = dict(junit_properties(v))
    assert props["coreml.variant"] == "q8"
    assert props["coreml.size_bytes"] == v.size_bytes
    assert props["coreml.size_mb"] == pytest.approx(v.size_bytes / 1e6)
    assert props["coreml.ratio"] == pytest.approx(v.ratio)
    assert props["coreml.iou"] == v.metrics["iou"]
    assert props["coreml.mae"] == v.metrics["mae"]
    assert props["coreml.drift.mae"] == v.drift["mae"]
    assert props["coreml.drift.psnr"] == v.drift["psnr"]
    assert props["coreml.cold_load_s"] == 1.5
    assert props["coreml.warm_load_s"] == pytest.approx(0.06)
    assert props["coreml.load_speedup"] == pytest.approx(25.0)
    assert props["coreml.load_timer"] == "pytest-benchmark"
    assert props["coreml.passed"] is True
    names = [name for name, _ in junit_properties(v)]
    assert len(names) == len(set(names)) and all(n.startswith("coreml.") for n in names)


def test_unmeasured_figures_are_left_out_and_infinity_is_text() -> None:
    v = VariantResult(recipe="base", drift={"psnr": math.inf}, load=LoadTimes())
    props = dict(junit_properties(v, prefix="cm."))
    assert props == {"cm.variant": "base", "cm.drift.psnr": "inf"}


def test_failed_check_gives_passed_false() -> None:
    v = VariantResult(recipe="q4", checks=[CheckOutcome("size", "size_mb", 3.0, 2.0, "<=", False)])
    assert dict(junit_properties(v))["coreml.passed"] is False
