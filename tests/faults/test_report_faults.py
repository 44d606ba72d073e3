"""Fault cases: report and baseline paths, and baselines that compare nothing.

Each case asserts the exact outcome (message and exit code, or what was written) and that
nothing the user owns changed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, failure_sections

MODEL = FIXTURES / "models" / "TinySeg.mlmodel"
GOLDEN = FIXTURES / "golden"


pytestmark = pytest.mark.usefixtures("plain_run_environment")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("coreml-cache")


@pytest.fixture
def user_files(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the model and golden set that the user owns (and that must survive every run)."""
    model = tmp_path / "Models" / "TinySeg.mlmodel"
    model.parent.mkdir()
    shutil.copy(MODEL, model)
    golden = tmp_path / "golden"
    shutil.copytree(GOLDEN, golden)
    return model, golden


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted([path] if path.is_file() else path.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path.parent)).encode() + p.read_bytes())
    return h.hexdigest()


def run(pytester: pytest.Pytester, cache: Path, model: Path, golden: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest(
        f"--coreml-model={model}", f"--coreml-dataset={golden}", f"--coreml-cache-dir={cache}",
        "--coreml-variants=q8", "-p", "no:randomly", "-k", "not load", *args,
    )


def _usage_error(result: pytest.RunResult, *fragments: str) -> None:
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = "\n".join(result.stderr.lines)
    for fragment in fragments:
        assert fragment in text, text
    assert "Traceback" not in text and "INTERNALERROR" not in text


@pytest.mark.parametrize(
    ("option", "target", "fragment"),
    [
        ("--coreml-report-json", "model", "would overwrite the model"),
        ("--coreml-report-html", "model", "would overwrite the model"),
        ("--coreml-save-baseline", "model", "would overwrite the model"),
        ("--coreml-report-json", "mask", "would overwrite a golden-set file"),
        ("--coreml-report-html", "image", "would overwrite a golden-set file"),
        ("--coreml-report-json", "directory", "is a directory"),
        ("--coreml-report-html", "under_file", "is not a directory"),
        ("--coreml-save-baseline", "directory", "is a directory"),
    ],
)
def test_unusable_or_owned_report_paths_are_usage_errors_and_touch_nothing(
    pytester: pytest.Pytester, cache: Path, user_files: tuple[Path, Path], option: str, target: str, fragment: str
) -> None:
    model, golden = user_files
    path = {
        "model": model,
        "mask": golden / "masks" / "scene_001.png",
        "image": golden / "images" / "scene_001.png",
        "directory": pytester.path / "out",
        "under_file": model / "report.html",
    }[target]
    if target == "directory":
        path.mkdir()
    before = (_digest(model), _digest(golden))
    result = run(pytester, cache, model, golden, f"{option}={path}")
    _usage_error(result, f"{option}={path}", fragment)
    assert (_digest(model), _digest(golden)) == before


def test_two_reports_on_one_path_are_refused(pytester: pytest.Pytester, cache: Path, user_files: tuple[Path, Path]) -> None:
    model, golden = user_files
    out = pytester.path / "same.json"
    result = run(pytester, cache, model, golden, f"--coreml-report-json={out}", f"--coreml-report-html={out}")
    _usage_error(result, "--coreml-report-html", "is also given as --coreml-report-json")
    assert not out.exists()


def test_a_report_over_the_compared_baseline_is_refused_but_saving_over_it_is_allowed(
    pytester: pytest.Pytester, cache: Path, user_files: tuple[Path, Path]
) -> None:
    model, golden = user_files
    baseline = pytester.path / "baseline.json"
    run(pytester, cache, model, golden, f"--coreml-save-baseline={baseline}").assert_outcomes(passed=4)
    saved = baseline.read_bytes()
    refused = run(pytester, cache, model, golden, f"--coreml-baseline={baseline}", f"--coreml-report-json={baseline}")
    _usage_error(refused, "would overwrite the baseline compared against")
    assert baseline.read_bytes() == saved
    updated = run(pytester, cache, model, golden, f"--coreml-baseline={baseline}", f"--coreml-save-baseline={baseline}")
    updated.assert_outcomes(passed=6)


def test_a_report_that_fails_at_the_end_loses_nothing_else(pytester: pytest.Pytester, cache: Path, user_files: tuple[Path, Path]) -> None:
    """The JSON path becomes a directory during the run: HTML, baseline and table still come, items still pass."""
    model, golden = user_files
    json_path, html_path, baseline = (pytester.path / n for n in ("r.json", "r.html", "b.json"))
    pytester.makepyfile(f"def test_user_makes_a_mess():\n    import os\n    os.mkdir({str(json_path)!r})\n")
    result = run(pytester, cache, model, golden, f"--coreml-report-json={json_path}", f"--coreml-report-html={html_path}",
                 f"--coreml-save-baseline={baseline}")
    result.assert_outcomes(passed=5)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([
        "*Core ML model quality*",
        "q8 *",
        f"coreml-quality: ERROR: could not write the JSON report to {json_path}: *",
        f"coreml-quality: HTML report written to {html_path}",
        f"coreml-quality: baseline saved to {baseline}",
    ])
    assert json_path.is_dir() and not any(json_path.iterdir())
    assert "<html" in html_path.read_text() and json.loads(baseline.read_text())["models"]
    assert "Traceback" not in result.stdout.str()


def _edit_baseline(path: Path, edit) -> None:  # noqa: ANN001
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.fixture
def baseline(pytester: pytest.Pytester, cache: Path, user_files: tuple[Path, Path]) -> Path:
    model, golden = user_files
    path = pytester.path / "baseline.json"
    run(pytester, cache, model, golden, f"--coreml-save-baseline={path}").assert_outcomes(passed=4)
    return path


def test_baseline_of_another_model_fails_every_baseline_item(
    pytester: pytest.Pytester, cache: Path, user_files: tuple[Path, Path], baseline: Path
) -> None:
    model, golden = user_files

    def rename(data: dict) -> None:
        entry = data["models"].pop("TinySeg.mlmodel")
        entry["content_hash"] = "0" * 64
        data["models"]["Other.mlmodel"] = entry

    _edit_baseline(baseline, rename)
    report = pytester.path / "r.json"
    result = run(pytester, cache, model, golden, f"--coreml-baseline={baseline}", f"--coreml-report-json={report}")
    result.assert_outcomes(passed=4, failed=2)
    result.stdout.fnmatch_lines([
        "*_ baseline[[]q8[]] _*",
        "TinySeg.mlmodel [[]q8[]]: nothing compared with the baseline: TinySeg.mlmodel is not in baseline*(it has Other.mlmodel*",
    ])
    summary = json.loads(report.read_text())["summary"]["TinySeg.mlmodel"]
    assert summary["q8"]["verdict"] == "FAIL" and summary["base"]["verdict"] == "FAIL"


def test_renamed_model_file_is_still_compared(
    pytester: pytest.Pytester, cache: Path, user_files: tuple[Path, Path], baseline: Path
) -> None:
    model, golden = user_files
    renamed = model.with_name("Renamed.mlmodel")
    model.rename(renamed)
    result = run(pytester, cache, renamed, golden, f"--coreml-baseline={baseline}")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*compared with baseline entry TinySeg.mlmodel (same model content, other file name)*"])


def test_a_baseline_failure_shows_in_the_table_and_json_verdict(
    pytester: pytest.Pytester, cache: Path, user_files: tuple[Path, Path], baseline: Path
) -> None:
    model, golden = user_files

    def better_q8(data: dict) -> None:
        data["models"]["TinySeg.mlmodel"]["variants"]["q8"]["metrics"]["iou"] = 0.999

    _edit_baseline(baseline, better_q8)
    report = pytester.path / "r.json"
    result = run(pytester, cache, model, golden, f"--coreml-baseline={baseline}", f"--coreml-report-json={report}")
    result.assert_outcomes(passed=5, failed=1)
    q8_row = next(line for line in result.stdout.lines if line.startswith("q8 "))
    assert q8_row.rstrip().endswith("FAIL")
    summary = json.loads(report.read_text())["summary"]["TinySeg.mlmodel"]["q8"]
    assert summary["verdict"] == "FAIL"
    assert any(text.startswith("baseline iou = ") for text in summary["failed_checks"])


def test_baseline_missing_a_variant_fails_that_variant_only(
    pytester: pytest.Pytester, cache: Path, user_files: tuple[Path, Path], baseline: Path
) -> None:
    model, golden = user_files
    _edit_baseline(baseline, lambda data: data["models"]["TinySeg.mlmodel"]["variants"].pop("q8"))
    result = run(pytester, cache, model, golden, f"--coreml-baseline={baseline}")
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["*_ baseline[[]q8[]] _*", "*: nothing compared with the baseline: TinySeg.mlmodel[[]q8[]] has no figures in baseline*(it has base)"])


