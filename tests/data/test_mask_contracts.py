"""Every mask contract end to end (pytester): exact figures against a reference model, or the exact refusal.

The models of :mod:`tests.data.mask_zoo` compute one logit ``z`` per pixel and emit it in
different contracts; read correctly, each must score exactly like the reference model
that emits ``sigmoid(z)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ..conftest import FIXTURES
from .mask_zoo import KINDS, save_mask_model

GOLDEN = FIXTURES / "golden"
# Float32 softmax vs sigmoid (or reordered weights) round differently in the last bit:
# a pixel at 0.5 may flip, which moves IoU by ~1e-7 on this set. Anything read wrongly
# (no softmax, wrong channel, wrong order) moves the figures by far more than this.
ROUNDING = 1e-6


pytestmark = pytest.mark.usefixtures("plain_run_environment")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("mask_zoo")
    return {kind: save_mask_model(d / f"{kind}.mlmodel", kind) for kind in KINDS}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mask-cache")


def run(pytester: pytest.Pytester, model: Path, cache: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest(
        f"--coreml-model={model}", f"--coreml-dataset={GOLDEN}", f"--coreml-cache-dir={cache}", "-p", "no:randomly", *args
    )


def base_metrics(pytester: pytest.Pytester, model: Path, cache: Path, *args: str) -> tuple[dict[str, Any], pytest.RunResult]:
    """The base model's whole-set metrics from the JSON report of a quality-only run."""
    out = pytester.path / f"{model.stem}.json"
    result = run(pytester, model, cache, "-k", "quality", f"--coreml-report-json={out}", *args)
    result.assert_outcomes(passed=1)
    return json.loads(out.read_text())["models"][model.name]["variants"]["base"]["metrics"], result


def assert_same_figures(got: dict[str, Any], expected: dict[str, Any], exact: tuple[str, ...] = ()) -> None:
    """Equal figures: ``exact`` ones bit for bit, the rest up to float32 rounding of the model's own ops."""
    assert set(got) == set(expected)
    for name in exact:
        assert got[name] == expected[name], name
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=ROUNDING, abs=ROUNDING), name


@pytest.fixture(scope="module")
def reference(zoo: dict[str, Path], cache: Path, pytester_module: Any) -> dict[str, Any]:
    return pytester_module(zoo["prob"])


