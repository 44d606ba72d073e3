"""Baselines: saved figures, tolerance rules by direction, warnings, and clear errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pytest_coreml_quality.baseline import (
    BASELINE_KIND,
    BaselineDiff,
    Tolerances,
    compare_to_baseline,
    load_baseline,
    save_baseline,
)
from pytest_coreml_quality import catalogue
from pytest_coreml_quality.errors import CoreMLQualityError, SettingError
from pytest_coreml_quality.settings import _tolerance
from pytest_coreml_quality.report.json_report import write_json
from tests.report.sample import make_run

MODEL = "TinySeg.mlmodel"


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return save_baseline(tmp_path / "baseline.json", make_run())


def _only(comparison, metric: str) -> BaselineDiff:
    found = [d for d in comparison if d.metric == metric]
    assert len(found) == 1, comparison.diffs
    return found[0]


def test_saved_file_has_figures_hash_and_versions_but_no_per_image(saved: Path) -> None:
    data = json.loads(saved.read_text())
    assert data["kind"] == BASELINE_KIND
    assert data["versions"] == {"coremltools": "9.0", "numpy": "2.0"}
    model = data["models"][MODEL]
    assert model["content_hash"] == "0123456789abcdef" * 4
    q8 = model["variants"]["q8"]
    assert q8["size_bytes"] == make_run().models[MODEL].variants["q8"].size_bytes
    assert q8["metrics"]["iou"] == pytest.approx(0.94)
    assert q8["drift"]["mae"] == pytest.approx(0.001)
    assert q8["load"] == {"cold_s": 1.5, "warm_s": pytest.approx(0.06), "timer": "pytest-benchmark", "predict_ms": None}
    assert "per_image" not in q8 and "checks" not in q8
    assert model["variants"]["base"]["drift"]["psnr"] == "inf"  # strict JSON


def test_same_run_compares_clean(saved: Path) -> None:
    comparison = compare_to_baseline(make_run(), saved)
    assert comparison.diffs == [] and comparison.warnings == [] and not comparison.failed
    assert len(comparison) == 0


def test_loaded_baseline_matches_the_run_figures(saved: Path) -> None:
    old, _ = load_baseline(saved)
    run = make_run()
    for recipe, v in run.models[MODEL].variants.items():
        o = old.models[MODEL].variants[recipe]
        assert (o.size_bytes, o.metrics, o.drift, o.load) == (v.size_bytes, v.metrics, v.drift, v.load)


@pytest.mark.parametrize(
    ("metric", "delta", "worse", "failed"),
    [
        ("iou", -0.004, True, False),  # higher is better: a small drop passes
        ("iou", -0.006, True, True),
        ("iou", +0.05, False, False),  # better never fails
        ("mae", +0.006, True, True),  # lower is better
        ("mae", -0.05, False, False),
        ("s", -0.006, True, True),
        ("mean_e", +0.01, False, False),
        ("loss255", +1.0, True, False),  # 0.005 scaled to 0..255 allows 1.275
        ("loss255", +1.5, True, True),
    ],
)
def test_metric_tolerance_applies_in_the_worse_direction_only(
    saved: Path, metric: str, delta: float, worse: bool, failed: bool
) -> None:
    run = make_run()
    q8 = run.models[MODEL].variants["q8"]
    old = q8.metrics[metric]
    q8.metrics[metric] = old + delta
    comparison = compare_to_baseline(run, saved)
    diff = _only(comparison, metric)
    assert (diff.model, diff.variant, diff.old, diff.new) == (MODEL, "q8", old, old + delta)
    assert (diff.worse, diff.failed) == (worse, failed)
    assert comparison.failed == failed
    assert diff.allowed == pytest.approx(1.275 if metric == "loss255" else 0.005)


def test_drift_figures_are_compared_by_direction(saved: Path) -> None:
    run = make_run()
    q8 = run.models[MODEL].variants["q8"]
    q8.drift["flip_share"] += 0.01
    q8.drift["psnr"] -= 1.0  # relative tolerance: 0.5 % of 39 dB is 0.195 dB
    comparison = compare_to_baseline(run, saved)
    assert _only(comparison, "drift_flip_share").failed
    psnr = _only(comparison, "drift_psnr")
    assert psnr.failed and psnr.allowed == pytest.approx(0.005 * 39.0)


def test_base_psnr_infinity_to_finite_is_a_regression(saved: Path) -> None:
    run = make_run()
    run.models[MODEL].variants["base"].drift["psnr"] = 60.0
    diff = _only(compare_to_baseline(run, saved), "drift_psnr")
    assert diff.old == math.inf and diff.worse and diff.failed


@pytest.mark.parametrize(("factor", "failed"), [(1.005, False), (1.02, True), (0.5, False)])
def test_size_tolerance_is_relative(saved: Path, factor: float, failed: bool) -> None:
    run = make_run()
    q8 = run.models[MODEL].variants["q8"]
    old = q8.size_bytes
    q8.size_bytes = int(old * factor)
    diff = _only(compare_to_baseline(run, saved), "size_mb")
    assert diff.failed == failed and diff.worse == (factor > 1)
    assert diff.allowed == pytest.approx(0.01 * old / 1e6)


@pytest.mark.parametrize(("factor", "failed"), [(1.4, False), (1.6, True)])
def test_load_tolerance_is_relative_and_loose(saved: Path, factor: float, failed: bool) -> None:
    run = make_run()
    run.models[MODEL].variants["q8"].load.cold_s *= factor
    assert _only(compare_to_baseline(run, saved), "cold_load_s").failed == failed


def test_custom_tolerances(saved: Path) -> None:
    run = make_run()
    run.models[MODEL].variants["q8"].metrics["iou"] -= 0.006
    assert not compare_to_baseline(run, saved, Tolerances(metric=0.01)).failed
    run.models[MODEL].variants["q8"].size_bytes += 1
    assert compare_to_baseline(run, saved, Tolerances(metric=0.01, size=0.0)).failed


def test_describe_gives_old_new_and_allowance(saved: Path) -> None:
    run = make_run()
    run.models[MODEL].variants["q8"].metrics["iou"] = 0.93
    run.models[MODEL].variants["q8"].metrics["mae"] = 0.001
    comparison = compare_to_baseline(run, saved)
    text = _only(comparison, "iou").describe()
    assert text == "TinySeg.mlmodel[q8] iou: 0.94 -> 0.93 (worse by 0.01, allowed 0.005) FAILED"
    assert "better by" in _only(comparison, "mae").describe()
    assert [d.metric for d in comparison.failures] == ["iou"]
    assert comparison.for_variant(MODEL, "q8") == comparison.diffs


def test_other_model_hash_warns_clearly(saved: Path) -> None:
    run = make_run()
    run.models[MODEL].content_hash = "f" * 64
    comparison = compare_to_baseline(run, saved)
    assert len(comparison.warnings) == 1
    warning = comparison.warnings[0]
    assert "different model file" in warning and "0123456789ab" in warning and "ffffffffffff" in warning
    assert str(saved) in warning and "--coreml-save-baseline" in warning


def test_gaps_and_version_changes_are_warnings_not_failures(saved: Path) -> None:
    run = make_run()
    models = run.models[MODEL].variants
    del models["q8"]
    models["q2"] = models.pop("prune50+pal4-int8lut")
    models["q2"].recipe = "q2"
    del models["base"].metrics["dice"]
    run.versions["coremltools"] = "9.1"
    comparison = compare_to_baseline(run, saved)
    assert not comparison.failed
    assert "TinySeg.mlmodel[q2] has no figures in baseline" in comparison.not_compared[(MODEL, "q2")]
    assert list(comparison.not_compared) == [(MODEL, "q2")]
    text = "\n".join(comparison.warnings)
    assert "variants in the baseline but not in this run: prune50+pal4-int8lut, q8" in text
    assert "TinySeg.mlmodel[base]: in the baseline but not measured in this run: dice" in text
    assert "coremltools 9.0 -> 9.1" in text


def test_model_missing_from_baseline_compares_nothing_and_says_so(saved: Path) -> None:
    run = make_run()
    run.models["Other.mlpackage"] = run.models.pop(MODEL)
    run.models["Other.mlpackage"].model = "Other.mlpackage"
    run.models["Other.mlpackage"].content_hash = "e" * 64
    comparison = compare_to_baseline(run, saved)
    assert comparison.diffs == []
    assert set(comparison.not_compared) == {("Other.mlpackage", r) for r in run.models["Other.mlpackage"].variants}
    why = comparison.not_compared[("Other.mlpackage", "q8")]
    assert "Other.mlpackage is not in baseline" in why and MODEL in why and "--coreml-save-baseline" in why


def test_renamed_model_file_is_matched_by_content_hash(saved: Path) -> None:
    run = make_run()
    run.models["Renamed.mlmodel"] = run.models.pop(MODEL)
    run.models["Renamed.mlmodel"].variants["q8"].metrics["iou"] -= 0.1
    comparison = compare_to_baseline(run, saved)
    assert comparison.not_compared == {}
    assert [d.metric for d in comparison.failures] == ["iou"]
    assert any("same model content, other file name" in w and MODEL in w for w in comparison.warnings)


def test_variant_with_no_common_figure_compares_nothing(saved: Path) -> None:
    run = make_run()
    q8 = run.models[MODEL].variants["q8"]
    q8.size_bytes, q8.metrics, q8.drift = None, {}, {}
    q8.load.cold_s = q8.load.warm_s = None
    comparison = compare_to_baseline(run, saved)
    assert "no figure was measured both in this run and in baseline" in comparison.not_compared[(MODEL, "q8")]


def test_another_golden_set_warns(saved: Path) -> None:
    base = make_run()
    base.models[MODEL].dataset_images, base.models[MODEL].dataset_hash = 28, "a" * 32
    path = save_baseline(saved.parent / "with_set.json", base)
    run = make_run()
    run.models[MODEL].dataset_images, run.models[MODEL].dataset_hash = 30, "b" * 32
    text = "\n".join(compare_to_baseline(run, path).warnings)
    assert "measured on another golden set (28 images then, 30 now)" in text
    same = make_run()
    same.models[MODEL].dataset_images, same.models[MODEL].dataset_hash = 28, "a" * 32
    assert compare_to_baseline(same, path).warnings == []


def test_load_times_from_another_timer_are_not_compared(saved: Path) -> None:
    run = make_run()
    q8 = run.models[MODEL].variants["q8"]
    q8.load.cold_s *= 10
    q8.load.timer = "perf_counter"
    comparison = compare_to_baseline(run, saved)
    assert not comparison.failed and all(d.metric != "cold_load_s" for d in comparison.diffs)
    assert any("load times not compared" in w and "perf_counter" in w for w in comparison.warnings)


def test_old_names_of_figures_are_still_understood() -> None:
    assert catalogue.get("drift.mae") is catalogue.get("drift_mae") is not None
    assert catalogue.get("size_bytes") is catalogue.get("size_mb")
    assert catalogue.get("cold_s").key == "cold_load_s"


def test_json_report_serves_as_baseline(tmp_path: Path) -> None:
    path = write_json(tmp_path / "report.json", make_run())
    assert compare_to_baseline(make_run(), path).diffs == []


@pytest.mark.parametrize(
    ("content", "field", "fragment"),
    [
        (None, None, "file not found"),
        ('{"schema": 1, "models": {', None, "not valid JSON"),
        ('"text"', None, "holds a JSON str"),
        ('{"models": {}}', "schema", "schema None"),
        ('{"schema": 1}', "models", "is missing"),
        ('{"schema": 1, "models": {"M": {"variants": {"q8": {"metrics": {"iou": "high"}}}}}}', "models.M.variants.q8.metrics.iou", "holds 'high'"),
        ('{"schema": 1, "models": {"M": {"variants": []}}}', "models.M.variants", "holds a list"),
        ('{"schema": 1, "models": {"M": {"variants": {"q8": {"load": {"cold_s": true}}}}}}', "models.M.variants.q8.load.cold_s", "holds True"),
    ],
)
def test_missing_or_corrupt_baseline_is_a_clear_error(tmp_path: Path, content: str | None, field: str | None, fragment: str) -> None:
    path = tmp_path / "baseline.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CoreMLQualityError) as info:
        compare_to_baseline(make_run(), path)
    err = info.value
    assert err.path == str(path) and err.field == field and fragment in str(err)
    assert err.expected  # says what was expected


def test_tolerances_must_be_non_negative_numbers() -> None:
    with pytest.raises(CoreMLQualityError, match="coreml_baseline_tolerance_size"):
        Tolerances(size=-0.1)
    with pytest.raises(CoreMLQualityError, match="coreml_baseline_tolerance_metric"):
        Tolerances(metric=math.nan)


@pytest.mark.parametrize(("text", "value"), [("0.01", 0.01), ("1%", 0.01), (" 50% ", 0.5), (0.2, 0.2)])
def test_tolerance_setting(text: object, value: float) -> None:
    assert _tolerance("coreml_baseline_tolerance_load", text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["abc", "-1", "inf", "5%%", "nan"])
def test_tolerance_setting_rejects_bad_values(text: str) -> None:
    with pytest.raises(SettingError, match="coreml-baseline-tolerance-load"):
        _tolerance("coreml_baseline_tolerance_load", text)


def test_directions_come_from_the_catalogue() -> None:
    assert catalogue.higher_is_better("iou") is True and catalogue.higher_is_better("mae") is False
    for figure in catalogue.figures("quality"):
        if figure.key in catalogue.LABEL_FIGURES:  # accuracy against labels.csv: its drift is top1_agreement
            continue
        assert catalogue.higher_is_better("drift_" + figure.key) is figure.higher_is_better, figure.key
        assert catalogue.higher_is_better("drift." + figure.key) is figure.higher_is_better, figure.key
    assert catalogue.higher_is_better("drift_flip_share") is False
    assert catalogue.higher_is_better("no_such_metric") is None
