"""Per-model settings from ``[tool.coreml-quality]`` end to end (pytester): two models of
different kinds, each with its own variants, thresholds and preprocessing, and the
command line overriding them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .conftest import FIXTURES, failure_sections

MODELS = FIXTURES / "models"
GOLDEN = FIXTURES / "golden"
SMALL_GOLDEN = "@SMALL_GOLDEN@"  # replaced by the small_golden fixture's path

# TinySeg.mlmodel is a neural network (q8, q4 ...), TinySeg.mlpackage an ML Program (int8, pal4 ...):
# one --coreml-variants cannot serve both, per-model variants can.
TWO_MODELS = f"""
[tool.coreml-quality]
dataset = "{SMALL_GOLDEN}"
load_rounds = 1

[[tool.coreml-quality.models]]
path = "{MODELS / 'TinySeg.mlmodel'}"
variants = "q8"
min_iou = 0.9999

[[tool.coreml-quality.models]]
path = "{MODELS / 'TinySeg.mlpackage'}"
variants = ["int8"]
min_iou = 0.1
max_drift = 0.5
"""


pytestmark = pytest.mark.usefixtures("plain_run_environment")


@pytest.fixture(scope="module")
def small_golden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four pairs of the golden set: enough to tell settings apart, quick to score."""
    root = tmp_path_factory.mktemp("golden")
    for folder in ("images", "masks"):
        (root / folder).mkdir()
        for file in sorted((GOLDEN / folder).iterdir())[:4]:
            shutil.copy(file, root / folder / file.name)
    return root


@pytest.fixture
def two_models(small_golden: Path) -> str:
    return TWO_MODELS.replace(SMALL_GOLDEN, str(small_golden))



