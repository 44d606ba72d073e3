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

BACKENDS = ("auto", "coreml", "onnx")
PRECISIONS = ("fp32", "fp16")


class SettingError(ValueError):
    """A setting has a value it cannot take; the plugin turns it into ``pytest.UsageError``."""


@dataclass(frozen=True)
class OptionSpec:
    """One setting: ``--flag`` on the command line and ``ini`` key in the config file."""

    dest: str
    flag: str
    ini: str
    help: str
    metavar: str = "VALUE"
    multiple: bool = False  # repeatable flag / linelist ini
    choices: Sequence[str] | None = None
    default: Any = None


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "coreml_model",
        "--coreml-model",
        "coreml_model",
        "Core ML model to check (.mlmodel or .mlpackage); repeat for several.",
        "PATH",
        multiple=True,
    ),
    OptionSpec(
        "coreml_dataset",
        "--coreml-dataset",
        "coreml_dataset",
        "golden set: a directory with images/ and masks/ paired by file stem, or a CSV/JSON manifest.",
        "DIR",
    ),
    OptionSpec(
        "coreml_variants",
        "--coreml-variants",
        "coreml_variants",
        "comma-separated compression recipes to build and check, e.g. q8,q4 or int8,pal4 ('base' is always included).",
        "LIST",
    ),
    OptionSpec(
        "coreml_backend",
        "--coreml-backend",
        "coreml_backend",
        "runtime: 'coreml' (Core ML, macOS only), 'onnx' (translation run by onnxruntime, any OS) "
        "or 'auto' (coreml on macOS, onnx elsewhere). Default: auto.",
        "NAME",
        choices=BACKENDS,
        default="auto",
    ),
    OptionSpec(
        "coreml_cache_dir",
        "--coreml-cache-dir",
        "coreml_cache_dir",
        "where compressed variants, translated models and predictions are cached. "
        "Default: a coreml-quality folder in pytest's cache directory.",
        "DIR",
    ),
    OptionSpec(
        "coreml_precision",
        "--coreml-precision",
        "coreml_precision",
        "onnx backend compute precision: fp32, or fp16 to emulate Core ML's GPU/Neural Engine rounding. Default: fp32.",
        "NAME",
        choices=PRECISIONS,
        default="fp32",
    ),
)


@dataclass(frozen=True)
class Settings:
    """Validated run settings. Paths are absolute."""

    models: tuple[Path, ...] = ()
    dataset: Path | None = None
    variants: tuple[str, ...] = ()
    backend: str = "auto"
    cache_dir: Path | None = None
    precision: str = "fp32"
    extra: dict[str, Any] = field(default_factory=dict)

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
    settings = Settings(
        models=models,
        dataset=path_of(dataset_value, dataset_base) if dataset_value else None,
        variants=variants,
        backend=_choice("coreml_backend", raw["coreml_backend"][0]),
        cache_dir=path_of(cache_value, cache_base) if cache_value else None,
        precision=_choice("coreml_precision", raw["coreml_precision"][0]),
    )
    return settings


def _as_list(value: Any) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _choice(dest: str, value: Any) -> str:
    spec = next(s for s in OPTIONS if s.dest == dest)
    text = str(value).strip().lower()
    assert spec.choices is not None
    if text not in spec.choices:
        raise SettingError(f"{spec.flag} / ini '{spec.ini}': got '{value}', expected one of {', '.join(spec.choices)}")
    return text
