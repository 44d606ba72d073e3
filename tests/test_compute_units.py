"""Compute units and two backends side by side (issue 15), end to end through pytester.

Core ML itself cannot run here: the coreml backend runs against the recording fake
coremltools of :mod:`tests.fake_coremltools`, which computes with the onnx backend (fp32 on
CPU_ONLY, fp16 elsewhere), so the side-by-side drift, the parametrisation and the reports
are checked with two onnx-backed predictors standing in for the two backends.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pytest_coreml_quality.errors import CoreMLQualityError, SettingError
from pytest_coreml_quality.lanes import partner, plan_lanes
from pytest_coreml_quality.settings import resolve

from .conftest import FIXTURES
from .fake_coremltools import FakeCoreMLTools, install

MODEL = FIXTURES / "models" / "TinySeg.mlmodel"
GOLDEN = FIXTURES / "golden"


pytestmark = pytest.mark.usefixtures("plain_run_environment")



@pytest.fixture(scope="module")
def small_golden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four of the golden images: every lane scores and times them, so fewer keep this fast."""
    root = tmp_path_factory.mktemp("golden")
    for sub in ("images", "masks"):
        (root / sub).mkdir()
        for path in sorted((GOLDEN / sub).iterdir())[:4]:
            shutil.copy2(path, root / sub / path.name)
    return root


