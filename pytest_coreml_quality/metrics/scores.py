"""Per-image scores and their whole-set summary.

Per image, :func:`score_mask` computes every metric of this package against a
reference mask (the ground truth, or the base model's prediction for drift).
:func:`summarize` turns a list of per-image scores into whole-set values the way
the salient-object-detection literature (and PySODMetrics) does:

* scalar metrics (MAE, loss, IoU, Dice, adaptive F/E, weighted F, S, HCE) are the
  (weighted) mean of the per-image values;
* ``max_f`` / ``mean_f`` (and ``max_e`` / ``mean_e``) are the max / mean over the 256
  thresholds of the *mean curve*: one threshold for the whole set, not a per-image best;
* drift: ``max_abs_diff`` is the maximum over images, ``psnr`` comes from the mean
  per-image MSE, ``flip_share`` is the mean per-image share.

Each value's rule is its figure's ``aggregate`` in :mod:`pytest_coreml_quality.catalogue`;
a catalogue figure with a ``compute`` function is scored here too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from pytest_coreml_quality import catalogue
from pytest_coreml_quality.metrics import core, drift, structure
from pytest_coreml_quality.metrics.human_effort import hce as hce_value
from pytest_coreml_quality.metrics.human_effort import hce_available
from pytest_coreml_quality.metrics.reference import Reference

@dataclass(frozen=True)
class ImageScores:
    """Scores of one predicted mask: scalar values plus the F/E curves summaries need."""

    values: Mapping[str, float]
    f_curve: NDArray[np.float64] = field(repr=False)
    e_curve: NDArray[np.float64] = field(repr=False)

    def __getitem__(self, name: str) -> float:
        return self.values[name]


def score_mask(
    pred: NDArray,
    reference: "NDArray | Reference",
    *,
    threshold: float = core.BINARY_THRESHOLD,
    with_hce: bool = False,
    with_drift: bool = False,
) -> ImageScores:
    """Every metric of ``pred`` against ``reference`` (soft references binarised at >= 0.5).

    ``reference`` may be a prepared :class:`Reference` (reused across variants: its
    distance transform is computed once). ``threshold`` binarises the prediction for
    IoU and Dice. HCE is opt-in (``with_hce=True``, and only when PySODMetrics is
    importable): it costs more than a 1024x1024 inference per megapixel.
    ``with_drift`` adds the values that compare two predictions (max abs difference,
    MSE, PSNR, flip share).
    """
    ref = Reference.of(reference)
    p = _clipped_float(pred)
    if p.shape != ref.shape:
        raise ValueError(f"prediction shape {p.shape} differs from reference shape {ref.shape}")
    g, n_fg, n = ref.binary, ref.n_fg, ref.binary.size
    # Shared by the F and E curves: counts of pixels at or above each of the 256 levels
    # (p is clipped already: quantize_255 without its clip).
    tp, fp = core.counts_at_levels((p * 255).astype(np.uint8), g, fg_offset=ref.fg_offset)
    f_curve = core.fmeasure_from_counts(tp, fp, n_fg)
    e_curve = structure.emeasure_from_counts(tp, fp, n_fg, n)
    selected = p >= threshold
    hits = int(np.count_nonzero(selected & g))
    n_selected = int(np.count_nonzero(selected))
    union = n_selected + n_fg - hits
    adaptive = p >= core.adaptive_threshold(p)
    adp_tp = int(np.count_nonzero(adaptive & g))
    adp_selected = int(np.count_nonzero(adaptive))
    values: dict[str, float] = {
        "mae": _mean_abs_diff(p, ref.soft),
        # to_uint8 of the clipped p, widened: the rounded levels fit int16 as they are.
        "loss255": float(np.mean(np.abs(np.rint(p * 255.0).astype(np.int16) - ref.levels_255_int16))),
        "iou": hits / union if union else 1.0,
        "dice": 2.0 * hits / (n_selected + n_fg) if n_selected + n_fg else 1.0,
        "max_f": float(f_curve.max()),
        "mean_f": float(f_curve.mean()),
        "adp_f": _adaptive_f(adp_tp, adp_selected, n_fg),
        "wf": structure.weighted_fmeasure(p, ref),
        "s": structure.s_measure(p, ref),
        "max_e": float(e_curve.max()),
        "mean_e": float(e_curve.mean()),
        "adp_e": float(structure.emeasure_from_counts(adp_tp, adp_selected - adp_tp, n_fg, n)),
    }
    if with_hce and hce_available():
        h = hce_value(p, g)
        if h is not None:
            values["hce"] = h
    for figure in catalogue.computed_metrics():
        values[figure.key] = float(figure.compute(p, ref))  # type: ignore[misc]
    if with_drift:
        diff = p - ref.soft
        values["max_abs_diff"] = float(np.max(np.abs(diff)))
        values["mse"] = float(np.mean(diff * diff))
        values["psnr"] = math.inf if values["mse"] == 0 else 10.0 * math.log10(1.0 / values["mse"])
        values["flip_share"] = drift.flip_share(p, ref.soft)
    return ImageScores(values=values, f_curve=f_curve, e_curve=e_curve)


def _clipped_float(pred: NDArray) -> core.FloatArray:
    """``np.clip(as_float(pred), 0, 1)``, clipping in place when ``as_float`` made a copy."""
    p = core.as_float(pred)
    if p is pred or not p.flags.writeable or p.base is not None:
        return np.clip(p, 0.0, 1.0)
    return np.clip(p, 0.0, 1.0, out=p)


def _mean_abs_diff(a: core.FloatArray, b: core.FloatArray) -> float:
    """``mean(|a - b|)`` with one temporary instead of two."""
    diff = a - b
    return float(np.mean(np.abs(diff, out=diff)))


def _adaptive_f(tp: int, selected: int, n_fg: int, beta2: float = core.F_BETA2) -> float:
    if tp == 0:
        return 0.0
    precision, recall = tp / selected, tp / n_fg
    return float((1 + beta2) * precision * recall / (beta2 * precision + recall))


def summarize(scores: Sequence[ImageScores], weights: Sequence[float] | None = None) -> dict[str, float]:
    """Whole-set values from per-image scores (see the module docstring for the rules)."""
    if not scores:
        raise ValueError("cannot summarize an empty list of scores")
    w = np.ones(len(scores)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(scores),) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be one non-negative number per image, not all zero")
    w = w / w.sum()

    def wmean(values: Sequence[float] | NDArray) -> float:
        return float(np.tensordot(w, np.asarray(values, dtype=np.float64), axes=1))

    f_curve = np.tensordot(w, np.stack([s.f_curve for s in scores]), axes=1)
    e_curve = np.tensordot(w, np.stack([s.e_curve for s in scores]), axes=1)
    curves = {"f_curve": f_curve, "e_curve": e_curve}
    out: dict[str, float] = {}
    for name in scores[0].values:
        column = [s.values.get(name, math.nan) for s in scores]
        figure = catalogue.per_image_value(name)
        rule = "mean" if figure is None else figure.aggregate
        if rule == "max":
            out[name] = max(column)
        elif rule == "min":
            out[name] = min(column)
        elif rule.endswith(("_max", "_mean")):
            curve, reducer = rule.rsplit("_", 1)
            out[name] = float(curves[curve].max() if reducer == "max" else curves[curve].mean())
        elif rule != "psnr_of_mse":
            out[name] = wmean(column)
    for name in scores[0].values:
        figure = catalogue.per_image_value(name)
        if figure is not None and figure.aggregate == "psnr_of_mse" and "mse" in out:
            out[name] = math.inf if out["mse"] == 0 else 10.0 * math.log10(1.0 / out["mse"])
    # Keep the order of the per-image values for readable reports.
    order = list(scores[0].values)
    return {k: out[k] for k in order if k in out}
