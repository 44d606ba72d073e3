"""Real-world failures end to end (issue 11 §4, §6, §7): what a user sees through pytest."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import FIXTURES

MODEL = FIXTURES / "models" / "TinySeg.mlmodel"
GOLDEN = FIXTURES / "golden"


pytestmark = pytest.mark.usefixtures("plain_run_environment")


def test_without_the_cacheprovider_nothing_is_written_under_pytest_cache(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_cache = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(user_cache))
    result = pytester.runpytest(f"--coreml-model={MODEL}", f"--coreml-dataset={GOLDEN}", "--coreml-load-rounds=1",
                                "-p", "no:cacheprovider", "-p", "no:randomly")
    assert result.ret == 0, result.stdout.str()
    assert not (pytester.path / ".pytest_cache").exists()
    # The documented place: the user cache directory, shared with the onnx backend's default.
    written = user_cache / "pytest-coreml-quality"
    assert any(written.rglob("*")), "the run cached nothing"
    assert f"{written}" in result.stdout.str()  # the report header says where the cache is


LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
               b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 1312256\n")
LFS = "this is a Git LFS pointer, not the file: run `git lfs pull`"


def _output(result: pytest.RunResult) -> str:
    return "\n".join(result.outlines + result.errlines)


def test_a_model_left_as_an_lfs_pointer_says_run_git_lfs_pull(pytester: pytest.Pytester, tmp_path: Path) -> None:
    model = pytester.path / "Models" / "ISNet.mlmodel"
    model.parent.mkdir()
    model.write_bytes(LFS_POINTER)
    result = pytester.runpytest(f"--coreml-model={model}", f"--coreml-dataset={GOLDEN}",
                                f"--coreml-cache-dir={tmp_path}", "-p", "no:randomly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = _output(result)
    assert f"{model}: {LFS}" in output
    assert output.count(LFS) == 1 and "Traceback" not in output and "Wire format" not in output


def test_golden_images_left_as_lfs_pointers_are_named(pytester: pytest.Pytester, tmp_path: Path) -> None:
    import shutil

    golden = Path(shutil.copytree(GOLDEN, pytester.path / "golden"))
    image = sorted((golden / "images").iterdir())[0]
    image.write_bytes(LFS_POINTER)
    result = pytester.runpytest(f"--coreml-model={MODEL}", f"--coreml-dataset={golden}",
                                f"--coreml-cache-dir={tmp_path}", "--coreml-load-rounds=1", "-p", "no:randomly")
    assert result.ret != 0
    output = _output(result)
    assert f"{image}: {LFS}" in output
    assert "cannot identify image" not in output


def test_a_pipeline_ending_in_non_maximum_suppression_names_the_stage(pytester: pytest.Pytester, tmp_path: Path) -> None:
    from tests.runtime import pipelines

    model = pipelines.network_then_nms(pytester.path / "Detector.mlmodel")
    result = pytester.runpytest(f"--coreml-model={model}", f"--coreml-dataset={GOLDEN}",
                                f"--coreml-cache-dir={tmp_path}", "--coreml-load-rounds=1", "-p", "no:randomly")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        f"{model}: field 'pipeline.models': has 1 pipeline stage(s) the onnx runtime cannot run: stage 1 "
        "'nonMaximumSuppression' (outputs: boxes): non-maximum suppression (object-detection post-processing) has "
        "no ONNX translation here; the coreml backend on macOS runs it (expected pipeline stages that are NeuralNetworks)",
    ])
    assert "Traceback" not in result.stdout.str()
