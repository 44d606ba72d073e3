"""Quality metrics of predicted masks: numpy core, structural metrics, drift, summaries.

See :mod:`pytest_coreml_quality.metrics.core` for the conventions (value ranges,
the ``>= 0.5`` binarisation rule) shared by every metric.
"""

from pytest_coreml_quality.metrics.core import (
    BINARY_THRESHOLD,
    F_BETA2,
    adaptive_fmeasure,
    article_loss,
    binarize,
    dice,
    fmeasure_curve,
    iou,
    mae,
)
from pytest_coreml_quality.metrics.drift import flip_share, max_abs_diff, psnr
from pytest_coreml_quality.metrics.human_effort import hce, hce_available, hce_unavailable_reason
from pytest_coreml_quality.metrics.reference import Reference
from pytest_coreml_quality.metrics.scores import ImageScores, score_mask, summarize
from pytest_coreml_quality.metrics.structure import (
    adaptive_emeasure,
    emeasure_curve,
    s_measure,
    weighted_fmeasure,
)

__all__ = [
    "BINARY_THRESHOLD",
    "F_BETA2",
    "ImageScores",
    "Reference",
    "adaptive_emeasure",
    "adaptive_fmeasure",
    "article_loss",
    "binarize",
    "dice",
    "emeasure_curve",
    "flip_share",
    "fmeasure_curve",
    "hce",
    "hce_available",
    "hce_unavailable_reason",
    "iou",
    "mae",
    "max_abs_diff",
    "psnr",
    "s_measure",
    "score_mask",
    "summarize",
    "weighted_fmeasure",
]
