"""The figure catalogue: every number the plugin measures, declared once.

A *figure* is anything a run measures for a variant and a user may read, chart or bound:
a metric against the ground truth (``iou``), a drift figure against the base model
(``drift_mae``), a size (``size_mb``), a load time (``cold_load_s``). Each is one
:class:`Figure` entry below, and everything else derives from the entry:

* the threshold option and ini key (``--coreml-min-iou`` / ``coreml_min_iou``) and the
  marker keyword (``@pytest.mark.coreml_quality(min_iou=...)``), with their help text;
* which generated item judges it, its comparison (``>=`` when higher is better), the
  values a bound may take, and whether the base variant is exempt;
* how per-image values aggregate over the golden set (:mod:`.metrics.scores`);
* the terminal column and legend, and the one name used in the JSON summary, JUnit
  properties (``coreml.<key>``), baseline comparisons and failure messages.

Adding a figure is one :func:`register` call (a new per-image metric may bring its own
``compute`` function). This module sits on the ground floor: it imports nothing from
the pytest layer or the reports.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_coreml_quality.results import VariantResult

#: Families, in report order, and the generated item that judges each one.
FAMILIES: dict[str, str] = {"size": "size", "quality": "quality", "drift": "quality", "load": "load"}

#: How per-image values become a whole-set value (see :mod:`.metrics.scores`).
AGGREGATIONS = ("mean", "max", "min", "f_curve_max", "f_curve_mean", "e_curve_max", "e_curve_mean", "psnr_of_mse", "single")

DRIFT_PREFIX = "drift_"


@dataclass(frozen=True)
class Column:
    """How a figure shows in the terminal table."""

    title: str
    width: int
    decimals: int = 4
    order: int = 100  # left to right
    drop_rank: int | None = None  # narrow terminals drop low ranks first; None: never dropped
    legend: str = ""  # the phrase the legend says about this column
    style: str = "fixed"  # "fixed": ``decimals`` places; "megabytes": three significant digits at least
    kinds: tuple[str, ...] | None = None  # output kinds whose table shows it (see OUTPUT_KINDS); None: every kind


#: What a model's output is read as (``--coreml-output-kind``): a mask scored against the ground
#: truth and the base's mask, or a raw tensor compared with the base's (heat maps add keypoints).
OUTPUT_KINDS = ("mask", "tensor", "heatmap", "classifier")
MASK_ONLY = ("mask",)
TENSOR_KINDS = ("tensor", "heatmap")


@dataclass(frozen=True)
class Figure:
    """One measured figure and everything the plugin needs to know about it."""

    key: str  # the one name: JSON summary, JUnit coreml.<key>, baselines, checks, marker metric={...}
    family: str  # "quality" | "drift" | "size" | "load"
    higher_is_better: bool
    description: str  # what it is, for help texts ("IoU against the ground truth")
    bounded: bool = True  # values lie in [0, 1]
    span: float | None = 1.0  # the value range an absolute baseline tolerance is scaled by; None: relative
    aggregate: str = "mean"
    base_exempt: bool = False  # meaningless for the base model (drift, ratio)
    keyword: str | None = None  # marker keyword (min_iou); None: bound it through metric={...} only
    option: str | None = None  # threshold option dest; defaults to "coreml_" + keyword
    column: Column | None = None
    baseline: bool = True  # compared with a saved baseline
    read: Callable[["VariantResult"], float | None] | None = field(default=None, compare=False, repr=False)
    compute: Callable[[Any, Any], float] | None = field(default=None, compare=False, repr=False)  # (pred, Reference) -> value

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"figure {self.key!r}: family {self.family!r}, expected one of {', '.join(FAMILIES)}")
        if self.aggregate not in AGGREGATIONS:
            raise ValueError(f"figure {self.key!r}: aggregate {self.aggregate!r}, expected one of {', '.join(AGGREGATIONS)}")
        if self.keyword is not None and not self.keyword.startswith(("min_", "max_")):
            raise ValueError(f"figure {self.key!r}: keyword {self.keyword!r} must start with min_ or max_")
        if self.keyword is not None and self.keyword.startswith("min_") != self.higher_is_better:
            raise ValueError(f"figure {self.key!r}: keyword {self.keyword!r} contradicts its direction")

    # --- derived ------------------------------------------------------------------------
    @property
    def check(self) -> str:
        """The generated item that judges this figure: 'quality', 'size' or 'load'."""
        return FAMILIES[self.family]

    @property
    def op(self) -> str:
        """The comparison a bound makes: '>=' for higher-is-better figures, else '<='."""
        return ">=" if self.higher_is_better else "<="

    @property
    def option_dest(self) -> str | None:
        """The threshold setting (``coreml_min_iou``): flag ``--coreml-min-iou``, ini ``coreml_min_iou``."""
        if self.option is not None:
            return self.option
        return None if self.keyword is None else "coreml_" + self.keyword

    @property
    def value_name(self) -> str:
        """The name of the per-image / aggregate value this figure is read from (without ``drift_``)."""
        return self.key.removeprefix(DRIFT_PREFIX) if self.family == "drift" else self.key

    @property
    def bound_range(self) -> tuple[float, float]:
        """The values a bound may take: [0, 1] for bounded figures, else [0, inf)."""
        return (0.0, 1.0) if self.bounded else (0.0, math.inf)

    def value(self, result: "VariantResult") -> float | None:
        """This figure's value for one variant, None when it was not measured."""
        if self.read is not None:
            raw = self.read(result)
        elif self.family == "drift":
            raw = result.drift.get(self.value_name)
        else:
            raw = result.metrics.get(self.value_name)
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            return None
        return float(raw)

    def threshold_help(self) -> str:
        word = "below" if self.higher_is_better else "above"
        return f"fail a variant whose {self.description} is {word} this."

    def bound_text(self) -> str:
        low, high = self.bound_range
        return f"a number between {low:g} and {high:g}" if math.isfinite(high) else f"a number >= {low:g}"


