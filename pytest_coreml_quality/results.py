"""The figures a run produces, in one plain structure every report reads.

The evaluation, size and load steps fill a :class:`RunResults`; the terminal table,
JSON and HTML reports, baselines and JUnit properties only read it. Everything is
JSON-serialisable through :meth:`RunResults.to_dict` / :meth:`RunResults.from_dict`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

SCHEMA_VERSION = 1

#: The recipe name of the model as given: every variant is compared with it.
BASE_VARIANT = "base"


@dataclass
class CheckOutcome:
    """One threshold check: ``metric`` measured ``value`` against ``bound`` (``op`` is '<=' or '>=')."""

    check: str  # "quality" | "size" | "load" | "baseline"
    metric: str
    value: float
    bound: float
    op: str
    passed: bool
    worst: list[tuple[str, float]] = field(default_factory=list)  # (image name, per-image value)

    def describe(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return f"{self.metric} = {self.value:.6g} (bound {self.op} {self.bound:.6g}) {verdict}"


@dataclass
class LoadTimes:
    """Cold (compiled cache evicted) and warm (cache primed) load times, in seconds."""

    cold_s: float | None = None
    warm_s: float | None = None
    timer: str = "pytest-benchmark"  # or "perf_counter" when pytest-benchmark is disabled
    predict_ms: float | None = None  # median prediction time over the golden set, after a warm load

    @property
    def speedup(self) -> float | None:
        if self.cold_s is None or self.warm_s is None or self.warm_s <= 0:
            return None
        return self.cold_s / self.warm_s


@dataclass
class VariantResult:
    """Everything measured for one variant (``recipe`` 'base' is the model as given)."""

    recipe: str
    path: str = ""
    kind: str = ""
    size_bytes: int | None = None
    ratio: float | None = None  # size / base size
    download_bytes: int | None = None  # the variant zipped (deflate), as an app would download it
    build_s: float | None = None  # seconds the variant took to build (in the run that built it)
    params: int | None = None
    bits_per_weight: float | None = None
    content_hash: str = ""
    # True when the recipe compressed no weight (e.g. q8 of a model already 8-bit): see note.
    unchanged: bool | None = None
    note: str = ""  # what the build found, e.g. 'q8: no change, weights already 8-bit (LUT)'
    metrics: dict[str, float] = field(default_factory=dict)  # aggregate vs ground truth
    drift: dict[str, float] = field(default_factory=dict)  # aggregate vs base predictions
    backend_drift: dict[str, float] = field(default_factory=dict)  # vs the second backend's predictions (side by side)
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)  # image name -> metric -> value
    # Shard runs only (--coreml-shard): image name -> the F/E curves of its scores ("f", "e", "drift_f",
    # "drift_e", packed by shard.pack_curve), which set figures such as max F need; --coreml-merge reads
    # them and drops them.
    curves: dict[str, dict[str, str]] = field(default_factory=dict)
    load: LoadTimes = field(default_factory=LoadTimes)
    checks: list[CheckOutcome] = field(default_factory=list)

    @property
    def size_mb(self) -> float | None:
        return None if self.size_bytes is None else self.size_bytes / 1e6

    @property
    def download_mb(self) -> float | None:
        return None if self.download_bytes is None else self.download_bytes / 1e6

    @property
    def passed(self) -> bool | None:
        """True/False once a threshold was checked; None when no threshold applies."""
        if not self.checks:
            return None
        return all(c.passed for c in self.checks)


@dataclass
class ModelResults:
    """All variants of one model."""

    model: str  # file name, e.g. ISNet.mlmodel
    path: str = ""
    content_hash: str = ""
    kind: str = ""
    backend: str = ""
    dataset: str | None = None
    dataset_images: int | None = None  # how many images the golden set has
    dataset_hash: str = ""  # content hash of the golden set (ids, weights, pixels, masks)
    output_kind: str = "mask"  # how its output was read: catalogue.OUTPUT_KINDS
    variants: dict[str, VariantResult] = field(default_factory=dict)  # recipe -> result, 'base' first

    def variant(self, recipe: str) -> VariantResult:
        if recipe not in self.variants:
            self.variants[recipe] = VariantResult(recipe=recipe)
        return self.variants[recipe]


@dataclass
class RunResults:
    """A whole run: one entry per model, plus the tool versions that produced it."""

    models: dict[str, ModelResults] = field(default_factory=dict)  # model file name -> results
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        models = {k: asdict(v) for k, v in self.models.items()}
        for model in models.values():
            for variant in model["variants"].values():
                if not variant["curves"]:  # only shard reports carry them
                    del variant["curves"]
        return {"schema": SCHEMA_VERSION, "versions": dict(self.versions), "models": models}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunResults":
        run = cls(versions=dict(data.get("versions", {})))
        for name, m in data.get("models", {}).items():
            variants = {}
            for recipe, v in m.get("variants", {}).items():
                v = dict(v)
                v["load"] = LoadTimes(**v.get("load", {}))
                v["checks"] = [CheckOutcome(**{**c, "worst": [tuple(w) for w in c.get("worst", [])]}) for c in v.get("checks", [])]
                variants[recipe] = VariantResult(**v)
            run.models[name] = ModelResults(**{**m, "variants": variants})
        return run


def merge_results(into: RunResults, other: RunResults) -> None:
    """Copy every figure ``other`` measured into ``into`` (xdist workers measure disjoint items).

    Generic over the dataclass fields, so a figure stored in a new field is merged
    without anyone remembering to list it: a field that is set in ``other`` (not None,
    not empty) wins; nested dataclasses merge field by field; check outcomes replace
    those of the same check, metric and comparison.
    """
    for name, model in other.models.items():
        target = into.models.setdefault(name, model)
        if target is model:
            continue
        _merge_fields(target, model, skip=("variants",))
        for recipe, variant in model.variants.items():
            _merge_fields(target.variant(recipe), variant, skip=())


def _is_set(value: Any) -> bool:
    return value is not None and not (isinstance(value, (str, dict, list, tuple)) and not value)


def _merge_fields(mine: Any, theirs: Any, skip: tuple[str, ...]) -> None:
    for f in fields(theirs):
        if f.name in skip:
            continue
        value = getattr(theirs, f.name)
        if f.name == "checks":
            judged = {(c.check, c.metric, c.op) for c in value}
            mine.checks = [c for c in mine.checks if (c.check, c.metric, c.op) not in judged] + list(value)
        elif isinstance(value, LoadTimes):
            _merge_load(mine.load, value)
        elif is_dataclass(value):
            _merge_fields(getattr(mine, f.name), value, skip=())
        elif _is_set(value):
            setattr(mine, f.name, value)


def _merge_load(mine: LoadTimes, theirs: LoadTimes) -> None:
    # The timer belongs to the times it measured: take it only along with one of them.
    measured = False
    for f in fields(theirs):
        if f.name != "timer" and getattr(theirs, f.name) is not None:
            setattr(mine, f.name, getattr(theirs, f.name))
            measured = True
    if measured:
        mine.timer = theirs.timer


def tool_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour changes the figures."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("pytest-coreml-quality", "coremltools", "onnxruntime", "onnx", "numpy", "Pillow", "pytest"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out
