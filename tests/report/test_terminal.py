"""Terminal summary table and the worst-images lines of failed checks."""

from __future__ import annotations

import math

import pytest

from pytest_coreml_quality.report.figures import elide, fmt_fixed, fmt_size_mb
from pytest_coreml_quality.thresholds import worst_images
from pytest_coreml_quality.report.terminal import (
    columns,
    render_model,
    render_table,
    worst_image_lines,
)
from pytest_coreml_quality.results import CheckOutcome, LoadTimes, ModelResults, RunResults, VariantResult
from tests.report.sample import LONG_RECIPE, make_run


def _rows(lines: list[str]) -> dict[str, list[str]]:
    """Table rows by their first cell (the possibly elided variant name), split in cells."""
    return {line.split()[0]: line.split() for line in lines[3:] if line and not line.startswith(("size in", "("))}


@pytest.mark.parametrize("width", [100, 88])
def test_every_line_fits_the_width_with_long_names(width: int) -> None:
    run = make_run()
    run.models["TinySeg.mlmodel"].dataset = "/a/very/long/path/to/a/golden/set/" + "deep/" * 20
    lines = render_table(run, width=width)
    assert lines, "a run with a model renders a table"
    assert max(len(line) for line in lines) <= width
    table = lines[1:7]  # titles, rule and the four variants keep one common length
    assert {len(line) for line in table} == {width}


def test_rows_in_order_with_values_and_verdicts() -> None:
    run = make_run()
    lines = render_model(run.models["TinySeg.mlmodel"], width=107)  # room for 20-character names
    assert lines[0].startswith("TinySeg.mlmodel (neuralNetwork, 0123456789ab) backend onnx, dataset fixtures/golden")
    assert lines[1].split() == ["variant", "size", "MB", "dl", "MB", "ratio", "MAE", "IoU", "F", "S", "E", "drift", "cold", "s", "warm", "s", "result"]
    names = [line.split()[0] for line in lines[3:]]
    assert names[:3] == ["base", "q8", "prune50+pal4-int8lut"]  # exactly 20 chars: not elided
    long_name = names[3]
    assert "…" in long_name and long_name.startswith("prune50") and long_name.endswith("long-step")
    assert len(long_name) == 20
    for line, recipe in zip(lines[3:], ("base", "q8", "prune50+pal4-int8lut", LONG_RECIPE)):
        v = run.models["TinySeg.mlmodel"].variants[recipe]
        cells = line.split()
        assert cells[1] == fmt_fixed(v.size_mb, 8, 3 if v.size_mb < 1 else 2)
        assert cells[2] == fmt_size_mb(v.download_mb, 6)
        assert cells[4] == f"{v.metrics['mae']:.4f}"
        assert cells[5] == f"{v.metrics['iou']:.4f}"
        assert cells[7] == f"{v.metrics['s']:.4f}"
        assert cells[9] == f"{v.drift['mae']:.4f}"
        assert cells[10] == f"{v.load.cold_s:.3f}"
        expected = "-" if v.passed is None else ("PASS" if v.passed else "FAIL")
        assert cells[-1] == expected
    assert [line.split()[-1] for line in lines[3:]] == ["-", "PASS", "FAIL", "FAIL"]


def test_base_listed_first_even_when_added_last() -> None:
    model = ModelResults(model="M.mlpackage")
    model.variants["q4"] = VariantResult(recipe="q4")
    model.variants["base"] = VariantResult(recipe="base")
    names = [line.split()[0] for line in render_model(model)[3:]]
    assert names == ["base", "q4"]


def test_missing_figures_render_as_dash() -> None:
    model = ModelResults(model="Empty.mlmodel")
    model.variants["base"] = VariantResult(recipe="base", metrics={"iou": 0.5, "hce": math.nan})
    cells = render_model(model)[3].split()
    assert cells[0] == "base"
    assert cells[5] == "0.5000"
    # size, download, ratio, MAE, F, S, E, drift, cold, warm, result: all unknown
    assert [c for i, c in enumerate(cells) if i not in (0, 5)] == ["-"] * (len(columns()) - 1)


