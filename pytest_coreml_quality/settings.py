"""Run settings: command-line options and ini keys resolved into one validated object.

Each setting is declared once in :data:`OPTIONS` (flag, ini key, help, parser); the
threshold settings come from the figure catalogue (:func:`all_options` adds them). The
plugin registers them from this table and :func:`resolve` reads them back, so a flag
and its ini key can never drift apart. Command-line values win over ini values.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_coreml_quality import catalogue
from pytest_coreml_quality.errors import SettingError
from pytest_coreml_quality.masks import MASK_VALUES_HELP, MaskError, parse_mask_spec
from pytest_coreml_quality.preprocess import RESAMPLE_FILTERS, PreprocessError, parse_normalization

if TYPE_CHECKING:
    from pytest_coreml_quality.projecttable import ModelEntry, ProjectTable

BACKENDS = ("auto", "coreml", "onnx")
COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")  # coremltools.ComputeUnit names
PRECISIONS = ("fp32", "fp16")
CHANNEL_ORDERS = ("RGB", "BGR")
INPUT_LAYOUTS = ("auto", "NCHW", "NHWC")
OUTPUT_KIND_CHOICES = ("auto", *catalogue.OUTPUT_KINDS)


@dataclass(frozen=True)
class OptionSpec:
    """One setting: ``--coreml-x`` on the command line and ``coreml_x`` in the config file."""

    dest: str
    help: str
    metavar: str = "VALUE"
    multiple: bool = False  # repeatable flag / linelist ini
    choices: Sequence[str] | None = None
    default: Any = None
    kind: str = "text"  # "text", "path", "number", "count"

    @property
    def flag(self) -> str:
        return "--" + self.dest.replace("_", "-")

    @property
    def ini(self) -> str:
        return self.dest


SWITCH_VALUES = ("true", "false", "1", "0", "yes", "no")


def _switch(dest: str, help_text: str) -> OptionSpec:
    """A bare ``--flag`` on the command line; ``true``/``false`` in the ini file."""
    return OptionSpec(dest, help_text, "BOOL", default="false", choices=SWITCH_VALUES)


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "coreml_model",
        "Core ML model to check (.mlmodel or .mlpackage); repeat for several.",
        "PATH",
        multiple=True,
    ),
    OptionSpec(
        "coreml_dataset",
        "golden set: a directory with images/ and masks/ paired by file stem, or a CSV/JSON manifest.",
        "DIR",
    ),
    OptionSpec(
        "coreml_variants",
        "comma-separated compression recipes to build and check, e.g. q8,q4 or int8,pal4 ('base' is always included); "
        "'sweep' adds every recipe that applies to the model (combinable: sweep,q3).",
        "LIST",
    ),
    OptionSpec(
        "coreml_sweep_budget",
        "seconds the builds of --coreml-variants=sweep may take; recipes that would not finish are skipped and listed. "
        "Cached variants cost nothing. Default: no limit.",
        "SECONDS",
        kind="number",
    ),
    OptionSpec(
        "coreml_recommend_metric",
        "quality figure that breaks ties between equally small passing variants and is the plot's y axis. Default: iou.",
        "NAME",
        default="iou",
    ),
    OptionSpec(
        "coreml_plot",
        "write the size-vs-quality plot (PNG) to this file; needs matplotlib: pip install pytest-coreml-quality[plot].",
        "FILE",
        kind="path",
    ),
    OptionSpec(
        "coreml_backend",
        "runtime: 'coreml' (Core ML, macOS only), 'onnx' (translation run by onnxruntime, any OS) "
        "or 'auto' (coreml on macOS, onnx elsewhere); two side by side, 'coreml,onnx', run every variant "
        "on both and report the drift between them. Default: auto.",
        "NAME",
        choices=BACKENDS,
        default="auto",
    ),
    OptionSpec(
        "coreml_cache_dir",
        "where compressed variants, translated models and predictions are cached. "
        "Default: a coreml-quality folder in pytest's cache directory "
        "(~/.cache/pytest-coreml-quality or $XDG_CACHE_HOME's with -p no:cacheprovider).",
        "DIR",
    ),
    _switch(
        "coreml_cache_clear",
        "delete every cached variant, translated model, prediction and mask decision before the run "
        "('true'/'false'); waits for other runs using the cache, and removes only the plugin's own folders in it.",
    ),
    OptionSpec(
        "coreml_precision",
        "onnx backend compute precision: fp32, or fp16 to emulate Core ML's GPU/Neural Engine rounding. Default: fp32.",
        "NAME",
        choices=PRECISIONS,
        default="fp32",
    ),
    OptionSpec(
        "coreml_compute_units",
        f"comma-separated Core ML compute units to load and score on: {', '.join(COMPUTE_UNITS)}; the load and "
        "quality items run once per unit (ids like quality[q4-CPU_AND_NE]). coreml backend; on the onnx backend "
        "only with --coreml-precision=fp16, which emulates them (CPU_ONLY at fp32, the others at fp16). "
        "Default: Core ML's own choice (ALL), not parametrised.",
        "LIST",
    ),
    OptionSpec(
        "coreml_threads",
        "onnx backend: threads each model run may use. Default: the process's cores divided by the pytest-xdist "
        "workers (all cores without xdist), at least 1, so -n N workers share the cores instead of fighting for them.",
        "N",
        kind="count",
    ),
    OptionSpec(
        "coreml_output",
        "name of the model output that holds the mask (default: the only image or multiarray output).",
        "NAME",
    ),
    OptionSpec(
        "coreml_output_kind",
        "how the output is compared: 'mask' (scored against the ground truth and the base model's mask), "
        "'tensor' (heat maps, depth, embeddings, colour images: compared with the base model's output only), "
        "'heatmap' (a tensor of keypoint heat maps, also counting moved keypoints), 'classifier' (class probabilities: "
        "agreement with the base model, accuracy against labels.csv), or 'auto': a classifier for a model with a "
        "probability dictionary, a mask when the "
        "output reads as one, else a tensor when the golden set has no masks. Default: auto.",
        "KIND",
        choices=OUTPUT_KIND_CHOICES,
        default="auto",
    ),
    OptionSpec(
        "coreml_keypoint_tolerance",
        "heat-map outputs: a keypoint counts as moved when its peak is more than this many output pixels "
        "from the base model's. Default: 2.",
        "PIXELS",
        default="2",
        kind="number",
    ),
    OptionSpec(
        "coreml_normalization",
        "multiarray inputs only: how pixels become numbers, '0..1', '-0.5..0.5', '-1..1', 'imagenet' "
        "or 'mean=R,G,B;std=R,G,B' on 0..1 pixels. Image inputs use the model's own scale and bias. Default: 0..1.",
        "NAME",
        default="0..1",
    ),
    OptionSpec(
        "coreml_channel_order",
        "multiarray inputs only: channel order the model expects, RGB or BGR. Default: RGB.",
        "ORDER",
        choices=CHANNEL_ORDERS,
        default="RGB",
    ),
    OptionSpec(
        "coreml_input_layout",
        "multiarray inputs only: NCHW or NHWC, for shapes that do not tell (e.g. 1x3x3x3); "
        "auto reads it from the axis holding 1 or 3 channels. Default: auto.",
        "LAYOUT",
        choices=INPUT_LAYOUTS,
        default="auto",
    ),
    OptionSpec(
        "coreml_mask",
        "how the output becomes a mask: 'auto', 'prob' (one channel in 0..1), 'logits' (one channel, sigmoid), "
        "'channel:K' (channel K of C, softmax first unless already probabilities) or 'class:K' / 'class:K1,K2' "
        "(class-index map, or argmax of C channels). Default: auto (one channel in 0..1, or channel 1 of two).",
        "SPEC",
        default="auto",
    ),
    _switch(
        "coreml_logits",
        "the mask output holds logits: apply a sigmoid before scoring ('true'/'false'); same as --coreml-mask=logits.",
    ),
    _switch(
        "coreml_normalize_predictions",
        "stretch each predicted mask to span 0..1 before scoring, as papers and PySODMetrics do ('true'/'false'). "
        "Default: false (score the mask the model ships).",
    ),
    OptionSpec(
        "coreml_resample",
        f"filter that resizes photos to the model's input size: {', '.join(RESAMPLE_FILTERS)}. Default: lanczos.",
        "NAME",
        default="lanczos",
        choices=tuple(RESAMPLE_FILTERS),
    ),
    _switch(
        "coreml_hce",
        "also compute HCE (human correction efforts); needs the 'sod' extra and costs about 5 s per megapixel.",
    ),
    OptionSpec(
        "coreml_load_rounds",
        "how many cold and how many warm loads each load item measures. Default: 3.",
        "N",
        default="3",
        kind="count",
    ),
    OptionSpec(
        "coreml_shard",
        "evaluate only shard I of N (1-based, e.g. 2/3) of the golden set: images at positions I-1, I-1+N, ... "
        "of its ids sorted by name, for every variant; write the partial report with --coreml-report-json and "
        "judge nothing (a --coreml-merge run judges the whole). Shard 1 also measures the load times.",
        "I/N",
    ),
    OptionSpec(
        "coreml_merge",
        "merge the partial JSON reports of a sharded run (a directory of them, or a comma-separated list of files) "
        "into the whole run's table, thresholds, reports and recommendation; no model or golden set is opened.",
        "DIR_OR_FILES",
    ),
    OptionSpec("coreml_report_json", "write every figure, per image too, to this JSON file.", "FILE", kind="path"),
    OptionSpec("coreml_report_html", "write a self-contained HTML report with thumbnails to this file.", "FILE", kind="path"),
    OptionSpec(
        "coreml_save_baseline",
        "save this run's sizes, metrics and load times as a baseline JSON file.",
        "FILE",
        kind="path",
    ),
    OptionSpec(
        "coreml_baseline",
        "compare this run with a saved baseline; fail where a figure got worse beyond the tolerances.",
        "FILE",
        kind="path",
    ),
    *(
        OptionSpec(dest, help_text, "NUMBER", kind="number", default=default)
        for dest, help_text, default in (
            ("coreml_baseline_tolerance_metric", "baseline: how much a 0..1 metric may worsen (absolute). Default: 0.005.", "0.005"),
            ("coreml_baseline_tolerance_size", "baseline: how much a size may grow (relative, or a percentage such as 1%). Default: 0.01.", "0.01"),
            ("coreml_baseline_tolerance_load", "baseline: how much a load time may grow (relative, or a percentage such as 50%). Default: 0.5.", "0.5"),
        )
    ),
)

def threshold_options() -> tuple[OptionSpec, ...]:
    """One threshold setting per catalogue figure that has one: unset means "report, don't judge"."""
    return tuple(
        OptionSpec(figure.option_dest, figure.threshold_help(), "NUMBER", kind="number")  # type: ignore[arg-type]
        for figure in catalogue.threshold_figures()
    )


def all_options() -> tuple[OptionSpec, ...]:
    """Every setting: :data:`OPTIONS` and the catalogue's thresholds."""
    return OPTIONS + threshold_options()


