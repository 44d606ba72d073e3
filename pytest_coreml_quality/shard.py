"""``--coreml-shard=I/N``: one CI job evaluates one shard of the golden set and writes a partial report.

Shard I of N holds the images whose rank among the golden set's ids, sorted by name, is
I-1 modulo N (:meth:`.Dataset.shard`), for every variant. A shard judges no threshold (its
figures cover part of the set): it reports, and a ``--coreml-merge`` run (:mod:`.merge`)
judges the whole. Per-image errors (an unreadable photo, a NaN output) still fail it.

The partial report is the ordinary JSON report plus a ``shard`` section holding what the
merge needs and checks: the shard's images (position in the set, weight, pixel hashes),
the golden set's listing, the settings that change figures, each model's thresholds and
swept recipes; each variant's result also carries its images' F/E curves (``curves``),
because set figures such as max F come from the mean curve, not from per-image values.
Outputs that are not masks (tensors, heat maps, classifiers) need no more than their
per-image values: each of their set figures is a weighted mean, a min or a max of them
(:func:`.tensors.drift_summary`).
Size, download size and build time are per variant: every shard has them. Load times are
measured by shard 1 only (the others skip their load items), and the merge takes shard 1's.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_coreml_quality.errors import SettingError

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from pytest_coreml_quality.metrics.scores import ImageScores
    from pytest_coreml_quality.session import QualitySession

#: Bump when the ``shard`` section or the curves change meaning: a merge refuses other formats.
PARTIAL_FORMAT = 1
#: The shard that measures load times (1-based).
LOAD_SHARD = 1


def score_curves(truth: Mapping[str, "ImageScores"], drift: Mapping[str, "ImageScores"]) -> dict[str, dict[str, str]]:
    """Image id -> its F and E curves against the ground truth (``f``, ``e``) and the base (``drift_f``, ``drift_e``),
    each packed by :func:`pack_curve`."""
    curves: dict[str, dict[str, str]] = {}
    for prefix, scores in (("", truth), ("drift_", drift)):
        for sample_id, score in scores.items():
            entry = curves.setdefault(sample_id, {})
            entry[prefix + "f"] = pack_curve(score.f_curve)
            entry[prefix + "e"] = pack_curve(score.e_curve)
    return curves


def pack_curve(curve: "NDArray[np.float64]") -> str:
    """A curve as text, exactly: its float64 bytes (little-endian), deflated, in base64.

    As a JSON list, the 4 curves of 256 values per image and variant would make a partial
    report of a few hundred images tens of megabytes; packed, they take a fraction of it.
    """
    raw = np.ascontiguousarray(curve, dtype="<f8").tobytes()
    return base64.b64encode(zlib.compress(raw, 6)).decode("ascii")


def unpack_curve(text: str) -> "NDArray[np.float64]":
    """The curve :func:`pack_curve` packed (ValueError when the text is not one)."""
    try:
        raw = zlib.decompress(base64.b64decode(text.encode("ascii"), validate=True))
    except (binascii.Error, zlib.error, UnicodeEncodeError, AttributeError) as exc:
        raise ValueError(f"not a packed curve ({exc})") from None
    if len(raw) % 8:
        raise ValueError("not a packed curve (its length is not a whole number of float64 values)")
    return np.frombuffer(raw, dtype="<f8").astype(np.float64)


def check_shard_run(session: "QualitySession") -> None:
    """A shard run needs a golden set to split and a JSON report to write; it compares nothing with baselines."""
    settings = session.settings
    assert settings.shard is not None
    flag = "--coreml-shard"
    if settings.dataset is None:
        raise SettingError(f"{flag} splits the golden set: expected --coreml-dataset=DIR too")
    if settings.report_json is None:
        raise SettingError(f"{flag}: a shard's figures are kept only in its partial report; expected --coreml-report-json=FILE too")
    if settings.baseline is not None or settings.save_baseline is not None:
        raise SettingError(
            f"{flag}: baselines compare whole-set figures; expected --coreml-baseline / --coreml-save-baseline "
            "in the --coreml-merge run (or a single-job run), not in a shard run"
        )


def figure_settings(session: "QualitySession") -> dict[str, Any]:
    """The settings that change figures: every shard of one run must have the same."""
    s = session.settings
    return {
        "backends": list(session.backend_names),
        "precision": s.precision,
        "compute_units": list(s.compute_units),
        "hce": s.hce,
        "load_rounds": s.load_rounds,
        "recommend_metric": s.recommend_metric,
        "keypoint_tolerance": s.keypoint_tolerance,
        "preprocess": {key: asdict(session.preprocess_settings(key)) for key in session.results.models},
    }


def shard_section(session: "QualitySession") -> dict[str, Any]:
    """The ``shard`` section of a partial JSON report (see the module docstring)."""
    settings = session.settings
    assert settings.shard is not None and session.dataset is not None
    index, count = settings.shard
    whole = session.dataset.whole or session.dataset
    position = {sample_id: k for k, sample_id in enumerate(whole.ids)}
    return {
        "format": PARTIAL_FORMAT,
        "index": index,
        "count": count,
        "load_times": index == LOAD_SHARD,
        "golden_set": {"images": len(whole.ids), "listing": whole.listing_digest(), "has_truth": whole.has_truth,
                       "labels": session.labels is not None},
        "images": [
            {"id": s.id, "position": position[s.id], "weight": s.weight, "image_hash": s.image_hash, "mask_hash": s.mask_hash}
            for s in session.dataset
        ],
        "settings": figure_settings(session),
        "thresholds": dict(settings.thresholds),  # run-wide: the recommendation and plot judge with these
        "models": {
            key: {
                "thresholds": dict(session.model_settings(key).thresholds),
                "swept": list(session.swept.get(key, [])),
            }
            for key in session.results.models
        },
    }


def shard_note(session: "QualitySession") -> str:
    """The line under a shard run's table: what it covers and where the verdicts come from."""
    assert session.settings.shard is not None and session.dataset is not None
    index, count = session.settings.shard
    whole = session.dataset.whole or session.dataset
    return (
        f"coreml-quality: shard {index}/{count}: {len(session.dataset.ids)} of {len(whole.ids)} images; "
        "partial figures, no threshold judged: merge the shard reports with --coreml-merge"
    )