def test_plain_timer_is_marked_and_explained() -> None:
    model = ModelResults(model="M.mlmodel")
    model.variants["base"] = VariantResult(recipe="base", load=LoadTimes(cold_s=1.25, warm_s=0.5, timer="perf_counter"))
    run = RunResults(models={"M.mlmodel": model})
    lines = render_table(run)
    assert lines[3].split()[10:12] == ["1.250*", "0.500*"]
    assert "* = plain timer" in " ".join(lines)


def test_no_models_no_lines() -> None:
    assert render_table(RunResults()) == []


def test_huge_values_stay_in_their_column() -> None:
    model = ModelResults(model="Big.mlmodel")
    model.variants["base"] = VariantResult(
        recipe="base", size_bytes=123_456_789_012, ratio=1.0, load=LoadTimes(cold_s=123456.7, warm_s=math.inf)
    )
    lines = render_model(model)
    assert len(lines[3]) == 100
    cells = lines[3].split()
    assert cells[1] == "123456.8"  # one decimal fits the 8 columns, three do not
    assert cells[10:12] == ["123457", "inf"]


def test_worst_image_lines_name_the_check_and_the_images() -> None:
    worst = [(f"img_{i}.png", 0.5 - i / 100) for i in range(8)]
    check = CheckOutcome("quality", "mae", 0.31, 0.2, "<=", False, worst)
    lines = worst_image_lines(check, "ISNet.mlmodel[q4]", width=60, limit=3)
    assert lines[0].startswith("ISNet.mlmodel[q4]: quality mae = 0.31 (bound <= 0.2) FAILED")
    assert lines[1].strip() == "worst images by mae:"
    assert [line.split() for line in lines[2:5]] == [["img_0.png", "0.5000"], ["img_1.png", "0.4900"], ["img_2.png", "0.4800"]]
    assert lines[5].strip() == "... and 5 more"
    assert all(len(line) <= 60 for line in lines)


def test_worst_images_follow_the_metric_direction() -> None:
    per_image = {"a": {"mae": 0.1, "iou": 0.9}, "b": {"mae": 0.3, "iou": 0.5}, "c": {"mae": 0.2}, "d": {"s": 0.1}}
    assert worst_images(per_image, "mae", 2) == [("b", 0.3), ("c", 0.2)]
    assert worst_images(per_image, "iou", 5) == [("b", 0.5), ("a", 0.9)]
    assert worst_images(per_image, "s", 5) == [("d", 0.1)]  # only images that have the metric


def test_elide_keeps_both_ends() -> None:
    assert elide("short", 10) == "short"
    assert elide("prune50+pal4-int8lut", 11) == "prune…t8lut"
    assert elide("abc", 1) == "…"
    assert elide("abc", 0) == ""


@pytest.mark.parametrize("width", [80, 60])
def test_narrow_terminals_drop_secondary_columns_but_keep_the_verdict(width: int) -> None:
    lines = render_model(make_run().models["TinySeg.mlmodel"], width=width)
    assert max(len(line) for line in lines) <= width
    # A narrow terminal moves the dataset to a line of its own: find the titles by content.
    at = next(i for i, line in enumerate(lines) if line.startswith("variant"))
    titles = lines[at].split()
    assert titles[-1] == "result" and "MAE" in titles and "IoU" in titles
    assert [line.split()[-1] for line in lines[at + 2 :]] == ["-", "PASS", "FAIL", "FAIL"]
    if width == 80:
        assert "E" not in titles and "S" not in titles and "F" in titles


def test_the_legend_explains_only_the_columns_a_narrow_table_kept() -> None:
    run = make_run()
    wide = " ".join(render_table(run, width=120))
    narrow_lines = render_table(run, width=80)
    narrow = " ".join(narrow_lines)
    assert "E (mean E-measure)" in wide and "dl = " in wide
    header = next(line for line in narrow_lines if line.startswith("variant"))
    assert " E " not in header + " " and "E (mean E-measure)" not in narrow
    assert "MAE" in narrow and "IoU" in narrow  # kept columns are still explained