@dataclass(frozen=True)
class ModelSettings:
    """The settings of one model: what may differ between models, already merged and validated.

    Built from the run-wide settings, then a ``[[tool.coreml-quality.models]]`` entry's
    values, then the command line again (a flag applies to every model).
    """

    path: Path
    variants: tuple[str, ...] = ()
    output: str | None = None
    normalization: str = "0..1"
    mask: str = "auto"
    normalize_predictions: bool = False
    channel_order: str = "RGB"
    input_layout: str = "auto"
    resample: str = "lanczos"
    thresholds: dict[str, float] = field(default_factory=dict)
    origin: str = "--coreml-model"  # names the model in errors: the flag or the table entry
    origins: dict[str, str] = field(default_factory=dict)  # option dest -> table path of the entry's own values

    def where(self, dest: str) -> str:
        """How errors name this model's setting ``dest``: its table path, or its flag."""
        return self.origins.get(dest) or "--" + dest.replace("_", "-")


@dataclass(frozen=True)
class Settings:
    """Validated run settings. Paths are absolute."""

    models: tuple[Path, ...] = ()
    dataset: Path | None = None
    variants: tuple[str, ...] = ()
    backend: str = "auto"
    compare_backend: str | None = None  # the second of --coreml-backend=A,B: every variant also runs on it
    compute_units: tuple[str, ...] = ()  # --coreml-compute-units; empty: the backend's default, unparametrised
    threads: int | None = None  # --coreml-threads; None: the cores divided by the xdist workers
    cache_dir: Path | None = None
    precision: str = "fp32"
    output: str | None = None
    output_kind: str = "auto"  # 'auto' or one of catalogue.OUTPUT_KINDS
    keypoint_tolerance: float = 2.0  # pixels, heat-map outputs
    normalization: str = "0..1"
    logits: bool = False
    mask: str = "auto"  # a --coreml-mask value; 'logits' when --coreml-logits is on
    normalize_predictions: bool = False
    channel_order: str = "RGB"
    input_layout: str = "auto"
    thresholds: dict[str, float] = field(default_factory=dict)  # threshold option dest -> bound
    load_rounds: int = 3
    report_json: Path | None = None
    report_html: Path | None = None
    save_baseline: Path | None = None
    baseline: Path | None = None
    baseline_tolerances: dict[str, float] = field(default_factory=dict)  # metric/size/load -> tolerance
    cache_clear: bool = False
    resample: str = "lanczos"
    hce: bool = False
    per_model: tuple[ModelSettings, ...] = ()  # one per entry of ``models``, same order
    notes: tuple[str, ...] = ()  # choices the header should tell (e.g. table models not used)
    sweep_budget: float | None = None  # seconds; None: no limit
    recommend_metric: str = "iou"
    plot: Path | None = None
    shard: tuple[int, int] | None = None  # --coreml-shard=I/N: (I, N), I 1-based
    merge: tuple[Path, ...] = ()  # --coreml-merge: the partial reports (a directory is expanded at the merge)

    @property
    def active(self) -> bool:
        """Whether a model was given, i.e. whether the plugin has work to do."""
        return bool(self.models)

    @property
    def merging(self) -> bool:
        """Whether this run merges shard reports (--coreml-merge) instead of measuring."""
        return bool(self.merge)

    def for_model(self, index: int) -> ModelSettings:
        """The settings of ``models[index]``: its own, or the run-wide ones when built without them."""
        if index < len(self.per_model):
            return self.per_model[index]
        return _run_wide_model_settings(self, self.models[index])


