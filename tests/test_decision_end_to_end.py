"""The decision end to end (pytester): a budgeted sweep, the recommend item, fixture, JSON,
JUnit, plot and HTML, on the shipped fixture model."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

from .chromium import CHROMIUM, SKIP_REASON, dump_dom
from .conftest import FIXTURES

MODEL = FIXTURES / "models" / "TinySeg.mlmodel"
GOLDEN = FIXTURES / "golden"


pytestmark = pytest.mark.usefixtures("plain_run_environment")


@pytest.fixture
def cache_with_q2(tmp_path: Path) -> Path:
    """A fresh cache holding only q2 (0.1 s to build), so a zero-budget sweep has q2 and builds fp16.

    Per test, not per module: which variants a budget lets through depends on what is cached.
    """
    cache = tmp_path / "coreml-cache"
    from pytest_coreml_quality.model import Model
    from pytest_coreml_quality.variants import build_variant

    build_variant(Model.open(MODEL), "q2", cache / "variants")
    return cache


def sweep(pytester: pytest.Pytester, cache: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest(
        f"--coreml-model={MODEL}",
        f"--coreml-dataset={GOLDEN}",
        "--coreml-variants=sweep",
        "--coreml-sweep-budget=0",  # the first swept build (fp16) starts, later ones are skipped
        f"--coreml-cache-dir={cache}",
        "-p",
        "no:randomly",
        "-k",
        "not load",
        *args,
    )


def test_budgeted_sweep_reports_swept_failures_recommends_and_writes_everything(
    pytester: pytest.Pytester, cache_with_q2: Path
) -> None:
    pytester.makepyfile(
        """
        def test_choice_did_not_change(coreml_recommendation):
            assert coreml_recommendation.recipe == "fp16"
        """
    )
    out = pytester.path
    result = sweep(
        pytester, cache_with_q2, "--coreml-min-iou=0.9", "-rs",
        f"--coreml-plot={out / 'plot.png'}", f"--coreml-report-json={out / 'r.json'}",
        f"--coreml-report-html={out / 'r.html'}", f"--junitxml={out / 'junit.xml'}",
    )
    # q2 breaks the IoU bound but was only swept: reported, not failed
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes["passed"] >= 6, result.stdout.str()
    table = result.stdout.str()
    q2_row = next(line for line in result.stdout.lines if line.startswith("q2 "))
    assert q2_row.rstrip().endswith("FAIL")
    assert "recommended: fp16 - 0.977 MB (0.501x), IoU 0.957 (base 0.957), drift 0.000" in table
    assert "swept variants that break a threshold (reported, not failed): q2 (iou 0.8" in table
    assert "sweep budget spent: TinySeg.mlmodel [q8] skipped" in table  # listed under the table
    assert "sweep budget of 0 s is spent" in table  # the skip reason of each skipped item

    report = json.loads((out / "r.json").read_text())
    rec = report["recommendation"]["TinySeg.mlmodel"]
    assert rec["recipe"] == "fp16" and rec["thresholds"] == ["iou >= 0.9"] and "q2" in rec["failing"]
    assert report["summary"]["TinySeg.mlmodel"]["q2"]["download_mb"] > 0
    assert report["summary"]["TinySeg.mlmodel"]["fp16"]["build_s"] is not None

    junit = ET.parse(out / "junit.xml")
    case = next(c for c in junit.iter("testcase") if c.get("name") == "recommend")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["coreml.recommended"] == "fp16" and props["coreml.recommendation"].startswith("recommended: fp16")

    with Image.open(out / "plot.png") as image:
        assert image.format == "PNG" and image.size == (800, 500)
    page = (out / "r.html").read_text()
    assert page.index('class="recommendation"') < page.index("<h2>")  # the answer comes first
    assert 'class="plot" src="data:image/png;base64,' in page
    if CHROMIUM is None:
        pytest.skip(SKIP_REASON)
    dom = dump_dom(out / "r.html", out / "profile")
    assert "recommended: fp16" in dom and 'class="plot"' in dom


def test_recommend_item_fails_when_no_variant_passes(pytester: pytest.Pytester, cache_with_q2: Path) -> None:
    result = sweep(pytester, cache_with_q2, "--coreml-min-iou=0.99", "-k", "recommend")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "TinySeg.mlmodel: recommended: none - no variant passes iou >= 0.99" in text
    assert "q2: iou 0.8" in text


def test_no_thresholds_shows_the_pareto_front(pytester: pytest.Pytester, cache_with_q2: Path) -> None:
    result = sweep(pytester, cache_with_q2, "-k", "recommend")
    result.assert_outcomes(passed=1)
    assert "no thresholds set: the size/IoU Pareto front is q2 (0.131 MB, IoU 0.815)" in result.stdout.str()


def test_plot_without_matplotlib_says_how_to_get_it(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import pytest_coreml_quality.report.plot as plot

    monkeypatch.setattr(plot, "plot_available", lambda: False)
    result = pytester.runpytest(f"--coreml-model={MODEL}", f"--coreml-plot={tmp_path / 'p.png'}", f"--coreml-cache-dir={tmp_path / 'c'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "pip install pytest-coreml-quality[plot]" in result.stderr.str()


def test_plot_path_is_checked_with_the_other_outputs(pytester: pytest.Pytester, tmp_path: Path) -> None:
    result = pytester.runpytest(f"--coreml-model={MODEL}", f"--coreml-plot={MODEL}", f"--coreml-cache-dir={tmp_path / 'c'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--coreml-plot=" in result.stderr.str() and "would overwrite the model" in result.stderr.str()


def test_a_recipe_named_next_to_the_sweep_still_fails_the_run(pytester: pytest.Pytester, cache_with_q2: Path) -> None:
    result = sweep(pytester, cache_with_q2, "--coreml-variants=sweep,q2", "--coreml-min-iou=0.9", "-k", "quality and not load")
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] == 1 and outcomes["passed"] == 2  # base and the budget's fp16 pass; q2 named fails
    assert "TinySeg.mlmodel [q2]: 1 threshold(s) broken" in result.stdout.str()
