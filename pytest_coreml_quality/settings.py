"""Run settings: command-line options and ini keys resolved into one validated object.

Each setting is declared once in :data:`OPTIONS` (flag, ini key, help, parser); the
plugin registers them from this table and :func:`resolve` reads them back, so a flag
and its ini key can never drift apart. Command-line values win over ini values.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_coreml_quality.preprocess import RESAMPLE_FILTERS

BACKENDS = ("auto", "coreml", "onnx")
PRECISIONS = ("fp32", "fp16")


class SettingError(ValueError):
    """A setting has a value it cannot take; the plugin turns it into ``pytest.UsageError``."""


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
        "comma-separated compression recipes to build and check, e.g. q8,q4 or int8,pal4 ('base' is always included).",
        "LIST",
    ),
    OptionSpec(
        "coreml_backend",
        "runtime: 'coreml' (Core ML, macOS only), 'onnx' (translation run by onnxruntime, any OS) "
        "or 'auto' (coreml on macOS, onnx elsewhere). Default: auto.",
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
        "delete every cached variant, translated model and prediction before the run ('true'/'false').",
    ),
    OptionSpec(
        "coreml_precision",
        "onnx backend compute precision: fp32, or fp16 to emulate Core ML's GPU/Neural Engine rounding. Default: fp32.",
        "NAME",
        choices=PRECISIONS,
        default="fp32",
    ),
    OptionSpec(
        "coreml_output",
        "name of the model output that holds the mask (default: the only image or multiarray output).",
        "NAME",
    ),
    OptionSpec(
        "coreml_normalization",
        "multiarray inputs only: how pixels become numbers, '0..1', '-0.5..0.5', '-1..1', 'imagenet' "
        "or 'mean=R,G,B;std=R,G,B' on 0..1 pixels. Image inputs use the model's own scale and bias. Default: 0..1.",
        "NAME",
        default="0..1",
    ),
    _switch(
        "coreml_logits",
        "the mask output holds logits: apply a sigmoid before scoring ('true'/'false'). Default: false.",
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
    # Thresholds of the generated items: unset means "report, don't judge".
    *(
        OptionSpec(dest, help_text, "NUMBER", kind="number")
        for dest, help_text in (
            ("coreml_max_mae", "fail a variant whose MAE against the ground truth (0..1) is above this."),
            ("coreml_min_iou", "fail a variant whose IoU against the ground truth is below this."),
            ("coreml_min_f", "fail a variant whose max F-measure is below this."),
            ("coreml_min_s", "fail a variant whose S-measure is below this."),
            ("coreml_max_drift", "fail a variant whose mean absolute difference from the base model's masks (0..1) is above this."),
            ("coreml_max_flip", "fail a variant where more than this share of pixels flips at 0.5 compared with the base model."),
            ("coreml_max_size_mb", "fail a variant larger than this many MB (10^6 bytes) on disk."),
            ("coreml_max_ratio", "fail a compressed variant whose size is above this fraction of the base model's."),
            ("coreml_max_cold_load_s", "fail a variant whose median cold load takes longer than this (seconds)."),
            ("coreml_max_warm_load_s", "fail a variant whose median warm load takes longer than this (seconds)."),
            ("coreml_min_load_speedup", "fail a variant whose cold/warm load-time ratio is below this."),
        )
    ),
    OptionSpec(
        "coreml_load_rounds",
        "how many cold and how many warm loads each load item measures. Default: 3.",
        "N",
        default="3",
        kind="count",
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

#: Threshold settings of the generated items: setting name -> (metric key, comparison).
THRESHOLDS: dict[str, tuple[str, str, str]] = {
    # name: (check, metric, op)
    "coreml_max_mae": ("quality", "mae", "<="),
    "coreml_min_iou": ("quality", "iou", ">="),
    "coreml_min_f": ("quality", "max_f", ">="),
    "coreml_min_s": ("quality", "s", ">="),
    "coreml_max_drift": ("quality", "drift_mae", "<="),
    "coreml_max_flip": ("quality", "drift_flip_share", "<="),
    "coreml_max_size_mb": ("size", "size_mb", "<="),
    "coreml_max_ratio": ("size", "ratio", "<="),
    "coreml_max_cold_load_s": ("load", "cold_s", "<="),
    "coreml_max_warm_load_s": ("load", "warm_s", "<="),
    "coreml_min_load_speedup": ("load", "speedup", ">="),
}


@dataclass(frozen=True)
class Settings:
    """Validated run settings. Paths are absolute."""

    models: tuple[Path, ...] = ()
    dataset: Path | None = None
    variants: tuple[str, ...] = ()
    backend: str = "auto"
    cache_dir: Path | None = None
    precision: str = "fp32"
    output: str | None = None
    normalization: str = "0..1"
    logits: bool = False
    thresholds: dict[str, float] = field(default_factory=dict)  # THRESHOLDS name -> bound
    load_rounds: int = 3
    report_json: Path | None = None
    report_html: Path | None = None
    save_baseline: Path | None = None
    baseline: Path | None = None
    baseline_tolerances: dict[str, float] = field(default_factory=dict)  # metric/size/load -> tolerance
    cache_clear: bool = False
    resample: str = "lanczos"
    hce: bool = False

    @property
    def active(self) -> bool:
        """Whether a model was given, i.e. whether the plugin has work to do."""
        return bool(self.models)


def resolve(
    get_option: Callable[[str], Any],
    get_ini: Callable[[str], Any],
    invocation_dir: Path,
    rootdir: Path,
) -> Settings:
    """Read every :data:`OPTIONS` entry (option first, then ini) and validate it.

    Command-line paths are relative to where pytest was invoked; ini paths are relative
    to the rootdir (where the config file lives), as users expect from both.
    """
    raw: dict[str, tuple[Any, Path]] = {}
    for spec in OPTIONS:
        value = get_option(spec.dest)
        base = invocation_dir
        if value in (None, [], ""):
            value = get_ini(spec.ini)
            base = rootdir
        if value in (None, [], ""):
            value = spec.default
        raw[spec.dest] = (value, base)

    def path_of(value: str, base: Path) -> Path:
        return (base / os.path.expanduser(value)).resolve()

    models_value, models_base = raw["coreml_model"]
    models = tuple(path_of(v, models_base) for v in _as_list(models_value))
    dataset_value, dataset_base = raw["coreml_dataset"]
    cache_value, cache_base = raw["coreml_cache_dir"]
    variants_value, _ = raw["coreml_variants"]
    variants = tuple(v.strip() for item in _as_list(variants_value) for v in item.split(",") if v.strip())
    def optional_path(dest: str) -> Path | None:
        value, base = raw[dest]
        return path_of(str(value), base) if value else None

    thresholds = {}
    for name in THRESHOLDS:
        value = raw[name][0]
        if value not in (None, ""):
            thresholds[name] = _number(name, value)
    settings = Settings(
        models=models,
        dataset=path_of(dataset_value, dataset_base) if dataset_value else None,
        variants=variants,
        backend=_choice("coreml_backend", raw["coreml_backend"][0]),
        cache_dir=path_of(cache_value, cache_base) if cache_value else None,
        precision=_choice("coreml_precision", raw["coreml_precision"][0]),
        output=str(raw["coreml_output"][0]).strip() if raw["coreml_output"][0] else None,
        normalization=str(raw["coreml_normalization"][0]).strip(),
        logits=_switch_on("coreml_logits", raw),
        cache_clear=_switch_on("coreml_cache_clear", raw),
        resample=_choice("coreml_resample", raw["coreml_resample"][0]),
        hce=_switch_on("coreml_hce", raw),
        thresholds=thresholds,
        load_rounds=_count("coreml_load_rounds", raw["coreml_load_rounds"][0]),
        report_json=optional_path("coreml_report_json"),
        report_html=optional_path("coreml_report_html"),
        save_baseline=optional_path("coreml_save_baseline"),
        baseline=optional_path("coreml_baseline"),
        baseline_tolerances={
            key: _tolerance(f"coreml_baseline_tolerance_{key}", raw[f"coreml_baseline_tolerance_{key}"][0])
            for key in ("metric", "size", "load")
        },
    )
    return settings


def _switch_on(dest: str, raw: dict[str, tuple[Any, Path]]) -> bool:
    return _choice(dest, raw[dest][0]) in ("true", "1", "yes")


def _spec(dest: str) -> OptionSpec:
    return next(s for s in OPTIONS if s.dest == dest)


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
    if text.endswith("%"):
        return _number(dest, text[:-1]) / 100.0
    return _number(dest, text)


def _count(dest: str, value: Any) -> int:
    spec = _spec(dest)
    try:
        number = int(str(value))
    except ValueError:
        raise SettingError(f"{spec.flag} / ini '{spec.ini}': got '{value}', expected a whole number >= 1") from None
    if number < 1:
        raise SettingError(f"{spec.flag} / ini '{spec.ini}': got '{value}', expected a whole number >= 1")
    return number


def _as_list(value: Any) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _choice(dest: str, value: Any) -> str:
    spec = _spec(dest)
    text = str(value).strip().lower()
    assert spec.choices is not None
    if text not in spec.choices:
        raise SettingError(f"{spec.flag} / ini '{spec.ini}': got '{value}', expected one of {', '.join(spec.choices)}")
    return text