def run(pytester: pytest.Pytester, cache: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest(f"--coreml-cache-dir={cache}", "-p", "no:randomly", "-p", "no:xdist", *args)


def test_each_model_gets_its_own_variants_and_thresholds(pytester: pytest.Pytester, shared_cache: Path, two_models: str) -> None:
    pytester.makepyprojecttoml(two_models)
    report = pytester.path / "report.json"
    result = run(pytester, shared_cache, "-v", "-k", "quality", f"--coreml-report-json={report}")
    result.stdout.fnmatch_lines_random(
        [
            "coreml-quality: TinySeg.mlmodel variants q8; thresholds min_iou=0.9999",
            "coreml-quality: TinySeg.mlpackage variants int8; thresholds min_iou=0.1, max_drift=0.5",
            "*TinySeg.mlmodel::quality[[]base[]] FAILED*",
            "*TinySeg.mlmodel::quality[[]q8[]] FAILED*",
            "*TinySeg.mlpackage::quality[[]base[]] PASSED*",
            "*TinySeg.mlpackage::quality[[]int8[]] PASSED*",
            "*TinySeg.mlmodel [[]q8[]]: 1 threshold(s) broken*",
        ]
    )
    result.assert_outcomes(passed=2, failed=2)
    assert failure_sections(result).count("threshold(s) broken") == 2  # the package's own, lower bound holds
    data = json.loads(report.read_text())
    assert list(data["models"]["TinySeg.mlmodel"]["variants"]) == ["base", "q8"]
    assert list(data["models"]["TinySeg.mlpackage"]["variants"]) == ["base", "int8"]


def test_a_command_line_threshold_applies_to_every_model(pytester: pytest.Pytester, shared_cache: Path, two_models: str) -> None:
    pytester.makepyprojecttoml(two_models)
    result = run(pytester, shared_cache, "-k", "quality", "--coreml-min-iou=0.1")
    result.assert_outcomes(passed=4)
    result = run(pytester, shared_cache, "-k", "quality and int8", "--coreml-min-iou=0.9999")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*TinySeg.mlpackage [[]int8[]]: 1 threshold(s) broken*", "*iou = *, bound >= 0.9999*"])


def test_command_line_variants_apply_to_every_model(pytester: pytest.Pytester, shared_cache: Path) -> None:
    pytester.makepyprojecttoml(
        f"""
        [[tool.coreml-quality.models]]
        path = "{MODELS / 'TinySeg.mlmodel'}"
        variants = "q8"
        [[tool.coreml-quality.models]]
        path = "{MODELS / 'TinySegArray.mlmodel'}"
        variants = "q4"
        """
    )
    result = run(pytester, shared_cache, "--co", "-q")
    assert [line for line in result.stdout.lines if "::size" in line] == [
        "TinySeg.mlmodel::size[base]",
        "TinySeg.mlmodel::size[q8]",
        "TinySegArray.mlmodel::size[base]",
        "TinySegArray.mlmodel::size[q4]",
    ]
    result = run(pytester, shared_cache, "--co", "-q", "--coreml-variants=q2")
    assert [line for line in result.stdout.lines if "::size" in line] == [
        "TinySeg.mlmodel::size[base]",
        "TinySeg.mlmodel::size[q2]",
        "TinySegArray.mlmodel::size[base]",
        "TinySegArray.mlmodel::size[q2]",
    ]


def test_one_command_line_recipe_for_two_kinds_is_still_refused(pytester: pytest.Pytester, shared_cache: Path, two_models: str) -> None:
    pytester.makepyprojecttoml(two_models)
    result = run(pytester, shared_cache, "--co", "--coreml-variants=q8")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *TinySeg.mlpackage: field 'recipe': recipe 'q8'*"])


def test_command_line_models_replace_the_tables_models(pytester: pytest.Pytester, shared_cache: Path, two_models: str) -> None:
    pytester.makepyprojecttoml(two_models)
    result = run(pytester, shared_cache, "--co", f"--coreml-model={MODELS / 'TinySegArray.mlmodel'}")
    result.stdout.fnmatch_lines(
        [
            "coreml-quality: --coreml-model given: the 2 model(s) listed in [[]tool.coreml-quality[]] of *pyproject.toml are not used",
            "*<CoreMLModelCollector TinySegArray.mlmodel>*",
        ]
    )
    assert "TinySeg.mlpackage" not in result.stdout.str()


def test_per_model_preprocessing_is_used_for_that_model(
    pytester: pytest.Pytester, shared_cache: Path, small_golden: Path
) -> None:
    """TinySegArray.mlpackage scored with its entry's normalisation scores as the flag would."""
    array_package = MODELS / "TinySegArray.mlpackage"
    pytester.makepyprojecttoml(
        f"""
        [tool.coreml-quality]
        dataset = "{small_golden}"
        [[tool.coreml-quality.models]]
        path = "{MODELS / 'TinySeg.mlmodel'}"
        [[tool.coreml-quality.models]]
        path = "{array_package}"
        normalization = "-1..1"
        """
    )
    report = pytester.path / "table.json"
    run(pytester, shared_cache, "-k", "quality", f"--coreml-report-json={report}").assert_outcomes(passed=2)
    table = json.loads(report.read_text())["models"]
    flagged = {}
    for normalization in ("0..1", "-1..1"):
        out = pytester.path / f"flag{normalization}.json"
        pytester.runpytest(
            f"--coreml-cache-dir={shared_cache}", "-k", "quality", f"--coreml-model={array_package}",
            f"--coreml-dataset={small_golden}", f"--coreml-normalization={normalization}", f"--coreml-report-json={out}",
        ).assert_outcomes(passed=1)
        flagged[normalization] = json.loads(out.read_text())["models"]["TinySegArray.mlpackage"]["variants"]["base"]["metrics"]
    assert flagged["0..1"]["iou"] != flagged["-1..1"]["iou"]  # the setting matters for this model
    assert table["TinySegArray.mlpackage"]["variants"]["base"]["metrics"] == flagged["-1..1"]


def test_a_bad_entry_is_a_usage_error_naming_the_table_path(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(
        f"""
        [[tool.coreml-quality.models]]
        path = "{MODELS / 'TinySeg.mlmodel'}"
        [[tool.coreml-quality.models]]
        path = "{MODELS / 'TinySeg.mlpackage'}"
        mask = "chanel:1"
        """
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: pyproject.toml (*pyproject.toml): tool.coreml-quality.models[[]1[]].mask: got 'chanel:1', expected auto, prob*"]
    )
    assert "Traceback" not in result.stderr.str()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('path = "Missing.mlmodel"', "*tool.coreml-quality.models[[]0[]]: *Missing.mlmodel*"),
        (f'path = "{MODELS / "TinySeg.mlmodel"}"\nvariants = "int8"', "*tool.coreml-quality.models[[]0[]].variants: *int8*"),
        (f'path = "{MODELS / "TinySeg.mlmodel"}"\noutput = "logits"', "*tool.coreml-quality.models[[]0[]].output: *logits*"),
    ],
)
def test_entry_errors_found_on_the_model_name_the_entry(pytester: pytest.Pytester, entry: str, message: str) -> None:
    pytester.makepyprojecttoml(f"[[tool.coreml-quality.models]]\n{entry}\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()


def test_a_marker_recipe_applies_to_the_models_it_fits(pytester: pytest.Pytester, shared_cache: Path, two_models: str) -> None:
    pytester.makepyprojecttoml(two_models)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.coreml_size(max_ratio=0.6, variants=["q4", "pal4"])
        def test_small_enough():
            pass
        """
    )
    result = run(pytester, shared_cache, "-k", "small_enough or size", "-v")
    result.stdout.fnmatch_lines_random(
        [
            "*TinySeg.mlmodel::size[[]q4[]] PASSED*",
            "*TinySeg.mlpackage::size[[]pal4[]] PASSED*",
            "*test_small_enough PASSED*",
        ]
    )
    assert "TinySeg.mlmodel::size[pal4]" not in result.stdout.str()
    assert "TinySeg.mlpackage::size[q4]" not in result.stdout.str()
    result.assert_outcomes(passed=7)  # base, own recipe and marker recipe of each model, and the marked test