def resolve(
    get_option: Callable[[str], Any],
    get_ini: Callable[[str], Any],
    invocation_dir: Path,
    rootdir: Path,
    table: "ProjectTable | None" = None,
) -> Settings:
    """Read every :data:`OPTIONS` entry (option first, then ini or ``table``) and validate it.

    Command-line paths are relative to where pytest was invoked; ini paths are relative
    to the rootdir (where the config file lives), as users expect from both. ``table`` is
    the ``[tool.coreml-quality]`` table (see :mod:`.projecttable`): its top level acts as
    ini keys (setting one in both places is an error), and its models get their own
    :class:`ModelSettings`, unless ``--coreml-model`` is given on the command line.
    """
    raw: dict[str, tuple[Any, Path]] = {}
    from_cli: set[str] = set()
    origins: dict[str, str] = {}  # dest -> table path of a value read from the table
    for spec in all_options():
        value = get_option(spec.dest)
        base = invocation_dir
        _refuse_empty_path(spec, value)
        if value not in (None, [], ""):
            from_cli.add(spec.dest)
        else:
            value = get_ini(spec.ini)
            base = rootdir
            written = table.settings.get(spec.dest) if table is not None else None
            if written is not None and table is not None:
                if value not in (None, [], ""):
                    raise SettingError(f"{written.where}: ini key '{spec.ini}' sets it too; expected it in one place")
                value, base = written.value, table.base
                origins[spec.dest] = written.where
        if value in (None, [], ""):
            value = spec.default
        raw[spec.dest] = (value, base)
    try:
        settings = _validated(raw)
    except SettingError as exc:
        raise _located(exc, origins) from None
    if settings.merging:
        return _merge_only(settings, from_cli, table)
    if table is None or not table.models:
        return settings
    if "coreml_model" in from_cli:
        # The command line names the models to check: the table's list is not merged in.
        note = (
            f"--coreml-model given: the {len(table.models)} model(s) listed in "
            f"[tool.coreml-quality] of {table.file} are not used"
        )
        return replace(settings, notes=settings.notes + (note,))
    if settings.models:
        raise SettingError(
            f"{table.models[0].where}: models are also listed in ini key 'coreml_model'; expected them in one place"
        )
    per_model = tuple(_entry_settings(entry, settings, from_cli, table.base) for entry in table.models)
    seen: dict[Path, str] = {}
    for entry, model in zip(table.models, per_model):
        if model.path in seen:
            raise SettingError(f"{entry.path.where}: {model.path} is already listed at {seen[model.path]}; expected each model once")
        seen[model.path] = entry.where
    return replace(settings, models=tuple(m.path for m in per_model), per_model=per_model)