_FIGURES: dict[str, Figure] = {}


def register(figure: Figure) -> Figure:
    """Add ``figure`` to the catalogue; its key, keyword and option must be new."""
    if figure.key in _FIGURES:
        raise ValueError(f"figure {figure.key!r} is already in the catalogue")
    for other in _FIGURES.values():
        if figure.keyword is not None and (other.keyword, other.check) == (figure.keyword, figure.check):
            raise ValueError(f"figure {figure.key!r}: keyword {figure.keyword!r} is taken by {other.key!r}")
        if figure.option_dest is not None and other.option_dest == figure.option_dest:
            raise ValueError(f"figure {figure.key!r}: option {figure.option_dest!r} is taken by {other.key!r}")
    _FIGURES[figure.key] = figure
    return figure


def unregister(key: str) -> None:
    """Remove a figure (for tests that add one of their own)."""
    _FIGURES.pop(key, None)


def figures(family: str | None = None, *, check: str | None = None) -> list[Figure]:
    """Every figure in declaration order, optionally only one family or one judging item."""
    return [f for f in _FIGURES.values() if (family is None or f.family == family) and (check is None or f.check == check)]


def get(key: str) -> Figure | None:
    """The figure called ``key`` (``drift.<name>`` from older baselines is read as ``drift_<name>``)."""
    return _FIGURES.get(canonical_key(key))


def canonical_key(key: str) -> str:
    """Today's name of a figure, accepting the names of earlier versions (see README: renames)."""
    key = RENAMED.get(key, key)
    if key.startswith("drift."):
        key = DRIFT_PREFIX + key[len("drift."):]
    return key


def per_image_value(name: str) -> Figure | None:
    """The quality figure whose per-image value is called ``name`` (drift ones reuse it)."""
    figure = _FIGURES.get(name)
    if figure is not None and figure.family == "quality":
        return figure
    drift = _FIGURES.get(DRIFT_PREFIX + name)
    return drift if drift is not None and drift.family == "drift" else None


def higher_is_better(key: str) -> bool | None:
    """Direction of a figure (True: higher is better), None for a name not in the catalogue."""
    figure = get(key) or per_image_value(key)
    return None if figure is None else figure.higher_is_better


