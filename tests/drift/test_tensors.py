"""Outputs that are not masks: tensor drift figures, output kinds, several outputs (issue 12, part 2)."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from pytest_coreml_quality import catalogue
from pytest_coreml_quality.metrics import tensor_drift as td

from ..conftest import FIXTURES
from .models import save_heatmap_model, save_rgb_image_model, save_two_output_model

GOLDEN = FIXTURES / "golden"


# --- per-image figures against independent numpy computations ---------------------------------


def test_mae_max_abs_and_psnr_on_the_base_range() -> None:
    base = np.array([[0.0, 10.0], [4.0, 6.0]])
    pred = np.array([[1.0, 10.0], [4.0, 3.0]])
    assert td.mae(pred, base) == pytest.approx((1 + 0 + 0 + 3) / 4)
    assert td.max_abs(pred, base) == 3.0
    # range 10 - 0 = 10, mse = (1 + 9) / 4 = 2.5
    assert td.psnr(pred, base) == pytest.approx(10 * math.log10(100 / 2.5))
    assert td.psnr(base, base) == math.inf
    flat = np.full((2, 2), 3.0)  # a constant base has no range: peak 1
    assert td.psnr(flat + 0.1, flat) == pytest.approx(10 * math.log10(1 / 0.01))


def test_cosine_similarity() -> None:
    assert td.cosine(np.array([1.0, 1.0]), np.array([1.0, 0.0])) == pytest.approx(1 / math.sqrt(2))
    assert td.cosine(np.array([-2.0, 0.0]), np.array([1.0, 0.0])) == pytest.approx(-1.0)
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(4, 5, 6)), rng.normal(size=(4, 5, 6))
    expected = sum(x * y for x, y in zip(a.ravel(), b.ravel())) / math.sqrt((a**2).sum() * (b**2).sum())
    assert td.cosine(a, b) == pytest.approx(expected)
    assert td.cosine(np.zeros(3), np.zeros(3)) == 1.0 and td.cosine(np.zeros(3), np.ones(3)) == 0.0


def test_keypoints_moved_beyond_the_tolerance() -> None:
    base = np.zeros((1, 3, 10, 10))
    pred = np.zeros((1, 3, 10, 10))
    base[0, 0, 2, 2] = pred[0, 0, 2, 3] = 1.0  # moved 1 px
    base[0, 1, 5, 5] = pred[0, 1, 8, 5] = 1.0  # moved 3 px
    base[0, 2, 1, 1] = pred[0, 2, 2, 2] = 1.0  # moved sqrt(2) px
    assert td.keypoints_moved(pred, base, tolerance=2) == pytest.approx(1 / 3)
    assert td.keypoints_moved(pred, base, tolerance=1) == pytest.approx(2 / 3)
    assert td.keypoints_moved(pred, base, tolerance=3) == 0.0
    assert td.heatmap_peaks(base).tolist() == [[2, 2], [5, 5], [1, 1]]


@pytest.mark.parametrize("shape", [(32, 40, 3), (24, 24)])
def test_ssim_matches_scikit_image(shape: tuple[int, ...]) -> None:
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(7)
    base = rng.uniform(0, 255, size=shape)
    pred = np.clip(base + rng.normal(0, 20, size=shape), 0, 255)
    expected = metrics.structural_similarity(
        pred, base, data_range=float(base.max() - base.min()), gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, channel_axis=-1 if len(shape) == 3 else None,
    )
    assert td.ssim(pred, base) == pytest.approx(expected, abs=1e-9)
    assert td.ssim(base, base) == pytest.approx(1.0)


def test_ssim_refuses_images_smaller_than_its_window() -> None:
    with pytest.raises(ValueError, match="at least 11x11"):
        td.ssim(np.zeros((8, 8)), np.zeros((8, 8)))


def test_shapes_must_match() -> None:
    with pytest.raises(ValueError, match="differs from the base model's"):
        td.mae(np.zeros((2, 3)), np.zeros((3, 2)))


def test_tensor_figures_are_in_the_catalogue_with_options() -> None:
    for key, option in [
        ("drift_tensor_mae", "coreml_max_tensor_mae"), ("drift_tensor_max_abs", "coreml_max_tensor_abs"),
        ("drift_tensor_psnr", "coreml_min_tensor_psnr"), ("drift_cosine", "coreml_min_cosine"),
        ("drift_keypoints_moved", "coreml_max_keypoints_moved"),
    ]:
        figure = catalogue.get(key)
        assert figure is not None and figure.family == "drift" and figure.option_dest == option and figure.base_exempt


# --- the plugin, end to end ---------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("plain_run_environment")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tensor-models")
    shutil.copytree(GOLDEN / "images", root / "photos" / "images")
    return {
        "photos": root / "photos",
        "heatmap": save_heatmap_model(root / "Pose.mlmodel"),
        "two": save_two_output_model(root / "DepthAndFeatures.mlmodel"),
        "rgb": save_rgb_image_model(root / "Style.mlmodel"),
        "cache": root / "cache",
    }


def _run(pytester: pytest.Pytester, files: dict[str, Path], model: str, *args: str, dataset: Path | None = None) -> pytest.RunResult:
    return pytester.runpytest(
        f"--coreml-model={files[model]}", f"--coreml-dataset={dataset or files['photos']}", "--coreml-variants=q8,q2",
        f"--coreml-cache-dir={files['cache']}", "-p", "no:randomly", "-k", "quality", *args,
    )


def _rows(result: pytest.RunResult) -> dict[str, str]:
    return {m.group(1): line for line in result.stdout.lines if (m := re.match(r"^(base|q8|q2)\s", line))}


def test_heatmap_model_on_image_only_set_is_compared_as_tensors(pytester: pytest.Pytester, files: dict[str, Path]) -> None:
    report = pytester.path / "r.json"
    result = _run(pytester, files, "heatmap", f"--coreml-report-json={report}")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([
        "*Pose.mlmodel output: 'heatmaps' compared as tensors with the base model's output, not read as a mask (*5 channels*",
    ])
    header = next(line for line in result.stdout.lines if line.startswith("variant"))
    assert "t-MAE" in header and "cos" in header and "IoU" not in header and "kp-moved" not in header
    summary = json.loads(report.read_text())["summary"]["Pose.mlmodel"]
    assert summary["base"]["drift_tensor_mae"] is None
    assert 0 < summary["q8"]["drift_tensor_mae"] < summary["q2"]["drift_tensor_mae"]
    assert summary["q8"]["drift_cosine"] > summary["q2"]["drift_cosine"]
    assert summary["q8"]["drift_tensor_psnr"] > summary["q2"]["drift_tensor_psnr"]
    assert summary["q2"]["drift_keypoints_moved"] is None  # only for --coreml-output-kind=heatmap
    assert summary["q2"]["drift_ssim"] is None  # only for image outputs
    assert "- " in _rows(result)["base"]


def test_heatmap_kind_bounds_moved_keypoints(pytester: pytest.Pytester, files: dict[str, Path]) -> None:
    result = _run(
        pytester, files, "heatmap", "--coreml-output-kind=heatmap", "--coreml-keypoint-tolerance=0",
        "--coreml-max-keypoints-moved=0", "--coreml-min-cosine=0.5",
    )
    header = next(line for line in result.stdout.lines if line.startswith("variant"))
    assert "kp-moved" in header
    result.stdout.fnmatch_lines(["*compared as keypoint heat maps*--coreml-output-kind=heatmap*"])
    # 2-bit weights move some peak by at least a pixel; 8-bit weights keep them all in place.
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*Pose.mlmodel [[]q2[]]: * threshold(s) broken*", "*drift_keypoints_moved = *, bound <= 0*"])


def test_tensor_bounds_fail_with_the_figure_and_worst_images(pytester: pytest.Pytester, files: dict[str, Path]) -> None:
    result = _run(pytester, files, "heatmap", "--coreml-output-kind=tensor", "--coreml-min-cosine=0.9999")
    result.assert_outcomes(passed=2, failed=1)  # 8-bit weights keep the direction; 2-bit ones do not
    result.stdout.fnmatch_lines(["*drift_cosine = 0.*, bound >= 0.9999*", "*worst images: scene_*"])
    assert "Traceback" not in result.stdout.str()


def test_several_outputs_are_each_compared_and_named(pytester: pytest.Pytester, files: dict[str, Path]) -> None:
    report = pytester.path / "r.json"
    result = _run(pytester, files, "two", f"--coreml-report-json={report}")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*DepthAndFeatures.mlmodel output: 'depth', 'features' compared as tensors*"])
    drift = json.loads(report.read_text())["models"]["DepthAndFeatures.mlmodel"]["variants"]["q2"]["drift"]
    # The variant's figure is the worst of its outputs; each output is reported by name.
    assert drift["tensor_mae"] == max(drift["tensor_mae[depth]"], drift["tensor_mae[features]"])
    assert drift["cosine"] == min(drift["cosine[depth]"], drift["cosine[features]"])


def test_output_option_picks_one_output(pytester: pytest.Pytester, files: dict[str, Path]) -> None:
    report = pytester.path / "r.json"
    result = _run(pytester, files, "two", "--coreml-output=depth", "--coreml-output-kind=tensor", f"--coreml-report-json={report}")
    result.assert_outcomes(passed=3)
    drift = json.loads(report.read_text())["models"]["DepthAndFeatures.mlmodel"]["variants"]["q2"]["drift"]
    assert "tensor_mae" in drift and not any("[" in k for k in drift)


def test_colour_image_output_on_image_only_set(pytester: pytest.Pytester, files: dict[str, Path]) -> None:
    report = pytester.path / "r.json"
    result = _run(pytester, files, "rgb", f"--coreml-report-json={report}")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*Style.mlmodel output: 'stylized' compared as tensors*RGB image output: not a mask*"])
    summary = json.loads(report.read_text())["summary"]["Style.mlmodel"]
    assert summary["q2"]["drift_tensor_psnr"] < summary["q8"]["drift_tensor_psnr"]
    assert summary["q2"]["drift_ssim"] < summary["q8"]["drift_ssim"] <= 1.0
    assert "SSIM" in next(line for line in result.stdout.lines if line.startswith("variant"))


def test_non_mask_output_with_ground_truth_is_still_a_usage_error(pytester: pytest.Pytester, files: dict[str, Path]) -> None:
    result = _run(pytester, files, "heatmap", dataset=GOLDEN)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "5 channels, cannot tell which one is the mask" in result.stderr.str()