def _validated(raw: dict[str, tuple[Any, Path]]) -> Settings:
    """The :class:`Settings` of raw values (option dest -> (value, base folder for paths))."""
    models_value, models_base = raw["coreml_model"]
    models = tuple(_path("coreml_model", v, models_base) for v in _as_list(models_value))
    variants_value, _ = raw["coreml_variants"]
    variants = tuple(v.strip() for item in _as_list(variants_value) for v in item.split(",") if v.strip())
    def optional_path(dest: str) -> Path | None:
        value, base = raw[dest]
        return _path(dest, str(value), base) if value else None

    thresholds = {}
    for spec in threshold_options():
        value = raw[spec.dest][0]
        if value not in (None, ""):
            thresholds[spec.dest] = _threshold(spec.dest, value)
    settings = Settings(
        models=models,
        dataset=optional_path("coreml_dataset"),
        variants=variants,
        backend=_backends(raw["coreml_backend"][0])[0],
        compare_backend=_backends(raw["coreml_backend"][0])[1],
        compute_units=_compute_units(raw["coreml_compute_units"][0]),
        threads=_threads(raw["coreml_threads"][0]) if raw["coreml_threads"][0] not in (None, "") else None,
        cache_dir=optional_path("coreml_cache_dir"),
        precision=_choice("coreml_precision", raw["coreml_precision"][0]),
        output=str(raw["coreml_output"][0]).strip() if raw["coreml_output"][0] else None,
        output_kind=_choice("coreml_output_kind", raw["coreml_output_kind"][0]),
        keypoint_tolerance=_number("coreml_keypoint_tolerance", raw["coreml_keypoint_tolerance"][0]),
        normalization=_normalization("coreml_normalization", raw["coreml_normalization"][0]),
        logits=_switch_on("coreml_logits", raw),
        mask=_mask(raw["coreml_mask"][0], _switch_on("coreml_logits", raw)),
        normalize_predictions=_switch_on("coreml_normalize_predictions", raw),
        channel_order=_choice("coreml_channel_order", raw["coreml_channel_order"][0]),
        input_layout=_choice("coreml_input_layout", raw["coreml_input_layout"][0]),
        cache_clear=_switch_on("coreml_cache_clear", raw),
        resample=_choice("coreml_resample", raw["coreml_resample"][0]),
        hce=_switch_on("coreml_hce", raw),
        thresholds=thresholds,
        load_rounds=_count("coreml_load_rounds", raw["coreml_load_rounds"][0]),
        report_json=optional_path("coreml_report_json"),
        report_html=optional_path("coreml_report_html"),
        save_baseline=optional_path("coreml_save_baseline"),
        baseline=optional_path("coreml_baseline"),
        sweep_budget=_number("coreml_sweep_budget", raw["coreml_sweep_budget"][0]) if raw["coreml_sweep_budget"][0] not in (None, "") else None,
        recommend_metric=_quality_figure("coreml_recommend_metric", raw["coreml_recommend_metric"][0]),
        plot=optional_path("coreml_plot"),
        shard=_shard(raw["coreml_shard"][0]),
        merge=_merge_paths(raw["coreml_merge"][0], raw["coreml_merge"][1]),
        baseline_tolerances={
            key: _tolerance(f"coreml_baseline_tolerance_{key}", raw[f"coreml_baseline_tolerance_{key}"][0])
            for key in ("metric", "size", "load")
        },
    )
    return settings