@pytest.fixture(scope="module")
def pytester_module(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Not a pytester: the reference figures are read through the evaluator API once per module."""
    from pytest_coreml_quality.dataset import Dataset
    from pytest_coreml_quality.evaluate import Evaluator
    from pytest_coreml_quality.model import Model
    from pytest_coreml_quality.runtime.base import RuntimeOptions
    from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend

    evaluator = Evaluator(Dataset.open(GOLDEN))
    options = RuntimeOptions(cache_dir=tmp_path_factory.mktemp("ref-onnx"))

    def metrics(path: Path) -> dict[str, Any]:
        return dict(evaluator.evaluate(backend=OnnxBackend(), model=Model.open(path), options=options).summary)

    return metrics


def test_reference_model_crosses_the_threshold(reference: dict[str, Any]) -> None:
    # Otherwise equal IoUs would prove little.
    assert 0.05 < reference["iou"] < 0.95


def test_one_channel_probabilities_score_as_today_under_auto(pytester, zoo, cache, reference) -> None:
    got, result = base_metrics(pytester, zoo["prob"], cache)
    assert_same_figures(got, reference, exact=tuple(reference))
    assert not any(" mask: channel" in line for line in result.stdout.lines)


@pytest.mark.parametrize("flags", [("--coreml-mask=logits",), ("--coreml-logits",), ("--coreml-mask=logits", "--coreml-logits")])
def test_one_channel_logits_read_with_logits(pytester, zoo, cache, reference, flags) -> None:
    got, _ = base_metrics(pytester, zoo["logits"], cache, *flags)
    assert_same_figures(got, reference)


def test_one_channel_logits_under_auto_is_a_usage_error_before_anything_is_built(pytester, zoo, tmp_path) -> None:
    result = run(pytester, zoo["logits"], tmp_path, "--coreml-variants=q8")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = "\n".join(result.stderr.lines)
    assert f"{zoo['logits']}: field '--coreml-mask': output 'mask' on the first image (scene_000): " in text
    assert "shape (1, 32, 32) (C,H,W), dtype float64, values in [-" in text
    assert "far outside [0, 1], so not probabilities" in text and "(expected --coreml-mask=logits" in text
    assert not (tmp_path / "variants").exists()  # no variant was built


@pytest.mark.parametrize(("kind", "note"), [("two_softmax", "already probabilities"), ("two_logits", "softmax"), ("hwc", "already probabilities")])
def test_two_channels_read_channel_1_under_auto_and_say_so(pytester, zoo, cache, reference, kind, note) -> None:
    got, result = base_metrics(pytester, zoo[kind], cache, "-v")
    assert_same_figures(got, reference)
    result.stdout.fnmatch_lines([f"coreml-quality: {kind}.mlmodel mask: channel 1 of 2, {note}"])


def test_auto_is_decided_once_from_the_base_model_and_reused_for_variants(pytester, zoo, tmp_path, reference) -> None:
    def fp16_metrics(cache: Path, *args: str) -> dict[str, Any]:
        out = pytester.path / "variants.json"
        result = run(pytester, zoo["two_logits"], cache, "-k", "quality", "--coreml-variants=fp16", f"--coreml-report-json={out}", *args)
        result.assert_outcomes(passed=2)
        return json.loads(out.read_text())["models"]["two_logits.mlmodel"]["variants"]["fp16"]["metrics"]

    assert fp16_metrics(tmp_path)["iou"] == pytest.approx(reference["iou"], abs=0.01)
    # Plant another decision for the base model: the variant follows it, it does not decide for itself.
    (stored,) = (tmp_path / "masks").glob("*.json")
    stored.write_text(json.dumps({"mask": "class:1", "note": None}))
    assert fp16_metrics(tmp_path) == fp16_metrics(tmp_path / "explicit", "--coreml-mask=class:1")


def test_class_map_under_auto_lists_the_class_ids(pytester, zoo, tmp_path) -> None:
    result = run(pytester, zoo["classmap"], tmp_path)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = "\n".join(result.stderr.lines)
    assert "shape (1, 32, 32) (C,H,W), dtype int32, values in [0, 1]: a class-index map (class ids seen: 0, 1)" in text
    assert "(expected --coreml-mask=class:1, or several as --coreml-mask=class:K1,K2)" in text


def test_class_map_and_argmax_of_scores_give_the_same_figures(pytester, zoo, cache) -> None:
    from_map, _ = base_metrics(pytester, zoo["classmap"], cache, "--coreml-mask=class:1")
    from_scores, _ = base_metrics(pytester, zoo["two_logits"], cache, "--coreml-mask=class:1")
    from_three, _ = base_metrics(pytester, zoo["three"], cache, "--coreml-mask=class:1")
    assert from_map == from_scores == from_three
    assert 0.05 < from_map["iou"] < 0.95


def test_three_channels_under_auto_is_a_usage_error_naming_what_works(pytester, zoo, tmp_path) -> None:
    result = run(pytester, zoo["three"], tmp_path)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = "\n".join(result.stderr.lines)
    assert "shape (3, 32, 32) (C,H,W), dtype float64, values in [-1.163, 1.163]: 3 channels, cannot tell which one is the mask" in text
    assert "--coreml-mask=channel:K with K in 0..2" in text and "--coreml-mask=class:K / class:K1,K2" in text


def test_explicit_channel_softmaxes_scores(pytester, zoo, cache, reference) -> None:
    got, _ = base_metrics(pytester, zoo["two_logits"], cache, "--coreml-mask=channel:1")
    assert_same_figures(got, reference)


def test_colour_image_output_is_refused_as_not_a_mask(pytester, zoo, tmp_path) -> None:
    result = run(pytester, zoo["rgb_image"], tmp_path)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*rgb_image.mlmodel: output 'mask' is an RGB image output: not a mask; this looks like style transfer*"])


def test_bgr_multiarray_input_scores_like_its_rgb_twin(pytester, zoo, cache) -> None:
    rgb, _ = base_metrics(pytester, zoo["array_rgb"], cache)
    bgr, _ = base_metrics(pytester, zoo["array_bgr"], cache, "--coreml-channel-order=BGR")
    assert_same_figures(bgr, rgb)
    swapped, _ = base_metrics(pytester, zoo["array_bgr"], cache)
    assert swapped["mae"] != pytest.approx(rgb["mae"], abs=1e-3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--coreml-logits", "--coreml-mask=channel:1"), "--coreml-logits / ini 'coreml_logits' conflicts with --coreml-mask=channel:1"),
        (("--coreml-mask=channel:one",), "--coreml-mask / ini 'coreml_mask': got 'channel:one', expected auto, prob, logits"),
        (("--coreml-channel-order=GBR",), "--coreml-channel-order / ini 'coreml_channel_order': got 'GBR', expected one of RGB, BGR"),
        (("--coreml-input-layout=CHW",), "--coreml-input-layout / ini 'coreml_input_layout': got 'CHW', expected one of auto, NCHW, NHWC"),
    ],
)
def test_bad_mask_and_input_options_are_usage_errors(pytester, zoo, tmp_path, args, message) -> None:
    result = run(pytester, zoo["prob"], tmp_path, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in "\n".join(result.stderr.lines)


def test_mask_is_read_from_the_ini_file(pytester, zoo, cache) -> None:
    pytester.makeini("[pytest]\ncoreml_mask = class:1\n")
    from_ini, _ = base_metrics(pytester, zoo["classmap"], cache)
    from_flag, _ = base_metrics(pytester, zoo["classmap"], cache, "--coreml-mask=class:1")
    assert from_ini == from_flag


def test_normalize_predictions_scores_the_stretched_masks(pytester, zoo, cache, pytester_module) -> None:
    from pytest_coreml_quality.dataset import Dataset
    from pytest_coreml_quality.evaluate import Evaluator
    from pytest_coreml_quality.model import Model
    from pytest_coreml_quality.preprocess import PreprocessSettings
    from pytest_coreml_quality.runtime.base import RuntimeOptions
    from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend

    got, _ = base_metrics(pytester, zoo["prob"], cache, "--coreml-normalize-predictions")
    evaluator = Evaluator(Dataset.open(GOLDEN), PreprocessSettings(mask="prob", normalize_predictions=True))
    expected = evaluator.evaluate(backend=OnnxBackend(), model=Model.open(zoo["prob"]), options=RuntimeOptions(cache_dir=cache / "api")).summary
    assert_same_figures(got, dict(expected), exact=tuple(expected))
    assert got["mae"] != pytest.approx(pytester_module(zoo["prob"])["mae"], abs=1e-3)


def test_input_layout_option_reaches_the_preprocessing(pytester, zoo, tmp_path) -> None:
    result = run(pytester, zoo["array_rgb"], tmp_path, "--coreml-input-layout=NHWC")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "multiarray input 'img' has shape (3, 32, 32), not NHWC with 1 or 3 channels" in "\n".join(result.stderr.lines)


def test_auto_decision_is_cached_per_model_and_reused(pytester, zoo, tmp_path) -> None:
    first, _ = base_metrics(pytester, zoo["two_logits"], tmp_path)
    (stored,) = (tmp_path / "masks").glob("*.json")
    assert json.loads(stored.read_text()) == {"mask": "channel:1", "note": "channel 1 of 2, softmax"}
    # The next run reads the decision instead of running the model for it: a planted one is obeyed.
    stored.write_text(json.dumps({"mask": "class:1", "note": "planted"}))
    planted, result = base_metrics(pytester, zoo["two_logits"], tmp_path, "-v")
    result.stdout.fnmatch_lines(["coreml-quality: two_logits.mlmodel mask: planted"])
    by_class, _ = base_metrics(pytester, zoo["two_logits"], tmp_path / "other", "--coreml-mask=class:1")
    assert planted == by_class != first
    # A damaged entry is decided again.
    stored.write_text("{not json")
    again, _ = base_metrics(pytester, zoo["two_logits"], tmp_path)
    assert again == first


def test_cache_clear_happens_before_auto_decides(pytester, zoo, tmp_path) -> None:
    base_metrics(pytester, zoo["two_logits"], tmp_path)
    (tmp_path / "masks" / "stale.json").write_text("{}")
    _, result = base_metrics(pytester, zoo["two_logits"], tmp_path, "--coreml-cache-clear")
    assert [p.name for p in (tmp_path / "masks").glob("*.json")] != [] and not (tmp_path / "masks" / "stale.json").exists()
    assert any("(cleared)" in line for line in result.stdout.lines)


def test_explicit_contract_that_does_not_fit_is_a_usage_error_before_anything_is_built(pytester, zoo, tmp_path) -> None:
    result = run(pytester, zoo["two_logits"], tmp_path, "--coreml-mask=channel:2", "--coreml-variants=q8")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (
        f"{zoo['two_logits']}: field '--coreml-mask': output 'mask' (C,H,W) with 2 channels: has no channel 2 "
        "(expected channel:K with K in 0..1)"
    ) in "\n".join(result.stderr.lines)
    assert not (tmp_path / "variants").exists()


@pytest.mark.parametrize(
    ("kind", "spec", "note"),
    [
        ("classmap", "class:1", "class 1 of a class-index map"),
        ("three", "class:1,2", "class 1, 2 of the argmax of 3 channels"),
        ("two_softmax", "channel:0", "channel 0 of 2, already probabilities"),
    ],
)
def test_report_header_says_how_an_explicit_contract_reads_the_output(pytester, zoo, cache, kind, spec, note) -> None:
    _, result = base_metrics(pytester, zoo[kind], cache, f"--coreml-mask={spec}")
    result.stdout.fnmatch_lines([f"coreml-quality: {kind}.mlmodel mask: {note}"])
