"""End-to-end checks of the plugin glue with pytester: options, ini keys, markers, header, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from .model_factory import save_image_model

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def image_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_image_model(tmp_path_factory.mktemp("m") / "Seg.mlmodel")


def test_options_are_listed_in_help(pytester: pytest.Pytester) -> None:
    from pytest_coreml_quality.settings import OPTIONS

    result = pytester.runpytest("--help")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*Core ML model quality (pytest-coreml-quality)*"])
    for flag in ("--coreml-model=PATH", "--coreml-dataset=DIR", "--coreml-variants=LIST", "--coreml-backend=NAME", "--coreml-cache-dir=DIR"):
        result.stdout.fnmatch_lines([f"*{flag}*"])
    for spec in OPTIONS:  # every option has its flag and its ini key, with help
        result.stdout.fnmatch_lines([f"  {spec.flag}*", f"  {spec.ini} *"])


def test_markers_are_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(
        ["@pytest.mark.coreml_quality(max_mae=*", "@pytest.mark.coreml_size(max_mb=*", "@pytest.mark.coreml_load(max_cold_s=*"]
    )


def test_marked_test_without_a_model_skips_and_says_why(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.coreml_size(max_mb=10)
        def test_ok():
            pass
        """
    )
    result = pytester.runpytest("--strict-markers", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no Core ML model given: coreml markers need --coreml-model=PATH*"])


def test_plugin_can_be_disabled(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("-p", "no:coreml_quality", "--help")
    assert "--coreml-model" not in result.stdout.str()


def test_missing_model_is_a_usage_error_naming_the_path(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_never_runs(): pass")
    result = pytester.runpytest("--coreml-model=nowhere/ISNet.mlmodel")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ERROR: --coreml-model:*nowhere/ISNet.mlmodel: no such file or directory*"])
    assert "test_never_runs" not in result.stdout.str()
    assert "Traceback" not in result.stderr.str()


def test_file_that_is_not_a_model_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.path.joinpath("fake.mlmodel").write_bytes(b"GIF89a not a model at all")
    result = pytester.runpytest("--coreml-model=fake.mlmodel")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*fake.mlmodel: cannot be read as a Core ML model*expected a serialized Core ML Model protobuf*"])


def test_unreadable_model_is_a_usage_error(pytester: pytest.Pytester, image_model: Path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    copy = pytester.path / "locked.mlmodel"
    copy.write_bytes(image_model.read_bytes())
    copy.chmod(0)
    result = pytester.runpytest(f"--coreml-model={copy}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*locked.mlmodel: is not readable*"])


def test_bad_backend_choice_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--coreml-backend=tpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--coreml-backend / ini 'coreml_backend': got 'tpu', expected one of auto, coreml, onnx*"])


def test_report_header_names_model_backend_and_cache(pytester: pytest.Pytester, image_model: Path) -> None:
    pytester.makepyfile("def test_user_test(): pass")
    cache = pytester.path / "cc"
    result = pytester.runpytest(
        f"--coreml-model={image_model}", "--coreml-backend=onnx", f"--coreml-cache-dir={cache}", "-k", "user_test"
    )
    result.stdout.fnmatch_lines(
        [
            f"coreml-quality: backend onnx, precision fp32, cache {cache}",
            "coreml-quality: model Seg.mlmodel (neuralNetwork, spec v*, * MB): x_1: image RGB 48x32 -> activation_out: image GRAYSCALE 48x32",
        ]
    )
    result.assert_outcomes(passed=1)


def test_ini_keys_in_pyproject_are_read_relative_to_rootdir(pytester: pytest.Pytester, image_model: Path) -> None:
    models = pytester.mkdir("Models")
    (models / "App.mlmodel").write_bytes(image_model.read_bytes())
    pytester.makepyprojecttoml(
        """
        [tool.pytest.ini_options]
        coreml_model = ["Models/App.mlmodel"]
        coreml_backend = "onnx"
        coreml_variants = "q8, q4"
        """
    )
    pytester.makepyfile("def test_user_test(): pass")
    sub = pytester.mkdir("sub")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(sub)  # ini paths must not depend on where pytest is started
        result = pytester.runpytest(str(pytester.path), "--co")
    result.stdout.fnmatch_lines(["coreml-quality: model App.mlmodel (neuralNetwork*", "coreml-quality: variants q8, q4"])


def test_command_line_wins_over_ini(pytester: pytest.Pytester, image_model: Path) -> None:
    pytester.makeini("[pytest]\ncoreml_backend = coreml\n")
    pytester.makepyfile("def test_user_test(): pass")
    result = pytester.runpytest(f"--coreml-model={image_model}", "--coreml-backend=onnx", "--co")
    result.stdout.fnmatch_lines(["coreml-quality: backend onnx,*"])


def test_no_model_means_no_header_and_no_cache(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_user_test(): pass")
    result = pytester.runpytest()
    assert "coreml-quality:" not in result.stdout.str()
    assert not list(pytester.path.rglob("coreml-quality"))
    result.assert_outcomes(passed=1)
