"""The figure catalogue: one entry makes a figure appear everywhere.

The first tests add a figure that exists only in this file (recall of the foreground)
and find it, untouched by any other module, as an option and ini key, a marker keyword,
a terminal column and legend phrase, a JSON summary entry, a JUnit property, a baseline
comparison, a threshold check, and in results merged from xdist workers.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pytest_coreml_quality import catalogue
from pytest_coreml_quality.baseline import compare_to_baseline, save_baseline
from pytest_coreml_quality.catalogue import Column, Figure
from pytest_coreml_quality.markers import marker_bounds, marker_help
from pytest_coreml_quality.metrics import Reference, score_mask, summarize
from pytest_coreml_quality.report.json_report import report_dict
from pytest_coreml_quality.report.html import render_html
from pytest_coreml_quality.report.junit import junit_properties
from pytest_coreml_quality.report.terminal import legend, render_table
from pytest_coreml_quality.results import CheckOutcome, LoadTimes, ModelResults, RunResults, VariantResult, merge_results
from pytest_coreml_quality.settings import all_options, resolve
from pytest_coreml_quality.thresholds import Bound, judge
from tests.report.sample import make_run

from .conftest import FIXTURES

MODEL = FIXTURES / "models" / "TinySeg.mlmodel"
GOLDEN = FIXTURES / "golden"


def _recall(pred: np.ndarray, ref: Reference) -> float:
    """Share of the ground truth's foreground pixels that the prediction finds (at 0.5)."""
    if ref.n_fg == 0:
        return 1.0
    return float(np.count_nonzero((pred >= 0.5) & ref.binary) / ref.n_fg)


@pytest.fixture
def recall() -> Iterator[Figure]:
    """A figure declared in one place: this fixture."""
    figure = catalogue.register(
        Figure(
            "fg_recall", "quality", True, "foreground recall", keyword="min_fg_recall",
            column=Column("Rec", 6, 4, order=45, legend="Rec (foreground recall)"),  # never dropped
            compute=_recall,
        )
    )
    yield figure
    catalogue.unregister(figure.key)


def test_a_new_figure_gets_option_ini_key_and_marker_keyword(recall: Figure) -> None:
    spec = next(s for s in all_options() if s.dest == "coreml_min_fg_recall")
    assert (spec.flag, spec.ini) == ("--coreml-min-fg-recall", "coreml_min_fg_recall")
    assert "foreground recall" in spec.help and "below" in spec.help
    settings = resolve({"coreml_min_fg_recall": "0.75"}.get, lambda name: None, Path.cwd(), Path.cwd())
    assert settings.thresholds == {"coreml_min_fg_recall": 0.75}
    bounds, _ = marker_bounds("coreml_quality", (), {"min_fg_recall": 0.8}, "test_x")
    assert [(b.check, b.metric, b.op, b.value) for b in bounds] == [("quality", "fg_recall", ">=", 0.8)]
    assert "min_fg_recall=None" in marker_help("coreml_quality")


def test_a_new_figure_is_scored_aggregated_and_judged(recall: Figure) -> None:
    truth = np.zeros((4, 4), np.float32)
    truth[:2] = 1.0  # 8 foreground pixels
    pred = np.zeros((4, 4), np.float32)
    pred[0] = 0.9  # finds 4 of them
    scores = [score_mask(pred, truth), score_mask(truth, truth)]
    assert scores[0]["fg_recall"] == 0.5 and scores[1]["fg_recall"] == 1.0
    assert summarize(scores)["fg_recall"] == pytest.approx(0.75)
    result = VariantResult("q4", metrics={"fg_recall": 0.75}, per_image={"a.png": {"fg_recall": 0.5}, "b.png": {"fg_recall": 1.0}})
    (outcome,) = judge(result, "q4", "quality", [Bound.on(recall, 0.8)])
    assert (outcome.metric, outcome.passed, outcome.worst) == ("fg_recall", False, [("a.png", 0.5), ("b.png", 1.0)])


