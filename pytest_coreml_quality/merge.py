"""``--coreml-merge=DIR_OR_FILES``: the partial reports of a sharded run merged into the whole run.

Each shard job (:mod:`.shard`) wrote a partial JSON report. The merge reads them, checks
that they belong together (same model and variant bytes, same golden set, same settings
and thresholds, same tool versions, shards 1..N each once, no image twice), then rebuilds
what one job would have measured: per-image values in the golden set's order, and every
set figure recomputed from them with the same code a single job uses
(:func:`.metrics.scores.summarize`, with each image's weight and F/E curves), so the
figures, verdicts and recommendation are exactly a single job's. Per-variant figures
(size, download size, build time) come from shard 1, as do the load times (only shard 1
measures them). No model or golden set is opened.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_coreml_quality.errors import CoreMLQualityError
from pytest_coreml_quality.jsonio import load_json_object
from pytest_coreml_quality.results import BASE_VARIANT, RunResults, VariantResult

if TYPE_CHECKING:
    from pytest_coreml_quality.session import QualitySession

EXPECTED_PARTIAL = "a partial report written by a run with --coreml-shard=I/N --coreml-report-json=FILE"
DRIFT, BACKEND = "drift_", "backend_"


@dataclass
class Partial:
    """One shard's report: its file, its results and its ``shard`` section."""

    path: Path
    run: RunResults
    shard: dict[str, Any]

    @property
    def index(self) -> int:
        return int(self.shard["index"])

    @property
    def label(self) -> str:
        return f"{self.path} (shard {self.shard['index']}/{self.shard['count']})"


@dataclass
class MergedRun:
    """The merged results and what the merge run needs besides them (thresholds, sweeps)."""

    results: RunResults
    partials: list[Partial]  # by shard index
    thresholds: dict[str, float]  # run-wide thresholds of the shard runs (option dest -> bound)
    model_thresholds: dict[str, dict[str, float]]  # model key -> its thresholds in the shard runs
    swept: dict[str, list[str]]
    recommend_metric: str
    images: int
    notes: list[str] = field(default_factory=list)

    def header_lines(self) -> list[str]:
        count = len(self.partials)
        lines = [f"merging {count} shard report(s) of {self.images} images (no model is run; load times from shard 1):"]
        lines += [f"  {p.label}: {len(p.shard['images'])} images" for p in self.partials]
        return lines


# --- reading -------------------------------------------------------------------------------------


