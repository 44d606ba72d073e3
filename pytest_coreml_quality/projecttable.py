"""The ``[tool.coreml-quality]`` table of ``pyproject.toml``: run settings and per-model settings.

An app repository often ships several models with different outputs and recipes::

    [tool.coreml-quality]
    dataset = "tests/golden"
    [[tool.coreml-quality.models]]
    path = "Models/ISNet.mlmodel"
    variants = "q8,q4"
    min_iou = 0.9

Keys are the settings' ini keys without the ``coreml_`` prefix (``dataset``,
``channel_order``, ``min_iou``). The table's top level takes any setting but ``model``
(it acts like an ini key); a ``models`` entry takes ``path`` and the settings that may
differ between models (:func:`per_model_keys`). This module only reads and type-checks
the table: values come out as the text the ini reader would give, each with the table
path that names it in errors (``tool.coreml-quality.models[1].mask``), and
:func:`pytest_coreml_quality.settings.resolve` validates and merges them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_coreml_quality import catalogue
from pytest_coreml_quality.errors import SettingError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

TABLE = "tool.coreml-quality"
PREFIX = "coreml_"

#: Settings other than thresholds that a ``[[tool.coreml-quality.models]]`` entry may set.
PER_MODEL_SETTINGS: tuple[str, ...] = (
    "variants",
    "output",
    "mask",
    "logits",
    "normalization",
    "channel_order",
    "input_layout",
    "normalize_predictions",
    "resample",
)


def per_model_keys() -> tuple[str, ...]:
    """Keys a model entry may set: :data:`PER_MODEL_SETTINGS` and every catalogue threshold."""
    thresholds = (f.option_dest[len(PREFIX):] for f in catalogue.threshold_figures() if f.option_dest)
    return PER_MODEL_SETTINGS + tuple(thresholds)


@dataclass(frozen=True)
class TableValue:
    """One setting read from the table: the ini-style text and where it was written."""

    value: str
    where: str  # "pyproject.toml (/abs/path): tool.coreml-quality.models[1].mask"


@dataclass(frozen=True)
class ModelEntry:
    """One ``[[tool.coreml-quality.models]]`` entry."""

    index: int
    path: TableValue
    settings: dict[str, TableValue] = field(default_factory=dict)  # option dest -> value

    @property
    def where(self) -> str:
        """The entry's table path, for errors about the model itself."""
        return self.path.where.rsplit(".path", 1)[0]


@dataclass(frozen=True)
class ProjectTable:
    """The whole ``[tool.coreml-quality]`` table of one ``pyproject.toml``."""

    file: Path
    settings: dict[str, TableValue] = field(default_factory=dict)  # option dest -> top-level value
    models: tuple[ModelEntry, ...] = ()

    @property
    def base(self) -> Path:
        """Relative paths in the table are relative to the file's folder."""
        return self.file.parent


def find_pyproject(rootdir: Path, inifile: Path | None) -> Path | None:
    """The ``pyproject.toml`` pytest configured from, else the one in the rootdir, if any."""
    if inifile is not None and inifile.name == "pyproject.toml":
        return inifile
    candidate = rootdir / "pyproject.toml"
    return candidate if candidate.is_file() else None


def read_project_table(file: Path, option_dests: tuple[str, ...]) -> ProjectTable | None:
    """Read and type-check ``[tool.coreml-quality]`` of ``file``; None when the file has no such table.

    ``option_dests`` are every setting's option dest (``coreml_dataset`` ...): the keys the
    table may use, without their ``coreml_`` prefix.
    """
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SettingError(f"{file}: cannot be read ({reason})", expected="a readable pyproject.toml") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        if "coreml-quality" not in text:
            return None  # not ours to judge: a broken file without our table must not stop the run
        raise SettingError(f"{file}: is not valid TOML ({exc})", expected="a TOML file") from None
    tool = document.get("tool")
    table = tool.get("coreml-quality") if isinstance(tool, dict) else None
    if table is None:
        return None
    label = f"pyproject.toml ({file})"
    if not isinstance(table, dict):
        raise SettingError(f"{label}: {TABLE}: got {_kind(table)}, expected a table")
    known = {dest[len(PREFIX):]: dest for dest in option_dests if dest.startswith(PREFIX)}
    top: dict[str, TableValue] = {}
    models: list[ModelEntry] = []
    for key, value in table.items():
        where = f"{label}: {TABLE}.{key}"
        if key == "models":
            models = _models(value, where, known)
        elif key == "model":
            raise SettingError(f"{where}: list models as [[{TABLE}.models]] entries with a 'path' key")
        else:
            dest = _dest(key, where, known, allowed=tuple(k for k in known if k != "model") + ("models",))
            top[dest] = TableValue(_text(key, value, where), where)
    return ProjectTable(file=file, settings=top, models=tuple(models))