def threshold_figures() -> list[Figure]:
    """Figures with a threshold option / marker keyword."""
    return [f for f in _FIGURES.values() if f.option_dest is not None]


def by_option(dest: str) -> Figure:
    return next(f for f in _FIGURES.values() if f.option_dest == dest)


def keywords(check: str) -> dict[str, Figure]:
    """Marker keyword -> figure, for the marker of one generated item kind."""
    return {f.keyword: f for f in _FIGURES.values() if f.keyword is not None and f.check == check}


def columns() -> list[Figure]:
    """Figures with a terminal column, left to right."""
    return sorted((f for f in _FIGURES.values() if f.column is not None), key=lambda f: f.column.order)  # type: ignore[union-attr]


def computed_metrics() -> list[Figure]:
    """Quality figures that bring their own per-image ``compute`` function."""
    return [f for f in _FIGURES.values() if f.compute is not None]


def values(result: "VariantResult", family: str | None = None, *, check: str | None = None) -> Iterator[tuple[Figure, float]]:
    """(figure, value) for every measured figure of ``result``."""
    for figure in figures(family, check=check):
        value = figure.value(result)
        if value is not None:
            yield figure, value


#: Names of earlier versions -> today's key (baselines and marker ``metric={}`` still accept them).
RENAMED: dict[str, str] = {
    "size_bytes": "size_mb",
    "cold_s": "cold_load_s",
    "warm_s": "warm_load_s",
    "speedup": "load_speedup",
}


# --- the catalogue ---------------------------------------------------------------------------


def _quality(key: str, higher: bool, description: str, **kw: Any) -> None:
    """A metric against the ground truth, and its twin against the base model's predictions."""
    drift_column = kw.pop("drift_column", None)
    drift_keyword = kw.pop("drift_keyword", None)
    register(Figure(key, "quality", higher, f"{description} against the ground truth", **kw))
    kw.pop("column", None)
    kw.pop("keyword", None)
    kw.pop("option", None)
    register(
        Figure(
            DRIFT_PREFIX + key, "drift", higher, f"{description} against the base model's predictions",
            base_exempt=True, column=drift_column, keyword=drift_keyword, **kw,
        )
    )


def _drift(key: str, higher: bool, description: str, **kw: Any) -> None:
    register(Figure(DRIFT_PREFIX + key, "drift", higher, description, base_exempt=True, **kw))


def _attr(name: str) -> Callable[["VariantResult"], float | None]:
    return lambda r: getattr(r, name)


def _load(name: str) -> Callable[["VariantResult"], float | None]:
    return lambda r: getattr(r.load, name)


def _between_backends(name: str) -> Callable[["VariantResult"], float | None]:
    return lambda r: r.backend_drift.get(name)


def _speedup(r: "VariantResult") -> float | None:
    return r.load.speedup


register(Figure(
    "size_mb", "size", False, "size on disk in MB (10^6 bytes)", bounded=False, span=None,
    keyword="max_mb", option="coreml_max_size_mb", read=_attr("size_mb"), aggregate="single",
    column=Column("size MB", 8, 2, order=10, legend="size in MB (10^6 bytes)", style="megabytes"),
))
register(Figure(
    "ratio", "size", False, "size as a fraction of the base model's", bounded=False, span=None, base_exempt=True,
    keyword="max_ratio", read=_attr("ratio"), aggregate="single", baseline=False,
    column=Column("ratio", 5, 3, order=20, drop_rank=3, legend="ratio = size / base size"),
))
register(Figure(
    "download_mb", "size", False, "download size in MB (the variant zipped, deflate)", bounded=False, span=None,
    keyword="max_download_mb", read=_attr("download_mb"), aggregate="single",
    column=Column("dl MB", 6, 2, order=15, drop_rank=0, legend="dl = zipped download size in MB", style="megabytes"),
))
register(Figure(
    "build_s", "size", False, "seconds the variant took to build", bounded=False, span=None,
    read=_attr("build_s"), aggregate="single", baseline=False, base_exempt=True,
))
register(Figure(
    "bits_per_weight", "size", False, "mean stored bits per weight", bounded=False, span=None,
    read=_attr("bits_per_weight"), aggregate="single", baseline=False,
))