def partial_files(paths: Sequence[Path]) -> list[Path]:
    """The report files named: each file as given, a directory's ``*.json`` files sorted by name."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.glob("*.json") if p.is_file())
            if not found:
                raise CoreMLQualityError("the directory holds no .json file", path=path, field="--coreml-merge", expected=EXPECTED_PARTIAL)
            files += found
        else:
            files.append(path)  # a missing file is reported by the reader, naming it
    if len(set(files)) != len(files):
        twice = next(p for p in files if files.count(p) > 1)
        raise CoreMLQualityError("named twice", path=twice, field="--coreml-merge", expected="each shard report once")
    return files


def read_partial(path: Path) -> Partial:
    """One partial report; errors name the file and the field."""
    from pytest_coreml_quality.shard import PARTIAL_FORMAT

    data = load_json_object(path, expected=EXPECTED_PARTIAL)
    shard = data.get("shard")
    if not isinstance(shard, dict):
        raise CoreMLQualityError("not a shard report (no 'shard' section)", path=path, field="shard", expected=EXPECTED_PARTIAL)
    if shard.get("format") != PARTIAL_FORMAT:
        raise CoreMLQualityError(
            f"format {shard.get('format')!r}", path=path, field="shard.format",
            expected=f"format {PARTIAL_FORMAT}: the same pytest-coreml-quality version in the shard and merge jobs",
        )
    for name, kind in (("index", int), ("count", int), ("images", list), ("golden_set", dict), ("settings", dict), ("models", dict)):
        if not isinstance(shard.get(name), kind) or isinstance(shard.get(name), bool):
            raise CoreMLQualityError(f"missing or not a {kind.__name__}", path=path, field=f"shard.{name}", expected=EXPECTED_PARTIAL)
    try:
        run = RunResults.from_dict(data)
    except (TypeError, ValueError, AttributeError) as exc:
        raise CoreMLQualityError(f"not a pytest-coreml-quality report ({exc})", path=path, field="models", expected=EXPECTED_PARTIAL) from None
    return Partial(path=path, run=run, shard=shard)


# --- compatibility ----------------------------------------------------------------------------------


def _difference(a: Any, b: Any, where: str) -> tuple[str, Any, Any] | None:
    """The first place (dotted path) where two JSON values differ, with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{where}.{key}", a.get(key, "(absent)"), b.get(key, "(absent)")
            found = _difference(a[key], b[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for k, (x, y) in enumerate(zip(a, b)):
            found = _difference(x, y, f"{where}[{k}]")
            if found:
                return found
        return None
    same = a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)  # NaN == NaN here
    return None if same else (where, a, b)


def _same(partials: list[Partial], what: str, value: Any) -> None:
    """``value(partial)`` must be equal in every partial; the error names the field and both files."""
    first = partials[0]
    for other in partials[1:]:
        found = _difference(value(first), value(other), what)
        if found:
            where, mine, theirs = found
            raise CoreMLQualityError(
                f"{theirs!r} here but {mine!r} in {first.label}: the shards do not belong to one run",
                path=other.path, field=where, expected="every shard run with the same models, golden set, settings and versions",
            )


def _fingerprint(run: RunResults) -> dict[str, Any]:
    """What must match between shards' results: models, their bytes, variants and their bytes."""
    return {
        name: {
            "content_hash": m.content_hash, "kind": m.kind, "backend": m.backend, "output_kind": m.output_kind,
            "variants": {key: v.content_hash for key, v in m.variants.items()},
        }
        for name, m in run.models.items()
    }


def check_compatible(partials: list[Partial]) -> list[Partial]:
    """Shards 1..N each once, one run's worth: return them by index, else raise naming file and field."""
    _same(partials, "shard.count", lambda p: p.shard["count"])
    count = partials[0].shard["count"]
    by_index: dict[int, Partial] = {}
    for p in partials:
        if not 1 <= p.index <= count:
            raise CoreMLQualityError(f"shard {p.index} of {count}", path=p.path, field="shard.index", expected=f"1 to {count}")
        if p.index in by_index:
            raise CoreMLQualityError(
                f"shard {p.index}/{count} again (also {by_index[p.index].path})", path=p.path, field="shard.index",
                expected="each shard's report once",
            )
        by_index[p.index] = p
    missing = [str(i) for i in range(1, count + 1) if i not in by_index]
    if missing:
        given = ", ".join(f"{i}/{count}" for i in sorted(by_index))
        raise CoreMLQualityError(
            f"shard(s) {', '.join(f'{i}/{count}' for i in missing)} missing (given: {given})",
            field="--coreml-merge", expected=f"the reports of all {count} shards",
        )
    ordered = [by_index[i] for i in range(1, count + 1)]
    _same(ordered, "shard.golden_set", lambda p: p.shard["golden_set"])
    _same(ordered, "shard.settings", lambda p: p.shard["settings"])
    _same(ordered, "shard.models", lambda p: p.shard["models"])
    _same(ordered, "shard.thresholds", lambda p: p.shard.get("thresholds"))
    _same(ordered, "versions", lambda p: p.run.versions)
    _same(ordered, "models", lambda p: _fingerprint(p.run))
    _check_images(ordered)
    return ordered


def _check_images(partials: list[Partial]) -> None:
    """Every image of the golden set in exactly one shard."""
    total = partials[0].shard["golden_set"]["images"]
    held: dict[int, tuple[str, Partial]] = {}
    names: dict[str, Partial] = {}
    for p in partials:
        for image in p.shard["images"]:
            sample_id, position = image["id"], image["position"]
            if sample_id in names:
                raise CoreMLQualityError(
                    f"image '{sample_id}' is in {names[sample_id].label} too", path=p.path, field="shard.images",
                    expected="each image in one shard",
                )
            if not isinstance(position, int) or not 0 <= position < total or position in held:
                raise CoreMLQualityError(
                    f"image '{sample_id}' at position {position!r}", path=p.path, field="shard.images",
                    expected=f"a position from 0 to {total - 1} that no other image has",
                )
            names[sample_id] = p
            held[position] = (sample_id, p)
    if len(held) != total:
        raise CoreMLQualityError(
            f"the shards hold {len(held)} of the golden set's {total} images", path=partials[0].path, field="shard.images",
            expected="every image of the golden set in one shard",
        )


# --- merging ----------------------------------------------------------------------------------------


def merge_partials(paths: Sequence[Path]) -> MergedRun:
    """Read, check and merge the partial reports at ``paths`` (files, or directories of them)."""
    partials = check_compatible([read_partial(p) for p in partial_files(paths)])
    first = partials[0]
    images = sorted(
        ((image["position"], image, p) for p in partials for image in p.shard["images"]), key=lambda item: item[0]
    )
    run = RunResults(versions=dict(first.run.versions))
    from pytest_coreml_quality.dataset import content_digest

    dataset_hash = content_digest((i["id"], i["weight"], i["image_hash"], i["mask_hash"]) for _, i, _ in images)
    for name, model in first.run.models.items():
        merged = replace(model, variants={}, dataset_images=len(images), dataset_hash=dataset_hash)
        for key, variant in model.variants.items():
            merged.variants[key] = _merge_variant(name, key, variant, [(i, p) for _, i, p in images], model.output_kind)
        run.models[name] = merged
    recorded = first.shard["models"]
    return MergedRun(
        results=run,
        partials=partials,
        thresholds=dict(first.shard.get("thresholds", {})),
        model_thresholds={name: dict(recorded.get(name, {}).get("thresholds", {})) for name in run.models},
        swept={name: list(recorded.get(name, {}).get("swept", [])) for name in run.models},
        recommend_metric=str(first.shard["settings"].get("recommend_metric", "iou")),
        images=len(images),
    )


def _merge_variant(
    model: str, key: str, first: VariantResult, images: list[tuple[dict[str, Any], Partial]], output_kind: str = "mask"
) -> VariantResult:
    """One variant over the whole set: shard 1's per-variant figures, everyone's per-image values."""
    per_image: dict[str, dict[str, float]] = {}
    curves: dict[str, tuple[Path, dict[str, str]]] = {}  # image -> (its report, its packed curves)
    measured = {p.index: bool(p.run.models[model].variants[key].per_image) for _, p in images}
    if len(set(measured.values())) > 1:
        missing = next(p for _, p in images if not measured[p.index])
        raise CoreMLQualityError(
            f"{model} [{key}] has per-image values in other shards but none here (was its quality item deselected?)",
            path=missing.path, field=f"models.{model}.variants.{key}.per_image", expected="the same items run in every shard",
        )
    for image, p in images:
        theirs = p.run.models[model].variants[key]
        sample_id = image["id"]
        if sample_id in theirs.per_image:
            per_image[sample_id] = theirs.per_image[sample_id]
            curves[sample_id] = (p.path, theirs.curves.get(sample_id, {}))
        elif theirs.per_image:
            raise CoreMLQualityError(
                f"{model} [{key}]: no per-image values for image '{sample_id}' of this shard", path=p.path,
                field=f"models.{model}.variants.{key}.per_image", expected="every image of the shard",
            )
    # Only shard 1 measures load times (see shard.LOAD_SHARD); ``first`` is shard 1's result.
    result = replace(first, per_image=per_image, curves={}, checks=[], metrics={}, drift={}, backend_drift={}, load=replace(first.load))
    if per_image:
        weights = [float(image["weight"]) for image, _ in images if image["id"] in per_image]
        ids = list(per_image)
        if output_kind == "mask":
            _recompute(result, key, ids, weights, curves, model)
        else:
            _recompute_tensors(result, key, ids, weights)
    return result


def _recompute(
    result: VariantResult, key: str, ids: list[str], weights: list[float], curves: Mapping[str, tuple[Path, Mapping[str, str]]], model: str
) -> None:
    """Set figures from per-image values, as :meth:`.QualitySession.quality` computes them in one job."""
    from pytest_coreml_quality.lanes import split_key
    from pytest_coreml_quality.session import BACKEND_DRIFT

    truth = [{k: v for k, v in result.per_image[i].items() if not k.startswith((DRIFT, BACKEND))} for i in ids]
    if any(truth):
        result.metrics = _summary(truth, [_curves(curves, i, "", model, key) for i in ids], weights)
    if split_key(key)[0] != BASE_VARIANT:
        drift = [_strip(result.per_image[i], DRIFT) for i in ids]
        if any(drift):
            result.drift = _summary(drift, [_curves(curves, i, DRIFT, model, key) for i in ids], weights)
    between = [_strip(result.per_image[i], BACKEND) for i in ids]
    if any(between):
        flat = np.zeros(256)  # the figures kept between backends use no curve
        summary = _summary(between, [(flat, flat)] * len(ids), weights)
        result.backend_drift = {k: v for k, v in summary.items() if k in BACKEND_DRIFT}


def _recompute_tensors(result: VariantResult, key: str, ids: list[str], weights: list[float]) -> None:
    """Set figures of a model whose outputs are not masks, as :meth:`.QualitySession._tensor_quality` computes them.

    Every tensor and classifier figure is a weighted mean, a min or a max of per-image
    values (:func:`.tensors.aggregate`), so the per-image values in the golden set's order
    give them exactly; with several outputs, the per-output values and their worst.
    """
    from pytest_coreml_quality.lanes import split_key
    from pytest_coreml_quality.tensors import aggregate, drift_summary, output_names

    w = np.asarray(weights, dtype=np.float64)
    truth = [{k: v for k, v in result.per_image[i].items() if not k.startswith((DRIFT, BACKEND))} for i in ids]
    if any(truth):  # a classifier's top-1/top-5 hits against labels.csv
        result.metrics = aggregate(truth, w)
    if split_key(key)[0] != BASE_VARIANT:
        drift = [_strip(result.per_image[i], DRIFT) for i in ids]
        if any(drift):
            result.drift = drift_summary(drift, w, output_names(drift[0]))


def _strip(values: Mapping[str, float], prefix: str) -> dict[str, float]:
    return {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)}


