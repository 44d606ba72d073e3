"""The pytest experience end to end (pytester): generated items, thresholds, markers,
fixtures, load benchmarks, baselines, reports and xdist, on the shipped fixture model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .chromium import CHROMIUM, SKIP_REASON, dump_dom
from .conftest import FIXTURES

MODEL = FIXTURES / "models" / "TinySeg.mlmodel"
GOLDEN = FIXTURES / "golden"


pytestmark = pytest.mark.usefixtures("plain_run_environment")



def run(pytester: pytest.Pytester, cache: Path, *args: str, variants: str = "q8,q4") -> pytest.RunResult:
    return pytester.runpytest(
        f"--coreml-model={MODEL}",
        f"--coreml-dataset={GOLDEN}",
        f"--coreml-variants={variants}",
        f"--coreml-cache-dir={cache}",
        "--coreml-load-rounds=1",
        "-p",
        "no:randomly",
        *args,
    )


def table_rows(result: pytest.RunResult) -> dict[str, str]:
    """Variant name -> its row in the summary table."""
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "Core ML model quality" in line)
    rows = {}
    for line in lines[start:]:
        match = re.match(r"^(base|q\d|q\d-\w+)\s", line)
        if match:
            rows[match.group(1)] = line
    return rows


# --- zero-code run ------------------------------------------------------------------------------


def test_zero_code_run_adds_readable_items_and_a_summary_table(pytester: pytest.Pytester, shared_cache: Path) -> None:
    pytester.makepyfile("def test_users_own_test(): assert 1 + 1 == 2")
    result = run(pytester, shared_cache, "-v")
    result.assert_outcomes(passed=13)  # 3 variants x (size, quality, load-cold, load-warm) + the user's test
    result.stdout.fnmatch_lines(
        [
            "*::test_users_own_test PASSED*",
            "TinySeg.mlmodel::size[[]base[]] PASSED*",
            "TinySeg.mlmodel::quality[[]q4[]] PASSED*",
            "TinySeg.mlmodel::load-cold[[]q8[]] PASSED*",
            "TinySeg.mlmodel::load-warm[[]q4[]] PASSED*",
        ]
    )
    rows = table_rows(result)
    assert set(rows) == {"base", "q8", "q4"}
    assert all(len(line) <= 100 for line in result.stdout.lines if line in rows.values())
    # q4 is a quarter of q8's weight bytes: its ratio to base must be clearly smaller.
    ratio = {name: float(row.split()[2]) for name, row in rows.items()}
    assert ratio["base"] == pytest.approx(1.0)
    assert ratio["q4"] < ratio["q8"] < 0.5


def test_items_can_be_selected_with_k(pytester: pytest.Pytester, shared_cache: Path) -> None:
    result = run(pytester, shared_cache, "-v", "-k", "quality and q4")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*TinySeg.mlmodel::quality[[]q4[]] PASSED*"])


def test_thresholds_from_ini_fail_with_variant_metric_value_bound_and_worst_images(pytester: pytest.Pytester, shared_cache: Path) -> None:
    pytester.makeini("[pytest]\ncoreml_min_iou = 0.9999\ncoreml_max_size_mb = 100\n")
    result = run(pytester, shared_cache, "-k", "quality or size")
    result.assert_outcomes(passed=3, failed=3)
    result.stdout.fnmatch_lines(
        [
            "*TinySeg.mlmodel [[]q4[]]: 1 threshold(s) broken*",
            "*  iou = 0.*, bound >= 0.9999*",
            "*    worst images: scene_* (0.*), scene_*",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    assert "FAIL" in table_rows(result)["q4"]


def test_drift_threshold_spares_base_and_catches_two_bit_weights(pytester: pytest.Pytester, shared_cache: Path) -> None:
    result = run(pytester, shared_cache, "-k", "quality", "--coreml-max-drift=0.02", variants="q8,q2")
    # 8-bit weights barely move the masks; 2-bit weights move them a lot.
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*TinySeg.mlmodel [[]q2[]]: 1 threshold(s) broken*", "*drift_mae = *, bound <= 0.02*"])


# --- markers ---------------------------------------------------------------------------------------


def test_markers_pass_and_fail_with_the_variant_metric_and_bound(pytester: pytest.Pytester, shared_cache: Path) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.coreml_quality(min_iou=0.5, max_mae=0.5)
        def test_quality_is_fine(coreml_variant):
            pass

        @pytest.mark.coreml_quality(min_iou=0.9999, variants=["q4"])
        def test_quality_too_strict():
            pass

        @pytest.mark.coreml_size(max_ratio=0.05, variants=["q8"])
        def test_size_too_strict():
            pass

        @pytest.mark.coreml_size(max_mb=50)
        def test_size_fine():
            pass

        @pytest.mark.coreml_quality(metric={"s": ">=0.5", "drift_psnr": ">=10"}, variants=["q8"])
        def test_any_metric():
            pass
        """
    )
    result = run(pytester, shared_cache, "-k", "test_", "-rf")
    result.assert_outcomes(passed=5, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*_ test_quality_too_strict _*",
            "TinySeg.mlmodel [[]q4[]]: 1 threshold(s) broken",
            "*_ test_size_too_strict _*",
            "TinySeg.mlmodel [[]q8[]]: 1 threshold(s) broken",
        ]
    )
    result.stdout.fnmatch_lines(["*ratio = 0.*, bound <= 0.05*"])