#: Options that change how figures are measured: a merge run takes them from the shard reports.
_MEASURED_IN_SHARDS = (
    "coreml_backend", "coreml_compute_units", "coreml_precision", "coreml_hce", "coreml_load_rounds",
    "coreml_output", "coreml_output_kind", "coreml_keypoint_tolerance", "coreml_normalization",
    "coreml_channel_order", "coreml_input_layout", "coreml_mask", "coreml_normalize_predictions",
    "coreml_resample", "coreml_variants",
)


def _merge_only(settings: Settings, from_cli: set[str], table: "ProjectTable | None") -> Settings:
    """A --coreml-merge run opens no model or golden set: the figures come from the shard reports.

    Models and a golden set named on the command line are a mistake; ones from the config
    file (the same file the shard jobs read) are set aside, and the header says so.
    """
    merge = _spec("coreml_merge").flag
    for dest in ("coreml_model", "coreml_dataset", "coreml_shard"):
        if dest in from_cli:
            raise SettingError(
                f"{merge} merges shard reports: got {_spec(dest).flag} too; expected no {_spec(dest).flag} "
                "in the merge run (models, golden set and shards are read from the reports)"
            )
    if settings.shard is not None:
        raise SettingError(f"{merge}: ini 'coreml_shard' is set too; expected either a shard run or a merge run")
    set_aside = bool(settings.models or settings.dataset or (table is not None and table.models))
    notes = settings.notes
    # Copied from the shard jobs' command line, these would read as if they applied here; the
    # figures were measured by the shards with the settings their reports hold (and the merge
    # checks those agree), so say plainly that the merge run's own are not used.
    unused = [_spec(dest).flag for dest in _MEASURED_IN_SHARDS if dest in from_cli]
    if unused:
        notes += (
            f"{merge}: {', '.join(unused)} not used: the figures were measured in the shard jobs, "
            "with the settings their reports hold",
        )
    if set_aside:
        notes += ("--coreml-merge: the models and golden set of the config file are not opened; the figures come from the shard reports",)
    # The variants too come from the reports (a header line echoing the option would mislead).
    return replace(settings, models=(), dataset=None, per_model=(), variants=(), notes=notes)