def _curves(curves: Mapping[str, tuple[Path, Mapping[str, str]]], sample_id: str, prefix: str, model: str, key: str) -> tuple[Any, Any]:
    """The image's F and E curves (``prefix`` '' against the truth, 'drift_' against the base)."""
    from pytest_coreml_quality.shard import unpack_curve

    path, found = curves[sample_id]
    where = f"models.{model}.variants.{key}.curves.{sample_id}"
    unpacked = []
    for name in (prefix + "f", prefix + "e"):
        try:
            unpacked.append(unpack_curve(found[name]))
        except (KeyError, ValueError) as exc:
            why = f"no '{name}' curve" if isinstance(exc, KeyError) else f"'{name}': {exc}"
            raise CoreMLQualityError(why, path=path, field=where, expected=EXPECTED_PARTIAL) from None
    return unpacked[0], unpacked[1]


def _summary(values: list[dict[str, float]], curves: list[tuple[Any, Any]], weights: list[float]) -> dict[str, float]:
    from pytest_coreml_quality.metrics.scores import ImageScores, summarize

    scores = [ImageScores(values=v, f_curve=f, e_curve=e) for v, (f, e) in zip(values, curves)]
    return summarize(scores, weights)


# --- the merge run -----------------------------------------------------------------------------------


def open_merge(session: "QualitySession") -> None:
    """Fill ``session`` from the shard reports instead of opening models (``--coreml-merge``)."""
    from pytest_coreml_quality.lanes import plan_lanes, split_key
    from pytest_coreml_quality.settings import ModelSettings

    settings = session.settings
    merged = merge_partials(settings.merge)
    # The shard runs' thresholds decide (they must agree); one set only on the merge run is added.
    session.settings = replace(
        settings, thresholds={**settings.thresholds, **merged.thresholds}, recommend_metric=merged.recommend_metric
    )
    session.merged = merged
    session.results = merged.results
    # The shards' lanes (compute units, two backends): the items and rows are one job's.
    ran = merged.partials[0].shard["settings"]
    session.lanes = plan_lanes(list(ran["backends"]), tuple(ran["compute_units"]), str(ran["precision"]))
    for name, model in merged.results.models.items():
        session.recipes[name] = list(dict.fromkeys(split_key(key)[0] for key in model.variants))
        if merged.swept.get(name):
            session.swept[name] = merged.swept[name]
        session.per_model[name] = ModelSettings(
            path=Path(model.path), thresholds={**settings.thresholds, **merged.model_thresholds[name]}
        )