_quality("mae", False, "mean absolute error (0..1)", keyword="max_mae",
         column=Column("MAE", 6, 4, order=30, legend="MAE", kinds=MASK_ONLY),
         drift_keyword="max_drift", drift_column=Column("drift", 6, 4, order=80, drop_rank=5,
                                                        legend="drift = MAE against the base model's predictions",
                                                        kinds=MASK_ONLY))
_quality("loss255", False, "mean absolute error in 0..255 levels", bounded=False, span=255.0)
_quality("iou", True, "IoU of the masks binarised at 0.5", keyword="min_iou",
         column=Column("IoU", 6, 4, order=40, legend="IoU", kinds=MASK_ONLY))
_quality("dice", True, "Dice coefficient", keyword="min_dice")
_quality("max_f", True, "max F-measure", keyword="min_f", aggregate="f_curve_max",
         column=Column("F", 6, 4, order=50, drop_rank=2, legend="F (max F-measure)", kinds=MASK_ONLY))
_quality("mean_f", True, "mean F-measure", aggregate="f_curve_mean")
_quality("adp_f", True, "adaptive F-measure")
_quality("wf", True, "weighted F-measure")
_quality("s", True, "S-measure", keyword="min_s", column=Column("S", 6, 4, order=60, drop_rank=1, legend="S (S-measure)", kinds=MASK_ONLY))
_quality("max_e", True, "max E-measure", aggregate="e_curve_max")
_quality("mean_e", True, "mean E-measure", aggregate="e_curve_mean",
         column=Column("E", 6, 4, order=70, drop_rank=0, legend="E (mean E-measure)", kinds=MASK_ONLY))
_quality("adp_e", True, "adaptive E-measure", keyword="min_e")
_quality("hce", False, "human correction efforts (HCE)", bounded=False, span=None)

_drift("max_abs_diff", False, "largest absolute difference from the base model's masks", aggregate="max")
_drift("mse", False, "mean squared difference from the base model's masks")
_drift("psnr", True, "PSNR against the base model's masks (dB)", bounded=False, span=None, aggregate="psnr_of_mse")
_drift("flip_share", False, "share of pixels that flip at 0.5 compared with the base model", keyword="max_flip")

# Side by side (--coreml-backend=coreml,onnx): how far the second backend's masks are from
# the first's, per variant and compute unit. Not base-exempt: the base model drifts too.
register(Figure(
    "backend_mae", "drift", False, "MAE between the two backends' masks (--coreml-backend=A,B)",
    keyword="max_backend_mae", read=_between_backends("mae"),
))
register(Figure(
    "backend_max_abs_diff", "drift", False, "largest absolute difference between the two backends' masks",
    aggregate="max", read=_between_backends("max_abs_diff"),
))
register(Figure(
    "backend_flip_share", "drift", False, "share of pixels that flip at 0.5 between the two backends",
    keyword="max_backend_flip", read=_between_backends("flip_share"),
))

# Outputs that are not masks (--coreml-output-kind=tensor|heatmap): the raw arrays against the
# base model's, per image (metrics.tensor_drift), then over the golden set.
_drift("tensor_mae", False, "mean absolute difference from the base model's output", bounded=False, span=None,
       keyword="max_tensor_mae",
       column=Column("t-MAE", 8, 4, order=82, legend="t-MAE = mean absolute difference from the base's output",
                     kinds=TENSOR_KINDS))
_drift("tensor_max_abs", False, "largest absolute difference from the base model's output", bounded=False, span=None,
       aggregate="max", keyword="max_tensor_abs",
       column=Column("max|d|", 8, 4, order=83, drop_rank=6, legend="max|d| = largest difference", kinds=TENSOR_KINDS))