def _shard(value: Any) -> tuple[int, int] | None:
    """``2/3`` -> (2, 3): shard 2 of 3, numbered from 1."""
    if value in (None, ""):
        return None
    spec = _spec("coreml_shard")
    text = str(value).strip()
    index, slash, count = text.partition("/")
    expected = "I/N with whole numbers 1 <= I <= N, e.g. 1/3"
    if not slash or not index.strip().isdigit() or not count.strip().isdigit():
        raise SettingError(f"{spec.flag} / ini '{spec.ini}': got '{value}', expected {expected}")
    i, n = int(index), int(count)
    if n < 1:
        raise SettingError(f"{spec.flag} / ini '{spec.ini}': got '{value}': there must be at least one shard; expected {expected}")
    if not 1 <= i <= n:
        why = "shards are numbered from 1" if i == 0 else f"there are only {n} shard(s)"
        raise SettingError(f"{spec.flag} / ini '{spec.ini}': got '{value}': {why}; expected {expected}")
    return i, n


def _merge_paths(value: Any, base: Path) -> tuple[Path, ...]:
    """The comma-separated files (or one directory) of --coreml-merge, made absolute."""
    items = [part.strip() for item in _as_list(value) for part in item.split(",") if part.strip()]
    return tuple(_path("coreml_merge", item, base) for item in items)


def _run_wide_model_settings(settings: Settings, path: Path) -> ModelSettings:
    """A model's settings when nothing is set for it alone: the run-wide ones."""
    return ModelSettings(
        path=path,
        variants=settings.variants,
        output=settings.output,
        normalization=settings.normalization,
        mask=settings.mask,
        normalize_predictions=settings.normalize_predictions,
        channel_order=settings.channel_order,
        input_layout=settings.input_layout,
        resample=settings.resample,
        thresholds=dict(settings.thresholds),
    )


def _entry_settings(entry: "ModelEntry", run: Settings, from_cli: set[str], base: Path) -> ModelSettings:
    """One table entry's settings: its values where the command line does not set the same one."""
    try:
        path = _path("coreml_model", entry.path.value, base)
    except SettingError as exc:
        raise _located(exc, {"coreml_model": entry.path.where}) from None
    own = {dest: written for dest, written in entry.settings.items() if dest not in from_cli}
    if "coreml_mask" in from_cli or "coreml_logits" in from_cli:
        # --coreml-logits is --coreml-mask=logits: either flag overrides both keys.
        own.pop("coreml_mask", None)
        own.pop("coreml_logits", None)
    origins = {dest: written.where for dest, written in own.items()}

    def value(dest: str, check: Callable[[str, Any], Any]) -> Any:
        written = own.get(dest)
        if written is None:
            return None
        try:
            return check(dest, written.value)
        except SettingError as exc:
            raise _located(exc, origins) from None

    changes: dict[str, Any] = {"path": path, "origin": entry.where, "origins": origins}
    if "coreml_variants" in own:
        changes["variants"] = tuple(v.strip() for v in own["coreml_variants"].value.split(",") if v.strip())
    if "coreml_output" in own:
        changes["output"] = own["coreml_output"].value.strip() or None
    for dest, check in (
        ("coreml_normalization", _normalization),
        ("coreml_channel_order", _choice),
        ("coreml_input_layout", _choice),
        ("coreml_resample", _choice),
    ):
        checked = value(dest, check)
        if checked is not None:
            changes[dest[len("coreml_"):]] = checked
    stretch = value("coreml_normalize_predictions", _choice)
    if stretch is not None:
        changes["normalize_predictions"] = stretch in ("true", "1", "yes")
    if "coreml_mask" in own or "coreml_logits" in own:
        logits = value("coreml_logits", _choice) in ("true", "1", "yes")
        mask = own["coreml_mask"].value if "coreml_mask" in own else "auto"
        if logits and "coreml_mask" in own and mask.strip() not in ("auto", "logits"):
            raise SettingError(
                f"{own['coreml_logits'].where} = true conflicts with {own['coreml_mask'].where} = '{mask}': "
                "logits = true means mask = 'logits'; expected one of them"
            )
        if "coreml_mask" in own:
            changes["mask"] = value("coreml_mask", lambda _dest, text: _mask(text, logits))
        else:  # logits = false alone: the entry's output is not logits, so 'auto' decides
            changes["mask"] = _mask("auto", logits)
    thresholds = dict(run.thresholds)
    for dest in own:
        if any(spec.dest == dest for spec in threshold_options()):
            thresholds[dest] = value(dest, _threshold)
    changes["thresholds"] = thresholds
    return replace(_run_wide_model_settings(run, path), **changes)