def test_a_new_figure_reaches_every_report_and_the_baseline(recall: Figure, tmp_path: Path) -> None:
    run = make_run()
    q8 = run.models["TinySeg.mlmodel"].variants["q8"]
    q8.metrics["fg_recall"] = 0.9
    table = "\n".join(render_table(run, width=120))
    assert " Rec " in table.splitlines()[1] and "0.9000" in next(line for line in table.splitlines() if line.startswith("q8 "))
    assert "Rec (foreground recall)" in legend()
    assert report_dict(run)["summary"]["TinySeg.mlmodel"]["q8"]["fg_recall"] == 0.9
    assert ("coreml.fg_recall", 0.9) in junit_properties(q8, "quality")
    page = render_html(run, None)
    assert "<th>fg_recall</th>" in page and "<th>drift_mae</th>" in page
    baseline = save_baseline(tmp_path / "baseline.json", run)
    q8.metrics["fg_recall"] = 0.8
    (diff,) = [d for d in compare_to_baseline(run, baseline).diffs if d.metric == "fg_recall"]
    assert (diff.old, diff.new, diff.failed) == (0.9, 0.8, True)


def test_a_new_figure_survives_the_xdist_merge(recall: Figure) -> None:
    controller = RunResults(models={"M": ModelResults("M", variants={"q4": VariantResult("q4", size_bytes=10)})})
    worker = RunResults.from_dict(
        RunResults(models={"M": ModelResults("M", variants={"q4": VariantResult("q4", metrics={"fg_recall": 0.7})})}).to_dict()
    )
    merge_results(controller, worker)
    merged = controller.models["M"].variants["q4"]
    assert recall.value(merged) == 0.7 and merged.size_bytes == 10


