"""Metrics: hand-computed values on tiny arrays, the uint8 wrap-around, and PySODMetrics parity."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from pytest_coreml_quality import metrics as M
from pytest_coreml_quality.metrics import core, structure

GT_TOP = np.array([[1, 1], [0, 0]], dtype=bool)


def test_mae_iou_dice_by_hand() -> None:
    pred = np.array([[0.9, 0.8], [0.3, 0.6]])
    # |0.9-1| + |0.8-1| + 0.3 + 0.6 = 1.2 over 4 pixels.
    assert M.mae(pred, GT_TOP) == pytest.approx(0.3)
    # pred >= 0.5 selects three pixels, two of them foreground.
    assert M.iou(pred, GT_TOP) == pytest.approx(2 / 3)
    assert M.dice(pred, GT_TOP) == pytest.approx(4 / 5)
    # A stricter threshold drops the 0.6 false positive.
    assert M.iou(pred, GT_TOP, threshold=0.7) == pytest.approx(1.0)


def test_empty_masks_agree_perfectly() -> None:
    zeros = np.zeros((3, 3))
    assert M.iou(zeros, zeros) == 1.0
    assert M.dice(zeros, zeros) == 1.0


def test_soft_ground_truth_is_binarised_at_half_inclusive() -> None:
    soft_gt = np.array([[0.5, 0.49]])
    assert M.binarize(soft_gt).tolist() == [[True, False]]
    # MAE keeps the soft values: |0.5-0.5| + |0.49-0| = 0.49 over 2.
    assert M.mae(np.array([[0.5, 0.0]]), soft_gt) == pytest.approx(0.245)


def test_article_loss_does_not_wrap_around() -> None:
    pred = np.array([[3, 250]], dtype=np.uint8)
    gt = np.array([[5, 10]], dtype=np.uint8)
    # Correct: (|3-5| + |250-10|) / 2 = 121. uint8 subtraction would give (254 + 240) / 2 = 247.
    assert M.article_loss(pred, gt) == pytest.approx(121.0)
    wrapped = float(np.mean(np.abs(pred - gt)))
    assert wrapped == pytest.approx(247.0)  # the bug this test guards against
    # Same numbers from float masks (rounded to 8 bits like saved masks).
    assert M.article_loss(pred / 255.0, gt / 255.0) == pytest.approx(121.0)


def test_fmeasure_curve_by_hand() -> None:
    pred = np.array([[0.9, 0.8], [0.3, 0.6]])  # 8-bit levels 229, 204, 76, 153
    curve = M.fmeasure_curve(pred, GT_TOP)

    def f(p: float, r: float) -> float:
        return 1.3 * p * r / (0.3 * p + r)

    expected = np.zeros(256)
    expected[0:77] = f(2 / 4, 1)  # every pixel selected
    expected[77:154] = f(2 / 3, 1)  # 229, 204, 153
    expected[154:205] = 1.0  # 229, 204: exactly the foreground
    expected[205:230] = f(1, 1 / 2)  # 229 only
    # from 230 on nothing is selected: F = 0
    np.testing.assert_allclose(curve, expected, rtol=0, atol=1e-12)


def test_adaptive_fmeasure_by_hand() -> None:
    pred = np.array([[0.9, 0.1], [0.3, 0.0]])  # mean 0.325: threshold 0.65 keeps only 0.9
    assert M.adaptive_fmeasure(pred, GT_TOP) == pytest.approx(1.3 * 0.5 / (0.3 + 0.5))
    # Threshold capped at 1: a prediction with mean > 0.5 selects only exact ones.
    assert M.adaptive_fmeasure(np.full((2, 2), 0.9), GT_TOP) == 0.0


def test_smeasure_extremes() -> None:
    gt = np.zeros((8, 8), dtype=bool)
    gt[2:6, 1:5] = True
    assert M.s_measure(gt.astype(float), gt) == pytest.approx(1.0)
    assert M.s_measure((~gt).astype(float), gt) < 0.1
    pred = np.full((8, 8), 0.25)
    # No foreground: S = 1 - mean(pred); all foreground: S = mean(pred).
    assert M.s_measure(pred, np.zeros((8, 8))) == pytest.approx(0.75)
    assert M.s_measure(pred, np.ones((8, 8))) == pytest.approx(0.25)


def test_emeasure_of_a_perfect_binary_prediction() -> None:
    gt = np.zeros((5, 4), dtype=bool)
    gt[1:3, 1:3] = True
    curve = M.emeasure_curve(gt.astype(float), gt)
    n = gt.size
    # At every threshold above 0 the prediction equals gt: the alignment is 1 per pixel,
    # and the reference divides the sum by N - 1.
    np.testing.assert_allclose(curve[1:], n / (n - 1), rtol=1e-12)
    assert M.adaptive_emeasure(gt.astype(float), gt) == pytest.approx(n / (n - 1))


@pytest.mark.parametrize("truth", [True, False])
def test_emeasure_of_a_one_pixel_image_stays_in_range(truth: bool) -> None:
    # The reference's N - 1 is 0 here: the figure was about 4.5e15 (a golden photo of 1x1).
    gt = np.array([[truth]])
    assert M.emeasure_curve(gt.astype(float), gt)[1:] == pytest.approx(1.0)
    assert M.emeasure_curve((~gt).astype(float), gt)[1:] == pytest.approx(0.0)


def test_weighted_fmeasure_extremes() -> None:
    gt = np.zeros((16, 16), dtype=bool)
    gt[4:12, 4:12] = True
    assert M.weighted_fmeasure(gt.astype(float), gt) == pytest.approx(1.0)
    assert M.weighted_fmeasure(np.zeros((16, 16)), gt) == pytest.approx(0.0)
    assert M.weighted_fmeasure(np.ones((16, 16)), np.zeros((16, 16))) == 0.0
    # Errors far from the object weigh more than errors next to it.
    near, far = gt.astype(float), gt.astype(float)
    near[3, 6] = 1.0
    far[0, 15] = 1.0
    assert M.weighted_fmeasure(far, gt) < M.weighted_fmeasure(near, gt) < 1.0


def test_drift_values_by_hand() -> None:
    base = np.array([[0.4, 0.6, 0.5, 0.49]])
    pred = np.array([[0.6, 0.6, 0.49, 0.49]])
    assert M.max_abs_diff(pred, base) == pytest.approx(0.2)
    assert M.flip_share(pred, base) == pytest.approx(0.5)  # pixels 0 and 2 cross 0.5
    assert M.psnr(base, base) == math.inf
    shifted = np.clip(base + 0.1, 0, 1)
    assert M.psnr(shifted, base) == pytest.approx(20.0)  # MSE 0.01 with peak 1


def test_summary_uses_the_mean_curve_and_weights() -> None:
    gt = np.zeros((4, 4), dtype=bool)
    gt[:2] = True
    a = M.score_mask(np.where(gt, 0.9, 0.5), gt, with_hce=False)  # perfect for t in 128..229
    b = M.score_mask(np.where(gt, 0.4, 0.1), gt, with_hce=False)  # perfect for t in 26..102
    summary = M.summarize([a, b])
    mean_curve = (a.f_curve + b.f_curve) / 2
    assert summary["max_f"] == pytest.approx(mean_curve.max())
    # One threshold for the whole set, not each image's best: here both images reach F=1
    # at different thresholds, so the set's max F is below 1.
    assert a["max_f"] == b["max_f"] == pytest.approx(1.0)
    assert summary["max_f"] < 0.99
    weighted = M.summarize([a, b], weights=[3, 1])
    assert weighted["mae"] == pytest.approx(0.75 * a["mae"] + 0.25 * b["mae"])
    with pytest.raises(ValueError):
        M.summarize([])


def test_score_mask_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        M.score_mask(np.zeros((4, 4)), np.zeros((4, 5)))


def test_drift_scores_include_drift_only_values() -> None:
    base = np.tile(np.linspace(0, 1, 8), (8, 1))
    same = M.score_mask(base, base, with_hce=False, with_drift=True)
    assert same["max_abs_diff"] == 0.0 and same["flip_share"] == 0.0 and same["psnr"] == math.inf
    summary = M.summarize([same, M.score_mask(base * 0.5, base, with_hce=False, with_drift=True)])
    assert summary["max_abs_diff"] == pytest.approx(0.5)
    assert 0 < summary["flip_share"] < 1
    assert np.isfinite(summary["psnr"])


# --- parity with PySODMetrics on the golden set --------------------------------------------


def _fake_predictions(masks: list[np.ndarray]) -> list[np.ndarray]:
    """Plausible predictions: blurred, shifted, noisy and partly wrong versions of the masks."""
    from scipy import ndimage

    rng = np.random.default_rng(1234)
    preds = []
    for i, m in enumerate(masks):
        p = ndimage.gaussian_filter(m.astype(np.float64), sigma=1 + i % 4)
        p = np.roll(p, shift=(i % 5) - 2, axis=1)
        p = p + rng.normal(0.0, 0.08, p.shape)
        if i % 3 == 0:  # a spurious blob some of the time
            h, w = p.shape
            p[h // 8 : h // 4, w // 8 : w // 4] += 0.7
        if i % 7 == 6:  # and an empty prediction
            p[:] = 0.0
        preds.append(np.clip(p, 0.0, 1.0))
    return preds


def test_matches_pysodmetrics_on_the_golden_set(golden_set) -> None:
    py_sod_metrics = pytest.importorskip("py_sod_metrics")
    gts = [M.binarize(s.mask) for s in golden_set]
    preds = _fake_predictions(gts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Fmeasure warns that FmeasureV2 will replace it
        ref = {
            "fm": py_sod_metrics.Fmeasure(),
            "em": py_sod_metrics.Emeasure(),
            "sm": py_sod_metrics.Smeasure(),
            "wfm": py_sod_metrics.WeightedFmeasure(),
            "mae": py_sod_metrics.MAE(),
            "hce": py_sod_metrics.HumanCorrectionEffortMeasure(),
        }
    ours = []
    for pred, gt in zip(preds, gts):
        for evaluator in ref.values():
            evaluator.step(pred, gt, normalize=False)
        ours.append(M.score_mask(pred, gt, with_hce=True))
    summary = M.summarize(ours)
    fm, em = ref["fm"].get_results()["fm"], ref["em"].get_results()["em"]
    expected = {
        "max_f": fm["curve"].max(),
        "mean_f": fm["curve"].mean(),
        "adp_f": fm["adp"],
        "max_e": em["curve"].max(),
        "mean_e": em["curve"].mean(),
        "adp_e": em["adp"],
        "s": ref["sm"].get_results()["sm"],
        "wf": ref["wfm"].get_results()["wfm"],
        "mae": ref["mae"].get_results()["mae"],
        "hce": ref["hce"].get_results()["hce"],
    }
    for name, value in expected.items():
        assert summary[name] == pytest.approx(value, abs=1e-6), name
    # Per image too, not only on average.
    per_image = {
        "s": ref["sm"].sms,
        "wf": ref["wfm"].weighted_fms,
        "adp_f": ref["fm"].adaptive_fms,
        "adp_e": ref["em"].adaptive_ems,
        "mae": ref["mae"].maes,
        "hce": ref["hce"].hces,
    }
    for name, values in per_image.items():
        np.testing.assert_allclose([s[name] for s in ours], values, rtol=0, atol=1e-6, err_msg=name)
    for s, curve in zip(ours, ref["fm"].changeable_fms):
        np.testing.assert_allclose(s.f_curve, curve[::-1], rtol=0, atol=1e-6)  # PySOD lists thresholds 255..0
    for s, curve in zip(ours, ref["em"].changeable_ems):
        np.testing.assert_allclose(s.e_curve, curve[::-1], rtol=0, atol=1e-6)
    # The set is not trivial: metrics spread over a range, so agreement means something.
    assert np.ptp([s["s"] for s in ours]) > 0.1


def test_hce_is_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_coreml_quality.metrics import human_effort as hce_module

    monkeypatch.setattr(hce_module, "_hce_evaluator", lambda: None)
    gt = np.eye(4, dtype=bool)
    assert hce_module.hce(gt.astype(float), gt) is None
    assert "pysodmetrics" in (hce_module.hce_unavailable_reason() or "")
    from pytest_coreml_quality.metrics import scores

    monkeypatch.setattr(scores, "hce_available", lambda: False)
    assert "hce" not in M.score_mask(gt.astype(float), gt, with_hce=True).values


def test_float32_and_float64_predictions_score_alike() -> None:
    rng = np.random.default_rng(0)
    gt = rng.random((32, 32)) > 0.6
    pred = rng.random((32, 32)).astype(np.float32)
    a = M.score_mask(pred, gt, with_hce=False)
    b = M.score_mask(pred.astype(np.float64), gt, with_hce=False)
    assert a.values == b.values
    assert core.quantize_255(np.array([1.0, 0.0, 0.999])).tolist() == [255, 0, 254]
    assert structure.s_measure(pred, gt) == a["s"]


@pytest.mark.parametrize("case", ["corner_pixel", "touches_all_borders", "thin_line", "random"])
def test_weighted_fmeasure_matches_pysodmetrics_at_image_borders(case: str) -> None:
    # The filter is applied to the foreground's bounding box only: borders are the risky part.
    py_sod_metrics = pytest.importorskip("py_sod_metrics")
    rng = np.random.default_rng(5)
    gt = np.zeros((23, 31), dtype=bool)
    if case == "corner_pixel":
        gt[0, 30] = True
    elif case == "touches_all_borders":
        gt[:, 10:12] = True
        gt[5:7, :] = True
    elif case == "thin_line":
        gt[21, 2:29] = True
    else:
        gt = rng.random((23, 31)) > 0.7
    pred = np.clip(gt + rng.normal(0, 0.3, gt.shape), 0, 1)
    reference = py_sod_metrics.WeightedFmeasure()
    reference.step(pred, gt, normalize=False)
    assert M.weighted_fmeasure(pred, gt) == pytest.approx(reference.get_results()["wfm"], abs=1e-9)