def _located(exc: SettingError, origins: dict[str, str]) -> SettingError:
    """``exc`` naming the table path instead of the flag / ini key when the value came from the table."""
    text = str(exc)
    for dest, where in origins.items():
        spec = _spec(dest)
        prefix = f"{spec.flag} / ini '{spec.ini}'"  # how every validator here names the setting
        if text.startswith(prefix):
            return SettingError(where + text[len(prefix):])
    return exc


def _backends(value: Any) -> tuple[str, str | None]:
    """``coreml`` -> ("coreml", None); ``coreml,onnx`` -> both, for a side-by-side run."""
    spec = _spec("coreml_backend")
    parts = [p.strip() for p in str(value).split(",")]
    if len(parts) == 1:
        return _choice("coreml_backend", parts[0]), None
    names = [_choice("coreml_backend", p) for p in parts]
    if len(names) != 2 or "auto" in names or names[0] == names[1]:
        raise SettingError(
            f"{spec.flag} / ini '{spec.ini}': got '{value}', expected one backend or two different ones "
            "side by side, named explicitly: coreml,onnx or onnx,coreml"
        )
    return names[0], names[1]


def _compute_units(value: Any) -> tuple[str, ...]:
    """``CPU_AND_NE,ALL`` -> ("CPU_AND_NE", "ALL"): known names, each once, case-insensitive."""
    spec = _spec("coreml_compute_units")
    units: list[str] = []
    for item in _as_list(value):
        for part in item.split(","):
            name = part.strip().upper()
            if not name:
                continue
            if name not in COMPUTE_UNITS:
                raise SettingError(
                    f"{spec.flag} / ini '{spec.ini}': got '{part.strip()}', expected one or more of {', '.join(COMPUTE_UNITS)}"
                )
            if name not in units:
                units.append(name)
    return tuple(units)


def _quality_figure(dest: str, value: Any) -> str:
    """A quality or drift figure of the catalogue, by its key."""
    figure = catalogue.get(str(value).strip().lower())
    if figure is None or figure.family not in ("quality", "drift"):
        spec = _spec(dest)
        names = ", ".join(f.key for f in catalogue.figures("quality"))
        raise SettingError(f"{spec.flag} / ini '{spec.ini}': got '{value}', expected a quality figure: {names}")
    return figure.key


def _mask(value: Any, logits: bool) -> str:
    """The canonical --coreml-mask value; --coreml-logits is a synonym of 'logits'."""
    spec = _spec("coreml_mask")
    try:
        mask = str(parse_mask_spec(str(value)))
    except MaskError:
        raise SettingError(f"{spec.flag} / ini '{spec.ini}': got '{value}', expected {MASK_VALUES_HELP}") from None
    if logits and mask not in ("auto", "logits"):
        raise SettingError(
            f"--coreml-logits / ini 'coreml_logits' conflicts with {spec.flag}={mask}: "
            "--coreml-logits means --coreml-mask=logits; keep one of them"
        )
    return "logits" if logits else mask


_PATH_METAVARS = frozenset({"PATH", "DIR", "FILE", "DIR_OR_FILES"})


def _refuse_empty_path(spec: OptionSpec, value: Any) -> None:
    """``--coreml-dataset=`` given empty on the command line: an unset CI variable, not "no golden set".

    Read as absent, the quality items skipped (and the run passed) or ``--coreml-model=``
    opened the current folder as a model.
    """
    if spec.metavar not in _PATH_METAVARS:
        return
    values = value if isinstance(value, list) else [value]
    if any(isinstance(v, str) and not v.strip() for v in values):
        raise SettingError(
            f"{spec.flag}: got an empty value (an unset variable in the command?), expected a path; "
            f"leave {spec.flag} out to use the ini key '{spec.ini}' or the default"
        )


