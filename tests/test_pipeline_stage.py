"""A pipeline whose last stage cannot run here: its earlier stage's output can still be scored."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from pytest_coreml_quality.model import Model
from pytest_coreml_quality.pipeline_stage import leading_stages, stage_producing
from tests.conftest import FIXTURES

MODEL = FIXTURES / "models" / "TinySeg.mlmodel"
GOLDEN = FIXTURES / "golden"
pytestmark = pytest.mark.usefixtures("plain_run_environment")


def matting_pipeline(path: Path) -> Path:
    """TinySeg (image -> grayscale mask 'activation_out') followed by a custom refinement stage."""
    import coremltools as ct
    from coremltools.proto import Model_pb2

    segmenter = ct.utils.load_spec(str(MODEL))
    refine = Model_pb2.Model()
    refine.specificationVersion = segmenter.specificationVersion
    refine.customModel.className = "MattingRefiner"
    refine.description.input.extend(segmenter.description.output)
    alpha = refine.description.output.add()
    alpha.CopyFrom(segmenter.description.output[0])
    alpha.name = "alpha"
    pipe = Model_pb2.Model()
    pipe.specificationVersion = segmenter.specificationVersion
    pipe.pipeline.models.extend([segmenter, refine])
    pipe.description.input.extend(segmenter.description.input)
    pipe.description.output.extend(refine.description.output)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ct.utils.save_spec(pipe, str(path))
    return path


def test_the_stages_up_to_an_intermediate_output_become_a_model(tmp_path: Path) -> None:
    pipe = Model.open(matting_pipeline(tmp_path / "Matting.mlmodel"))
    assert stage_producing(pipe, "activation_out") == 0
    assert stage_producing(pipe, "alpha") is None  # a final output: nothing to cut
    cut, note = leading_stages(pipe, "activation_out", tmp_path / "cache")
    assert cut.name == "Matting.mlmodel" and [o.name for o in cut.outputs] == ["activation_out"]
    assert note == "Matting.mlmodel: scoring pipeline stages 0..0 of 2 (output 'activation_out'); stage(s) 1 'customModel' not run"
    again, _ = leading_stages(pipe, "activation_out", tmp_path / "cache")
    assert again.content_hash == cut.content_hash  # written deterministically: caches keyed by it hold


def _iou(pytester: pytest.Pytester, model: Path, cache: Path, *args: str) -> tuple[pytest.RunResult, float]:
    report = pytester.path / f"{model.stem}.json"
    result = pytester.runpytest(
        f"--coreml-model={model}", f"--coreml-dataset={GOLDEN}", f"--coreml-cache-dir={cache}", "-k", "quality",
        "-p", "no:randomly", f"--coreml-report-json={report}", *args,
    )
    data = json.loads(report.read_text()) if report.exists() else {"summary": {}}
    value = data["summary"].get(model.name, {}).get("base", {}).get("iou")
    return result, value


def test_scoring_the_segmenter_stage_gives_the_segmenter_figures(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pipe = matting_pipeline(tmp_path / "Matting.mlmodel")
    result, iou = _iou(pytester, pipe, tmp_path / "cache", "--coreml-output=activation_out")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["coreml-quality: Matting.mlmodel: scoring pipeline stages 0..0 of 2 (output 'activation_out'); stage(s) 1 'customModel' not run"])
    _, alone = _iou(pytester, MODEL, tmp_path / "cache2")
    assert iou == alone and iou > 0.9


def test_without_the_intermediate_output_the_unrunnable_stage_is_named(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pipe = matting_pipeline(tmp_path / "Matting.mlmodel")
    result, _ = _iou(pytester, pipe, tmp_path / "cache")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*stage 1 'customModel' (outputs: alpha): a custom model (class MattingRefiner) needs its Swift*"])