def test_baseline_from_another_golden_set_warns(
    pytester: pytest.Pytester, cache: Path, user_files: tuple[Path, Path], baseline: Path
) -> None:
    model, golden = user_files
    (golden / "images" / "scene_001.png").unlink()
    (golden / "masks" / "scene_001.png").unlink()
    result = run(pytester, cache, model, golden, f"--coreml-baseline={baseline}", "--coreml-baseline-tolerance-metric=1")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*measured on another golden set (28 images then, 27 now)*"])


def test_a_failure_message_is_printed_once(pytester: pytest.Pytester, cache: Path, user_files: tuple[Path, Path]) -> None:
    model, golden = user_files
    result = run(pytester, cache, model, golden, "--coreml-min-iou=0.999")
    result.assert_outcomes(passed=2, failed=2)
    text = failure_sections(result)
    assert "During handling of the above exception" not in text
    assert text.count("TinySeg.mlmodel [q8]: 1 threshold(s) broken") == 1


def test_a_user_error_in_an_item_is_printed_once_without_traceback(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_coreml_quality.errors import DatasetError
        from pytest_coreml_quality.items import fail_on_user_error

        def _broken():
            raise DatasetError("cannot be decoded", path="golden/images/a.png")

        def test_item():
            fail_on_user_error(_broken)
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(failed=1)
    text = failure_sections(result)
    assert text.count("golden/images/a.png: cannot be decoded") == 1
    assert "During handling of the above exception" not in text and "Traceback" not in text