def _path(dest: str, value: str, base: Path) -> Path:
    """``value`` made absolute against ``base``, with symbolic links resolved.

    A symbolic-link loop makes ``Path.resolve`` raise (RuntimeError up to Python 3.12,
    OSError ELOOP after): that is the user's path, so it is a usage error, not a crash.
    """
    spec = _spec(dest)
    if "\0" in value:  # the OS cannot take such a path (ValueError deep in os.stat)
        raise SettingError(f"{spec.flag} / ini '{spec.ini}': got {value!r}, expected a path without a NUL character")
    try:
        return (base / os.path.expanduser(value)).resolve()
    except (OSError, RuntimeError) as exc:
        detail = str(exc) if isinstance(exc, RuntimeError) else f"{exc.strerror}: {exc.filename}"
        raise SettingError(
            f"{spec.flag} / ini '{spec.ini}': got '{value}', which cannot be resolved ({detail}); "
            "expected a path without a symbolic-link loop"
        ) from None


def _normalization(dest: str, value: Any) -> str:
    """The normalisation text, checked now so a zero std fails before any model runs."""
    text = str(value).strip()
    try:
        parse_normalization(text)
    except PreprocessError as exc:
        spec = _spec(dest)
        raise SettingError(f"{spec.flag} / ini '{spec.ini}': got '{value}', expected {exc.expected}") from None
    return text


def _switch_on(dest: str, raw: dict[str, tuple[Any, Path]]) -> bool:
    return _choice(dest, raw[dest][0]) in ("true", "1", "yes")


def _spec(dest: str) -> OptionSpec:
    return next(s for s in all_options() if s.dest == dest)


def _threshold(dest: str, value: Any) -> float:
    """A bound the figure can take: [0, 1] for bounded figures, finite and >= 0 otherwise."""
    number = _number(dest, value)
    figure = catalogue.by_option(dest)
    low, high = figure.bound_range
    if not math.isfinite(number) or not low <= number <= high:
        spec = _spec(dest)
        raise SettingError(
            f"{spec.flag} / ini '{spec.ini}': got '{value}', which {figure.key} can never reach; expected {figure.bound_text()}"
        )
    return number


def _number(dest: str, value: Any) -> float:
    spec = _spec(dest)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingError(f"{spec.flag} / ini '{spec.ini}': got '{value}', expected a number") from None
    if number != number or number < 0:  # NaN or negative: no bound of ours can take it
        raise SettingError(f"{spec.flag} / ini '{spec.ini}': got '{value}', expected a number >= 0")
    return number


def _tolerance(dest: str, value: Any) -> float:
    """A tolerance as a number ("0.01") or a percentage ("1%")."""
    text = str(value).strip()
    number = _number(dest, text[:-1]) / 100.0 if text.endswith("%") else _number(dest, text)
    if not math.isfinite(number):
        spec = _spec(dest)
        raise SettingError(f"{spec.flag} / ini '{spec.ini}': got '{value}', expected a finite number such as 0.01 or 1%")
    return number


def _count(dest: str, value: Any) -> int:
    spec = _spec(dest)
    try:
        number = int(str(value))
    except ValueError:
        raise SettingError(f"{spec.flag} / ini '{spec.ini}': got '{value}', expected a whole number >= 1") from None
    if number < 1:
        raise SettingError(f"{spec.flag} / ini '{spec.ini}': got '{value}', expected a whole number >= 1")
    return number


# Threads per onnxruntime session beyond this many per core only wait for each other: 64 on
# 2 cores made a 3 s run take 27 s, 5000 did not finish.
THREADS_PER_CORE = 4


def _threads(value: Any) -> int:
    from pytest_coreml_quality.runtime import available_cores

    number, cores = _count("coreml_threads", value), available_cores()
    if number > THREADS_PER_CORE * cores:
        spec = _spec("coreml_threads")
        raise SettingError(
            f"{spec.flag} / ini '{spec.ini}': got '{value}', more than {THREADS_PER_CORE} threads for each of "
            f"this process's {cores} core(s); expected a whole number from 1 to {THREADS_PER_CORE * cores} "
            f"(leave it out to use the cores shared among the xdist workers)"
        )
    return number


def _as_list(value: Any) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _choice(dest: str, value: Any) -> str:
    """The choice ``value`` names, case-insensitively, spelt as in the spec's choices."""
    spec = _spec(dest)
    text = str(value).strip().lower()
    assert spec.choices is not None
    by_lower = {c.lower(): c for c in spec.choices}
    if text not in by_lower:
        raise SettingError(f"{spec.flag} / ini '{spec.ini}': got '{value}', expected one of {', '.join(spec.choices)}")
    return by_lower[text]