def _models(value: Any, where: str, known: dict[str, str]) -> list[ModelEntry]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise SettingError(f"{where}: got {_kind(value)}, expected an array of tables ([[{TABLE}.models]] entries)")
    entries = []
    for index, raw in enumerate(value):
        prefix = f"{where}[{index}]"
        if "path" not in raw:
            raise SettingError(f"{prefix}: no 'path' key, expected the path of a .mlmodel or .mlpackage")
        path = raw["path"]
        if not isinstance(path, str) or not path.strip():
            raise SettingError(f"{prefix}.path: got {_kind(path)}, expected the path of a .mlmodel or .mlpackage")
        settings = {}
        for key, item in raw.items():
            if key == "path":
                continue
            key_where = f"{prefix}.{key}"
            allowed = per_model_keys()
            dest = _dest(key, key_where, known, allowed=("path", *allowed))
            if key not in allowed:
                raise SettingError(
                    f"{key_where}: '{key}' is the same for every model; set it at the top of [{TABLE}] "
                    f"or on the command line (a model entry takes: path, {', '.join(allowed)})"
                )
            settings[dest] = TableValue(_text(key, item, key_where), key_where)
        entries.append(ModelEntry(index=index, path=TableValue(path, f"{prefix}.path"), settings=settings))
    return entries


def _dest(key: str, where: str, known: dict[str, str], allowed: tuple[str, ...]) -> str:
    """The option dest of a table key; unknown keys (and ``coreml_`` spellings) are errors."""
    if key in known:
        return known[key]
    hint = ""
    if key.startswith(PREFIX) and key[len(PREFIX):] in known:
        hint = f" (write '{key[len(PREFIX):]}': table keys are the ini keys without 'coreml_')"
    elif key.replace("-", "_") in known:
        hint = f" (write '{key.replace('-', '_')}')"
    raise SettingError(f"{where}: unknown key '{key}'{hint}; expected one of {', '.join(allowed)}")


def _text(key: str, value: Any, where: str) -> str:
    """The ini-style text of a TOML value, after checking its type fits the setting."""
    threshold = any(f.option_dest == PREFIX + key for f in catalogue.threshold_figures())
    if key == "variants" and not isinstance(value, (str, list)):
        # 8 or true would read as a recipe named '8' and fail without naming this key.
        raise SettingError(f"{where}: got {_kind(value)}, expected a string such as \"q8,q4\" or a list such as [\"q8\", \"q4\"]")
    if isinstance(value, bool):
        return "true" if value else "false"  # a switch; other settings reject it when validated
    if isinstance(value, (int, float)):
        return repr(value)
    if threshold:
        if isinstance(value, str) and _is_number(value):  # "0.9" copied from an ini file
            raise SettingError(f"{where}: got the string {value!r}, expected a number (write {value.strip()} without quotes)")
        raise SettingError(f"{where}: got {_kind(value)}, expected a number")
    if key == "variants" and isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise SettingError(f"{where}: got {value!r}, expected a list of recipe names such as [\"q8\", \"q4\"]")
        return ",".join(value)
    if isinstance(value, str):
        return value
    raise SettingError(f"{where}: got {_kind(value)}, expected a string")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _kind(value: Any) -> str:
    """How a TOML value reads in an error."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return f"an array {value!r}"
    return repr(value)