def test_load_marker_measures_and_asserts(pytester: pytest.Pytester, shared_cache: Path) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.coreml_load(max_warm_s=60, variants=["q8"])
        def test_load_fast_enough():
            pass

        @pytest.mark.coreml_load(max_cold_s=0.0, variants=["q8"])
        def test_load_impossibly_fast():
            pass
        """
    )
    result = run(pytester, shared_cache, "-k", "test_")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*cold_load_s = *, bound <= 0*"])


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("coreml_quality(max_ma=0.1)", "got unknown keyword(s) max_ma; expected max_backend_flip, max_backend_mae, max_drift, max_flip, *, max_mae, *, metric,*"),
        ("coreml_quality(min_iou=1.5)", "min_iou=1.5 is impossible, expected a number between 0 and 1"),
        ("coreml_size(max_mb='big')", "max_mb='big', expected a number"),
        ("coreml_load(0.5)", "takes keyword arguments only"),
        ("coreml_quality(metric={'nope': '>=1'})", "unknown metric 'nope'*"),
        ("coreml_quality(min_iou=0.5, variants=['pal4'])", "*pal4*"),
    ],
)
def test_bad_marker_arguments_fail_at_collection_naming_the_test(pytester: pytest.Pytester, marker: str, message: str) -> None:
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.{marker}
        def test_marked():
            pass
        """
    )
    result = pytester.runpytest(f"--coreml-model={MODEL}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*invalid coreml marker(s):*", f"*test_bad_marker_arguments_fail_at_collection_naming_the_test.py::test_marked: @pytest.mark.coreml_*{message}*"])


# --- fixtures ----------------------------------------------------------------------------------------


