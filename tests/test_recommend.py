"""The recommendation on hand-made result sets: smallest passing variant, ties, no thresholds."""

from __future__ import annotations

from pytest_coreml_quality import catalogue
from pytest_coreml_quality.recommend import pareto_front, recommend
from pytest_coreml_quality.results import LoadTimes, ModelResults, VariantResult
from pytest_coreml_quality.thresholds import Bound

BASE_BYTES = 176_000_000


def variant(recipe: str, mb: float, iou: float | None, drift: float | None = None, **kw: object) -> VariantResult:
    size = int(mb * 1e6)
    return VariantResult(
        recipe=recipe, size_bytes=size, ratio=size / BASE_BYTES,
        metrics={} if iou is None else {"iou": iou, "mae": 1 - iou},
        drift={} if drift is None else {"mae": drift}, **kw,  # type: ignore[arg-type]
    )


def model(*variants: VariantResult) -> ModelResults:
    return ModelResults(model="ISNet.mlmodel", variants={v.recipe: v for v in variants})


def bound(key: str, value: float) -> Bound:
    return Bound.on(catalogue.get(key), value)  # type: ignore[arg-type]


ISNET = model(
    variant("base", 176, 0.790),
    variant("q8", 88, 0.790, 0.001),
    variant("q6", 66.1, 0.789, 0.004),
    variant("q4", 44, 0.690, 0.05),
    variant("pal4", 44.5, 0.700, 0.04),
)


def test_smallest_variant_passing_every_threshold_is_recommended_with_its_line() -> None:
    rec = recommend(ISNET, [bound("iou", 0.78)])
    assert rec.recipe == "q6"
    assert rec.passing == ["q6", "q8", "base"]
    assert set(rec.failing) == {"q4", "pal4"} and "iou 0.69 (bound >= 0.78)" in rec.failing["q4"]
    assert rec.line == "recommended: q6 - 66.1 MB (0.376x), IoU 0.789 (base 0.790), drift 0.004"
    assert not rec.failed


def test_any_mix_of_families_is_judged() -> None:
    # drift and a size bound: q6 breaks drift, so q8 is the smallest that passes both
    rec = recommend(ISNET, [bound("drift_mae", 0.002), bound("size_mb", 100)])
    assert rec.recipe == "q8"
    assert "base" in rec.failing and any(f.startswith("size_mb") for f in rec.failing["base"])
    # download size and load time
    small_download = variant("pal4", 44.5, 0.7, 0.04, download_bytes=20_000_000, load=LoadTimes(cold_s=0.5, warm_s=0.1))
    slow = variant("q4", 44, 0.69, 0.05, download_bytes=30_000_000, load=LoadTimes(cold_s=9.0, warm_s=0.1))
    rec = recommend(model(slow, small_download), [bound("download_mb", 25), bound("cold_load_s", 1.0)])
    assert rec.recipe == "pal4"
    assert rec.failing["q4"] == ["download_mb 30 (bound <= 25)", "cold_load_s 9 (bound <= 1)"]


def test_equal_sizes_break_on_quality_then_name() -> None:
    tied = model(variant("base", 10, 0.9), variant("a", 5, 0.80, 0.1), variant("b", 5, 0.85, 0.1), variant("c", 5, 0.85, 0.1))
    assert recommend(tied, [bound("iou", 0.5)]).passing[:3] == ["b", "c", "a"]
    # a lower-is-better metric breaks the tie the other way round
    assert recommend(tied, [bound("iou", 0.5)], metric="mae").recipe == "b"


def test_nothing_passes() -> None:
    rec = recommend(ISNET, [bound("iou", 0.95)])
    assert rec.recipe is None and rec.failed and rec.passing == []
    assert set(rec.failing) == set(ISNET.variants)
    assert rec.line == "recommended: none - no variant passes iou >= 0.95"


def test_no_thresholds_gives_the_pareto_front() -> None:
    rec = recommend(ISNET, [])
    assert rec.recipe is None and not rec.failed
    # pal4 is larger than q4 and better; q8 ties base on IoU at half the size; base is beaten by q8
    assert rec.pareto == ["q4", "pal4", "q6", "q8"]
    assert rec.line.startswith("no thresholds set: the size/IoU Pareto front is q4 (44 MB, IoU 0.690), pal4")
    assert "set thresholds" in rec.line


def test_missing_figures_never_qualify_and_base_exemptions_hold() -> None:
    unmeasured = model(variant("base", 10, 0.9), variant("q8", 5, None), variant("q4", 3, 0.85, None))
    rec = recommend(unmeasured, [bound("iou", 0.5), bound("drift_mae", 0.1)])
    # q8 has no IoU, q4 no drift: neither is recommended; base has no drift and needs none
    assert rec.unmeasured == {"q8": ["iou", "drift_mae"], "q4": ["drift_mae"]}
    assert rec.recipe == "base"
    assert rec.line == "recommended: base - 10 MB, IoU 0.900"
    # variants without a size (never built) are not candidates at all
    unbuilt = model(VariantResult(recipe="q2", metrics={"iou": 0.99}), variant("base", 10, 0.9))
    assert recommend(unbuilt, [bound("iou", 0.5)]).passing == ["base"]
    assert [v.recipe for v in pareto_front(unbuilt.variants.values())] == ["base"]


def test_recommendation_serialises() -> None:
    data = recommend(ISNET, [bound("iou", 0.78)]).to_dict()
    assert data["recipe"] == "q6" and data["thresholds"] == ["iou >= 0.78"] and data["line"].startswith("recommended: q6")
