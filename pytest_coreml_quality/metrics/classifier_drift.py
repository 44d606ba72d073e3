"""How far a classifier variant's class probabilities moved from the base model's, and its accuracy.

Probabilities are vectors in one fixed class order (the model's class labels). Every
drift function takes the variant's vector first and the base model's second.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

TOP_K = 5
# Probabilities are clipped to this before logarithms: a class the variant rules out entirely
# must give a large, finite divergence rather than inf.
KL_EPSILON = 1e-12


def _pair(pred: Any, base: Any) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    a, b = np.asarray(pred, dtype=np.float64).ravel(), np.asarray(base, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"{a.size} class probabilities differ from the base model's {b.size}")
    return a, b


def top_k(probs: Any, k: int = TOP_K) -> list[int]:
    """Indices of the ``k`` most probable classes, most probable first (ties: lower index first)."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    return [int(i) for i in np.argsort(-p, kind="stable")[:k]]


def top1_agreement(pred: Any, base: Any) -> float:
    """1 when the variant's most probable class is the base model's, else 0."""
    a, b = _pair(pred, base)
    return float(top_k(a, 1) == top_k(b, 1))


def top5_overlap(pred: Any, base: Any) -> float:
    """Share of the base model's top-5 classes that are also in the variant's top 5."""
    a, b = _pair(pred, base)
    k = min(TOP_K, a.size)
    return len(set(top_k(a, k)) & set(top_k(b, k))) / k if k else 1.0


def prob_mae(pred: Any, base: Any) -> float:
    """Mean absolute difference of the class probabilities."""
    a, b = _pair(pred, base)
    return float(np.mean(np.abs(a - b))) if a.size else 0.0


def kl_divergence(pred: Any, base: Any) -> float:
    """KL(base || variant) in nats: the information lost using the variant's probabilities for the base's."""
    a, b = _pair(pred, base)
    a = np.clip(a, KL_EPSILON, None)
    b = np.clip(b, KL_EPSILON, None)
    a, b = a / a.sum(), b / b.sum()
    return max(0.0, float(np.sum(b * np.log(b / a))))


def classifier_values(pred: Any, base: Any) -> dict[str, float]:
    """Every per-image classifier drift value (catalogue names without ``drift_``)."""
    return {
        "top1_agreement": top1_agreement(pred, base),
        "top5_overlap": top5_overlap(pred, base),
        "prob_mae": prob_mae(pred, base),
        "kl": kl_divergence(pred, base),
    }


def accuracy_values(probs: Any, labels: Sequence[str], truth: str) -> dict[str, float]:
    """Top-1 and top-5 hits (1 or 0) of one image whose true class is ``truth``."""
    ranked = [labels[i] for i in top_k(probs, TOP_K)]
    return {"top1": float(bool(ranked) and ranked[0] == truth), "top5": float(truth in ranked)}


__all__ = ["accuracy_values", "classifier_values", "kl_divergence", "prob_mae", "top1_agreement", "top5_overlap", "top_k"]