def test_fixtures_share_one_model_run_per_variant(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """Two tests and a generated item ask for q8's metrics: the model runs once per image."""
    counts = tmp_path / "counts.txt"
    pytester.makeconftest(
        f"""
        from pytest_coreml_quality.runtime.onnx import backend

        _original = backend.OnnxBackend.load

        def counting_load(self, model, options=None):
            predictor = _original(self, model, options)
            inner = predictor.predict

            def predict(inputs):
                with open({str(counts)!r}, "a") as fh:
                    fh.write(model.name + "\\n")
                return inner(inputs)

            predictor.predict = predict
            return predictor

        backend.OnnxBackend.load = counting_load
        """
    )
    pytester.makepyfile(
        """
        def test_iou(coreml_metrics, coreml_dataset):
            assert 0.0 <= coreml_metrics.metrics["iou"] <= 1.0
            assert set(coreml_metrics.per_image) == set(coreml_dataset.ids)

        def test_predictions(coreml_predictions, coreml_dataset, coreml_variant, coreml_model):
            assert coreml_model.name == "TinySeg.mlmodel"
            assert coreml_variant.recipe in ("base", "q8")
            for sid in coreml_dataset.ids:
                mask = coreml_predictions[sid]
                w, h = coreml_dataset.sample(sid).size
                assert mask.shape == (h, w) and mask.min() >= 0 and mask.max() <= 1
        """
    )
    result = pytester.runpytest(
        f"--coreml-model={MODEL}", f"--coreml-dataset={GOLDEN}", "--coreml-variants=q8", f"--coreml-cache-dir={tmp_path / 'cache'}",
        "-k", "test_ or quality", "-v",
    )
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*test_iou[[]base[]] PASSED*", "*test_iou[[]q8[]] PASSED*"])
    names = counts.read_text().split()
    images = len(list((GOLDEN / "images").iterdir()))
    # base and q8 each ran once over the set (the q8 file is named after its cache key).
    assert len(names) == 2 * images
    assert names.count("TinySeg.mlmodel") == images


def test_fixtures_skip_without_a_model(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_needs_model(coreml_metrics): pass")
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no Core ML model given: pass --coreml-model=PATH*"])


# --- load times through pytest-benchmark ------------------------------------------------------------------


def test_load_items_feed_pytest_benchmark_json(pytester: pytest.Pytester, shared_cache: Path) -> None:
    bench = pytester.path / "bench.json"
    result = run(pytester, shared_cache, "-k", "load", f"--benchmark-json={bench}")
    result.assert_outcomes(passed=6)
    names = {b["name"] for b in json.loads(bench.read_text())["benchmarks"]}
    assert names == {f"load-{k}[{r}]" for k in ("cold", "warm") for r in ("base", "q8", "q4")}


def test_load_items_fall_back_to_a_plain_timer_when_benchmark_is_disabled(pytester: pytest.Pytester, shared_cache: Path) -> None:
    out = pytester.path / "r.json"
    result = run(pytester, shared_cache, "-k", "load and q8", "--benchmark-disable", f"--coreml-report-json={out}")
    result.assert_outcomes(passed=2)
    load = json.loads(out.read_text())["models"]["TinySeg.mlmodel"]["variants"]["q8"]["load"]
    assert load["cold_s"] > 0 and load["warm_s"] > 0
    assert "perf_counter" in load["timer"]


def test_a_load_speedup_threshold_is_checked(pytester: pytest.Pytester, shared_cache: Path) -> None:
    result = run(pytester, shared_cache, "-k", "load and base", "--coreml-min-load-speedup=1000000")
    # The bound needs both loads: judged (and failed) once both were measured.
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*load_speedup = *, bound >= 1e+06*"])


# --- reports and baselines --------------------------------------------------------------------------------------


def test_json_report_has_table_figures_and_per_image_values(pytester: pytest.Pytester, shared_cache: Path) -> None:
    out = pytester.path / "report.json"
    run(pytester, shared_cache, "-k", "not load", f"--coreml-report-json={out}").assert_outcomes(passed=6)
    data = json.loads(out.read_text())
    model = data["models"]["TinySeg.mlmodel"]
    assert list(model["variants"]) == ["base", "q8", "q4"]
    q4 = model["variants"]["q4"]
    assert q4["size_bytes"] < model["variants"]["base"]["size_bytes"]
    assert 0 < q4["metrics"]["iou"] <= 1
    assert q4["drift"]["mae"] > 0
    assert len(q4["per_image"]) == len(list((GOLDEN / "images").iterdir()))
    assert data["versions"]["coremltools"]


def test_baseline_saved_then_compared(pytester: pytest.Pytester, shared_cache: Path) -> None:
    baseline = pytester.path / "baseline.json"
    run(pytester, shared_cache, "-k", "not load", f"--coreml-save-baseline={baseline}").assert_outcomes(passed=6)
    assert baseline.is_file()
    # The same model against its own baseline: nothing got worse.
    same = run(pytester, shared_cache, "-k", "not load", f"--coreml-baseline={baseline}")
    same.assert_outcomes(passed=9)
    # Pretend q4 used to be much better: its baseline item fails with old vs new.
    data = json.loads(baseline.read_text())
    data_text = json.dumps(data)
    assert "iou" in data_text
    _improve_baseline_iou(data, "q4")
    baseline.write_text(json.dumps(data))
    worse = run(pytester, shared_cache, "-k", "not load", f"--coreml-baseline={baseline}")
    worse.assert_outcomes(passed=8, failed=1)
    worse.stdout.fnmatch_lines(["*baseline[[]q4[]]*", "*iou*0.99*->*"])


def _improve_baseline_iou(data: dict, recipe: str) -> None:
    """Set the stored IoU of ``recipe`` to 0.99, wherever the baseline format keeps it."""

    def visit(node: object, in_recipe: bool) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if in_recipe and key == "iou" and isinstance(value, (int, float)):
                    node[key] = 0.99
                else:
                    visit(value, in_recipe or key == recipe)
        elif isinstance(node, list):
            for value in node:
                visit(value, in_recipe)

    visit(data, False)


def test_html_report_is_written(pytester: pytest.Pytester, shared_cache: Path) -> None:
    out = pytester.path / "report.html"
    run(pytester, shared_cache, "-k", "quality", f"--coreml-report-html={out}").assert_outcomes(passed=3)
    html = out.read_text()
    images = html.count("data:image/png;base64,")
    assert images >= 5 * 3  # photo, truth, base, q8, q4, heat maps...
    assert "scene_" in html and "q4" in html
    if CHROMIUM is None:
        pytest.skip(SKIP_REASON)
    # What a person opening the file sees: Chromium builds the table and every embedded image.
    dom = dump_dom(out, pytester.path / "profile")
    assert re.findall(r"<tr[^>]*><td>(base|q8|q4)</td>", dom) == ["base", "q8", "q4"]
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', dom)) == images


def test_junit_xml_carries_figures_as_properties(pytester: pytest.Pytester, shared_cache: Path) -> None:
    xml = pytester.path / "junit.xml"
    run(pytester, shared_cache, "-k", "size or quality", f"--junitxml={xml}").assert_outcomes(passed=6)
    text = xml.read_text()
    assert re.search(r'<property name="coreml.size_mb" value="0\.\d+"', text)
    assert re.search(r'<property name="coreml.iou" value="0\.\d+"', text)
    assert 'name="coreml.drift_mae"' in text


# --- progress and xdist -------------------------------------------------------------------------------------------


def test_progress_lines_are_quiet_under_q(pytester: pytest.Pytester, tmp_path: Path) -> None:
    loud = run(pytester, tmp_path / "c1", "-k", "size", variants="q6")
    loud.stdout.fnmatch_lines(["coreml-quality: built variant q6 of TinySeg.mlmodel in *"])
    quiet = run(pytester, tmp_path / "c2", "-k", "size", "-q", variants="q6")
    assert "coreml-quality: built" not in quiet.stdout.str()


def test_xdist_two_workers_give_the_serial_table(pytester: pytest.Pytester, shared_cache: Path) -> None:
    pytest.importorskip("xdist")
    serial = run(pytester, shared_cache, "-k", "not load")
    parallel = run(pytester, shared_cache, "-k", "not load", "-n", "2", "--dist", "loadgroup", "-v")
    parallel.assert_outcomes(passed=6)
    assert table_rows(parallel) == table_rows(serial)
    assert len(table_rows(parallel)) == 3
    # --dist loadgroup keeps each variant's items on one worker (pytest 9.2 + xdist 3.8 lost
    # the group suffix; xdist_groups.py restores it): "[gw1] ... PASSED TinySeg.mlmodel::size[q8]@group".
    workers: dict[str, set[str]] = {}
    for line in parallel.stdout.lines:
        found = re.search(r"\[(gw\d+)\].*PASSED (\S+)::\w+\[([\w-]+)\]@coreml-", line)
        if found:
            workers.setdefault(found.group(3), set()).add(found.group(1))
    assert set(workers) == {"base", "q8", "q4"}, parallel.stdout.str()
    assert all(len(gws) == 1 for gws in workers.values()), workers


def test_load_benchmark_fixture_times_a_variant_through_pytest_benchmark(pytester: pytest.Pytester, shared_cache: Path) -> None:
    bench = pytester.path / "bench.json"
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("kind", ["cold", "warm"])
        def test_load(coreml_load_benchmark, kind):
            seconds = coreml_load_benchmark(kind)
            assert 0 < seconds < 60

        def test_bad_kind(coreml_load_benchmark):
            with pytest.raises(ValueError, match="expected 'cold' or 'warm'"):
                coreml_load_benchmark("lukewarm")
        """
    )
    result = run(pytester, shared_cache, "-k", "test_", f"--benchmark-json={bench}", variants="q8")
    # coreml_variant parametrises the load tests over base and q8.
    result.assert_outcomes(passed=6)
    names = {b["name"] for b in json.loads(bench.read_text())["benchmarks"]}
    assert names == {f"test_load[{v}-{k}]" for v in ("base", "q8") for k in ("cold", "warm")}


def test_cache_clear_rebuilds_everything(pytester: pytest.Pytester, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = run(pytester, cache, "-k", "size", variants="q6")
    first.stdout.fnmatch_lines(["coreml-quality: built variant q6 of TinySeg.mlmodel in *"])
    cached = run(pytester, cache, "-k", "size", variants="q6")
    assert "built variant" not in cached.stdout.str()  # served from the cache
    cleared = run(pytester, cache, "-k", "size", "--coreml-cache-clear", variants="q6")
    cleared.stdout.fnmatch_lines([f"coreml-quality: backend *, cache {cache} (cleared)", "coreml-quality: built variant q6 of TinySeg.mlmodel in *"])
