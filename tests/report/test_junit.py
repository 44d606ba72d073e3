"""JUnit properties: one flat, stable name per figure, from the catalogue."""

from __future__ import annotations

import math

import pytest

from pytest_coreml_quality import catalogue
from pytest_coreml_quality.report.junit import junit_properties
from pytest_coreml_quality.results import LoadTimes, VariantResult
from tests.report.sample import make_run


def test_every_measured_figure_is_a_property_named_by_its_catalogue_key() -> None:
    v = make_run().models["TinySeg.mlmodel"].variants["q8"]
    props = dict(junit_properties(v))
    assert props["coreml.size_mb"] == pytest.approx(v.size_bytes / 1e6)
    assert props["coreml.ratio"] == pytest.approx(v.ratio, abs=1e-6)
    assert props["coreml.iou"] == pytest.approx(v.metrics["iou"], abs=1e-6)
    assert props["coreml.mae"] == pytest.approx(v.metrics["mae"], abs=1e-6)
    assert props["coreml.drift_mae"] == pytest.approx(v.drift["mae"], abs=1e-6)
    assert props["coreml.cold_load_s"] == 1.5
    assert props["coreml.warm_load_s"] == pytest.approx(0.06)
    assert props["coreml.load_speedup"] == pytest.approx(25.0)
    assert props["coreml.load_timer"] == "pytest-benchmark"
    names = [name for name, _ in junit_properties(v)]
    assert len(names) == len(set(names)) and all(n.startswith("coreml.") for n in names)
    assert {n.removeprefix("coreml.") for n in names} - {"load_timer"} <= {f.key for f in catalogue.figures()}


def test_each_item_records_only_the_figures_it_judges() -> None:
    v = make_run().models["TinySeg.mlmodel"].variants["q8"]
    size = {name for name, _ in junit_properties(v, "size")}
    quality = {name for name, _ in junit_properties(v, "quality")}
    assert size == {"coreml.size_mb", "coreml.download_mb", "coreml.build_s", "coreml.ratio", "coreml.bits_per_weight"} & {f"coreml.{f.key}" for f, _ in catalogue.values(v)}
    assert "coreml.iou" in quality and "coreml.drift_mae" in quality and "coreml.size_mb" not in quality


def test_unmeasured_figures_are_left_out_and_infinity_is_text() -> None:
    v = VariantResult(recipe="base", drift={"psnr": math.inf}, load=LoadTimes())
    assert dict(junit_properties(v, prefix="cm.")) == {"cm.drift_psnr": "inf"}