_drift("tensor_psnr", True, "PSNR on the base output's range (dB, worst image)", bounded=False, span=None,
       aggregate="min", keyword="min_tensor_psnr",
       column=Column("PSNR", 6, 1, order=84, legend="PSNR in dB on the base's range, worst image", kinds=TENSOR_KINDS))
_drift("cosine", True, "cosine similarity with the base model's output (mean over images)", keyword="min_cosine",
       column=Column("cos", 7, 4, order=85, legend="cos = cosine similarity with the base's output", kinds=TENSOR_KINDS))
_drift("ssim", True, "SSIM against the base model's image output (mean over images)", keyword="min_ssim",
       column=Column("SSIM", 6, 4, order=86, drop_rank=5, legend="SSIM against the base's image (image outputs)",
                     kinds=TENSOR_KINDS))
_drift("keypoints_moved", False, "share of keypoints whose heat-map peak moved beyond the tolerance",
       keyword="max_keypoints_moved",
       column=Column("kp-moved", 8, 4, order=87,
                     legend="kp-moved = share of keypoints moved more than --coreml-keypoint-tolerance pixels",
                     kinds=("heatmap",)))

# Classifiers (a class-probability dictionary output): against the base model's probabilities,
# per image (metrics.classifier_drift), then the mean over the golden set.
_CLASSIFIER = ("classifier",)
_drift("top1_agreement", True, "share of images whose top-1 class is the base model's", keyword="min_top1_agreement",
       column=Column("top1=", 6, 4, order=87, legend="top1= = top-1 agreement with the base", kinds=_CLASSIFIER))
_drift("top5_overlap", True, "mean overlap of the top-5 classes with the base model's", keyword="min_top5_overlap",
       column=Column("top5∩", 6, 4, order=88, drop_rank=7, legend="top5∩ = top-5 overlap", kinds=_CLASSIFIER))
_drift("prob_mae", False, "mean absolute difference of the class probabilities from the base model's",
       keyword="max_prob_mae")
_drift("kl", False, "KL divergence of the base model's class probabilities from the variant's (nats)",
       bounded=False, span=None, keyword="max_kl",
       column=Column("KL", 7, 4, order=89, legend="KL = KL divergence from the base (nats)", kinds=_CLASSIFIER))
# With labels.csv in the golden set: accuracy against the true classes.
register(Figure("top1", "quality", True, "top-1 accuracy against labels.csv", keyword="min_top1",
                column=Column("top1", 6, 4, order=31, legend="top1/top5 = top-1/top-5 accuracy (labels.csv)",
                              kinds=_CLASSIFIER)))
register(Figure("top5", "quality", True, "top-5 accuracy against labels.csv", keyword="min_top5",
                column=Column("top5", 6, 4, order=32, drop_rank=8, kinds=_CLASSIFIER)))
#: Quality figures judged against labels.csv rather than ground-truth masks.
LABEL_FIGURES = ("top1", "top5")

register(Figure(
    "cold_load_s", "load", False, "median cold load time (seconds)", bounded=False, span=None,
    keyword="max_cold_s", option="coreml_max_cold_load_s", read=_load("cold_s"), aggregate="single",
    column=Column("cold s", 7, 3, order=90, legend="cold load with the compile/translation cache evicted"),
))
register(Figure(
    "warm_load_s", "load", False, "median warm load time (seconds)", bounded=False, span=None,
    keyword="max_warm_s", option="coreml_max_warm_load_s", read=_load("warm_s"), aggregate="single",
    column=Column("warm s", 7, 3, order=100, drop_rank=4, legend="warm with it primed, in seconds"),
))
register(Figure(
    "load_speedup", "load", True, "cold/warm load-time ratio", bounded=False, span=None,
    keyword="min_speedup", option="coreml_min_load_speedup", read=_speedup, aggregate="single", baseline=False,
))
register(Figure(
    "predict_ms", "load", False, "median prediction time over the golden set after a warm load (milliseconds)",
    bounded=False, span=None, keyword="max_predict_ms", read=_load("predict_ms"), aggregate="single",
))  # no terminal column: at 100 characters it would cost the variant names their width