@pytest.mark.usefixtures("plain_run_environment")
def test_the_new_figure_end_to_end_through_pytest(recall: Figure, pytester: pytest.Pytester, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    junit = tmp_path / "junit.xml"
    result = pytester.runpytest(
        f"--coreml-model={MODEL}", f"--coreml-dataset={GOLDEN}", f"--coreml-cache-dir={tmp_path / 'cache'}",
        "-k", "quality", "-p", "no:randomly", "--coreml-min-fg-recall=1", f"--coreml-report-json={report}",
        f"--junitxml={junit}",
    )
    value = json.loads(report.read_text())["summary"]["TinySeg.mlmodel"]["base"]["fg_recall"]
    per_image = json.loads(report.read_text())["models"]["TinySeg.mlmodel"]["variants"]["base"]["per_image"]
    assert value == pytest.approx(np.mean([v["fg_recall"] for v in per_image.values()]))
    assert 0.5 < value < 1.0  # TinySeg misses some foreground somewhere
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*fg_recall = *, bound >= 1*", "*Rec*"])
    assert 'name="coreml.fg_recall"' in junit.read_text()


# --- the catalogue itself --------------------------------------------------------------------


def test_every_threshold_figure_has_a_unique_option_and_keyword() -> None:
    figures = catalogue.threshold_figures()
    options = [f.option_dest for f in figures]
    assert len(options) == len(set(options))
    for check in ("quality", "size", "load"):
        assert len(catalogue.keywords(check)) == len([f for f in figures if f.check == check and f.keyword])


def test_todays_user_facing_names_are_kept() -> None:
    """Option and marker names of the first release still mean what they meant."""
    expected = {
        "coreml_max_mae": ("mae", "max_mae"), "coreml_min_iou": ("iou", "min_iou"), "coreml_min_f": ("max_f", "min_f"),
        "coreml_min_s": ("s", "min_s"), "coreml_max_drift": ("drift_mae", "max_drift"),
        "coreml_max_flip": ("drift_flip_share", "max_flip"), "coreml_max_size_mb": ("size_mb", "max_mb"),
        "coreml_max_ratio": ("ratio", "max_ratio"), "coreml_max_cold_load_s": ("cold_load_s", "max_cold_s"),
        "coreml_max_warm_load_s": ("warm_load_s", "max_warm_s"), "coreml_min_load_speedup": ("load_speedup", "min_speedup"),
    }
    for dest, (key, keyword) in expected.items():
        figure = catalogue.by_option(dest)
        assert (figure.key, figure.keyword) == (key, keyword), dest
    assert catalogue.keywords("quality")["min_e"].key == "adp_e" and catalogue.keywords("quality")["min_dice"].key == "dice"


def test_a_figure_declared_twice_or_contradicting_itself_is_refused() -> None:
    with pytest.raises(ValueError, match="already in the catalogue"):
        catalogue.register(Figure("iou", "quality", True, "again"))
    with pytest.raises(ValueError, match="keyword 'min_iou' is taken"):
        catalogue.register(Figure("iou2", "quality", True, "twin", keyword="min_iou"))
    with pytest.raises(ValueError, match="contradicts its direction"):
        Figure("x", "quality", True, "x", keyword="max_x")
    with pytest.raises(ValueError, match="family"):
        Figure("x", "speed", True, "x")


@pytest.mark.parametrize("value", ["1.5", "inf", "-0.1", "nan"])
def test_threshold_options_refuse_values_the_figure_can_never_take(value: str) -> None:
    from pytest_coreml_quality.errors import SettingError

    with pytest.raises(SettingError, match="coreml-min-iou"):
        resolve({"coreml_min_iou": value}.get, lambda name: None, Path.cwd(), Path.cwd())


def test_unbounded_thresholds_accept_large_values() -> None:
    settings = resolve({"coreml_max_size_mb": "500", "coreml_min_load_speedup": "3"}.get, lambda name: None, Path.cwd(), Path.cwd())
    assert settings.thresholds == {"coreml_max_size_mb": 500.0, "coreml_min_load_speedup": 3.0}


def test_merge_copies_every_field_of_a_variant() -> None:
    """A field added to VariantResult (or LoadTimes) is merged without being listed anywhere."""
    full = VariantResult(
        "q4", path="p", kind="k", size_bytes=1, ratio=0.5, download_bytes=1, build_s=0.5, params=2, bits_per_weight=4.0,
        content_hash="h", unchanged=True, note="q4: no change, weights already 8-bit (LUT)", metrics={"iou": 0.9},
        drift={"mae": 0.1}, backend_drift={"mae": 0.01}, per_image={"a": {"iou": 0.9}}, curves={"a": {"f": "packed"}},
        load=LoadTimes(1.0, 0.1, "perf_counter", 2.5),
        checks=[CheckOutcome("size", "size_mb", 1.0, 2.0, "<=", True)],
    )
    unset = {f.name for f in dataclasses.fields(full) if getattr(full, f.name) == getattr(VariantResult("q4"), f.name)}
    assert unset <= {"recipe"}, f"give these fields a value in this test: {unset}"
    into = RunResults(models={"M": ModelResults("M", variants={"q4": VariantResult("q4")})})
    merge_results(into, RunResults(models={"M": ModelResults("M", variants={"q4": full})}))
    assert into.models["M"].variants["q4"] == full


def test_merge_keeps_what_the_other_worker_did_not_measure() -> None:
    mine = VariantResult("q4", size_bytes=5, load=LoadTimes(cold_s=2.0, timer="pytest-benchmark"))
    theirs = VariantResult("q4", metrics={"iou": 0.8}, load=LoadTimes(warm_s=0.5, timer="perf_counter"))
    into = RunResults(models={"M": ModelResults("M", variants={"q4": mine})})
    merge_results(into, RunResults(models={"M": ModelResults("M", variants={"q4": theirs})}))
    merged = into.models["M"].variants["q4"]
    assert (merged.size_bytes, merged.metrics, merged.load.cold_s, merged.load.warm_s) == (5, {"iou": 0.8}, 2.0, 0.5)
    assert math.isclose(merged.load.speedup or 0, 4.0)