def run(pytester: pytest.Pytester, cache: Path, golden: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest(
        f"--coreml-model={MODEL}", f"--coreml-dataset={golden}", "--coreml-variants=q8", f"--coreml-cache-dir={cache}",
        "--coreml-load-rounds=2", "-p", "no:randomly", "-p", "no:cacheprovider", *args,
    )


def settings(**options: str):  # type: ignore[no-untyped-def]
    return resolve(options.get, lambda name: None, Path.cwd(), Path.cwd())


# --- settings and lanes ---------------------------------------------------------------------


def test_compute_units_are_a_comma_separated_list_of_coremltools_names() -> None:
    assert settings(coreml_compute_units="cpu_and_ne, ALL,CPU_AND_NE").compute_units == ("CPU_AND_NE", "ALL")
    assert settings().compute_units == ()
    with pytest.raises(SettingError, match="--coreml-compute-units / ini 'coreml_compute_units': got 'NE', expected one or more of ALL"):
        settings(coreml_compute_units="CPU_ONLY,NE")


def test_two_backends_side_by_side_are_named_explicitly() -> None:
    s = settings(coreml_backend="coreml,onnx")
    assert (s.backend, s.compare_backend) == ("coreml", "onnx")
    assert settings(coreml_backend="onnx").compare_backend is None
    for bad in ("onnx,onnx", "auto,onnx", "coreml,onnx,onnx"):
        with pytest.raises(SettingError, match="two different ones side by side"):
            settings(coreml_backend=bad)
    with pytest.raises(SettingError, match="got 'tpu', expected one of auto, coreml, onnx"):
        settings(coreml_backend="coreml,tpu")


def test_lanes_per_unit_and_backend_and_how_they_pair() -> None:
    lanes = plan_lanes(["coreml", "onnx"], ("CPU_ONLY", "CPU_AND_NE"), "fp32")
    assert [lane.key("q4") for lane in lanes] == ["q4@coreml:CPU_ONLY", "q4@coreml:CPU_AND_NE", "q4@onnx"]
    assert [lane.item_id("q4") for lane in lanes] == ["q4-coreml-CPU_ONLY", "q4-coreml-CPU_AND_NE", "q4-onnx"]
    assert [partner(lane, lanes) for lane in lanes] == [lanes[2], lanes[2], None]
    emulated = plan_lanes(["coreml", "onnx"], ("CPU_ONLY", "CPU_AND_NE"), "fp16")
    assert [partner(lane, emulated).label for lane in emulated[:2]] == ["onnx:CPU_ONLY", "onnx:CPU_AND_NE"]  # type: ignore[union-attr]
    assert [lane.options("fp16", Path("c")).precision for lane in emulated] == ["fp32", "fp32", "fp32", "fp16"]
    assert [lane.key("q4") for lane in plan_lanes(["onnx"], (), "fp32")] == ["q4"]  # a plain run keeps plain keys
    with pytest.raises(CoreMLQualityError, match="emulate them on onnx"):
        plan_lanes(["onnx"], ("CPU_AND_NE",), "fp32")


# --- end to end -----------------------------------------------------------------------------------


def test_compute_units_on_onnx_without_fp16_is_a_usage_error_naming_the_emulation(pytester: pytest.Pytester, shared_cache: Path, small_golden: Path) -> None:
    result = run(pytester, shared_cache, small_golden, "--coreml-backend=onnx", "--coreml-compute-units=CPU_AND_NE")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--coreml-compute-units needs the coreml backend*--coreml-precision=fp16 to emulate them on onnx*CPU_ONLY at fp32*"])


def test_onnx_fp16_emulates_compute_units_with_items_rows_and_prediction_times_per_unit(
    pytester: pytest.Pytester, shared_cache: Path, small_golden: Path
) -> None:
    report = pytester.path / "report.json"
    result = run(
        pytester, shared_cache, small_golden, "--coreml-backend=onnx", "--coreml-precision=fp16", "--coreml-compute-units=CPU_ONLY,CPU_AND_NE",
        f"--coreml-report-json={report}", "-v",
    )
    result.assert_outcomes(passed=2 + 2 * 2 * 3)  # size per variant; quality, cold, warm per variant and unit
    result.stdout.fnmatch_lines([
        "coreml-quality: compute units CPU_ONLY, CPU_AND_NE (onnx emulates them: CPU_ONLY at fp32, *)",
        "TinySeg.mlmodel::size[[]q8[]] PASSED*",
        "TinySeg.mlmodel::quality[[]q8-CPU_AND_NE[]] PASSED*",
        "TinySeg.mlmodel::load-warm[[]base-CPU_ONLY[]] PASSED*",
    ])
    assert any(line.startswith("q8@CPU_AND_NE ") for line in result.stdout.lines)  # the table row
    summary = json.loads(report.read_text())["summary"]["TinySeg.mlmodel"]
    assert set(summary) == {"base@CPU_ONLY", "base@CPU_AND_NE", "q8@CPU_ONLY", "q8@CPU_AND_NE"}
    for row in summary.values():
        assert row["size_mb"] is not None and row["iou"] is not None and row["cold_load_s"] is not None
        assert row["predict_ms"] > 0
    # CPU_ONLY runs fp32 and CPU_AND_NE fp16: the two lanes are really different computations.
    assert summary["q8@CPU_ONLY"]["drift_mae"] is not None
    assert summary["base@CPU_ONLY"]["mae"] != summary["base@CPU_AND_NE"]["mae"]


def test_coreml_and_onnx_side_by_side_report_the_drift_between_backends(
    pytester: pytest.Pytester, shared_cache: Path, small_golden: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = install(monkeypatch, FakeCoreMLTools(onnx_cache=tmp_path / "fake-onnx"))
    report, page = pytester.path / "report.json", pytester.path / "report.html"
    result = run(
        pytester, shared_cache, small_golden, "--coreml-backend=coreml,onnx", "--coreml-compute-units=CPU_ONLY,CPU_AND_NE",
        "--coreml-max-backend-mae=0", f"--coreml-report-json={report}", f"--coreml-report-html={page}", "-v",
    )
    result.stdout.fnmatch_lines([
        "coreml-quality: backend coreml side by side with onnx (drift between them: backend_* figures)*",
        "TinySeg.mlmodel::quality[[]q8-coreml-CPU_ONLY[]] PASSED*",  # fp32 on both: no drift at all
        "TinySeg.mlmodel::quality[[]q8-coreml-CPU_AND_NE[]] FAILED*",  # fp16 against fp32: some
        "TinySeg.mlmodel::quality[[]q8-onnx[]] PASSED*",
        "TinySeg.mlmodel::load-cold[[]base-onnx[]] PASSED*",
        "*backend_mae = *, bound <= 0*",
    ])
    summary = json.loads(report.read_text())["summary"]["TinySeg.mlmodel"]
    assert set(summary) == {f"{r}@{lane}" for r in ("base", "q8") for lane in ("coreml:CPU_ONLY", "coreml:CPU_AND_NE", "onnx")}
    for recipe in ("base", "q8"):
        same, fp16, onnx = (summary[f"{recipe}@{lane}"] for lane in ("coreml:CPU_ONLY", "coreml:CPU_AND_NE", "onnx"))
        assert same["backend_mae"] == same["backend_max_abs_diff"] == same["backend_flip_share"] == 0.0
        assert 0 < fp16["backend_mae"] <= fp16["backend_max_abs_diff"] < 0.1
        assert onnx["backend_mae"] is None  # the drift is the first backend's figure
        assert all(row["predict_ms"] > 0 for row in (same, fp16, onnx))
    # The HTML page shows the drift between backends, and where it breaks its bound, the images
    # where the backends differ most.
    text = page.read_text()
    assert "<th>backend_mae</th>" in text and "<th>predict_ms</th>" in text
    assert "q8@coreml:CPU_AND_NE: quality backend_mae = " in text and "worst images: scene_00" in text
    assert "q8@coreml:CPU_AND_NE against q8@onnx: where the backends differ most" in text
    assert 'alt="q8@coreml:CPU_AND_NE vs q8@onnx scene_00' in text and 'alt="q8@onnx scene_00' in text
    assert "q8@coreml:CPU_ONLY against" not in text  # fp32 on both: within the bound, no such section
    # Core ML saw the chosen units, and every cold round compiled to a path of its own.
    assert {units for _, units in fake.loads} == {"CPU_ONLY", "CPU_AND_NE"}
    destinations = [dest for _, dest in fake.compiles]
    assert len(destinations) == len(set(destinations))
    cold = [d for d in destinations if "coreml-cold" in d]
    assert len(cold) == 2 * 2 * 2  # 2 rounds x 2 variants x 2 units
    assert sum(Path(d).exists() for d in cold) <= 4  # earlier rounds' copies removed


def test_fixtures_run_once_per_lane_with_each_lanes_own_figures(
    pytester: pytest.Pytester, shared_cache: Path, small_golden: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install(monkeypatch, FakeCoreMLTools(onnx_cache=tmp_path / "fake-onnx"))
    pytester.makepyfile(
        """
        import json
        import pytest

        @pytest.mark.coreml_quality(min_iou=0.5, variants=["q8"])  # the marker picks recipes; every lane of each runs
        def test_lane(coreml_variant, coreml_metrics, coreml_predictions, request):
            seen = {"key": coreml_variant.key, "recipe": coreml_variant.recipe, "lane": coreml_variant.lane,
                    "mae": coreml_metrics.metrics["mae"], "images": len(coreml_predictions)}
            out = request.config.rootpath / ("seen-" + coreml_variant.lane.replace(":", "-") + ".json")
            out.write_text(json.dumps(seen))
        """
    )
    result = run(pytester, shared_cache, small_golden, "--coreml-compute-units=CPU_ONLY,CPU_AND_NE", "-v")
    result.stdout.fnmatch_lines(["*::test_lane[[]q8-CPU_ONLY[]] PASSED*", "*::test_lane[[]q8-CPU_AND_NE[]] PASSED*"])
    assert len([line for line in result.stdout.lines if "::test_lane[" in line and "PASSED" in line]) == 2
    seen = {lane: json.loads((pytester.path / f"seen-{lane}.json").read_text()) for lane in ("CPU_ONLY", "CPU_AND_NE")}
    assert [s["key"] for s in seen.values()] == ["q8@CPU_ONLY", "q8@CPU_AND_NE"]
    assert all(s["recipe"] == "q8" and s["images"] == 4 for s in seen.values())
    # CPU_ONLY computes at fp32 and CPU_AND_NE at fp16: each test saw its own lane's figures.
    assert seen["CPU_ONLY"]["mae"] != seen["CPU_AND_NE"]["mae"]
