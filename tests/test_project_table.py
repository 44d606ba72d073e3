"""``[tool.coreml-quality]`` in pyproject.toml: reading the table and merging per-model settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_coreml_quality.errors import SettingError
from pytest_coreml_quality.projecttable import ProjectTable, find_pyproject, read_project_table
from pytest_coreml_quality.settings import Settings, all_options, resolve

TWO_MODELS = """
[tool.coreml-quality]
dataset = "tests/golden"
min_iou = 0.5

[[tool.coreml-quality.models]]
path = "Models/ISNet.mlmodel"
variants = "q8,q4"
min_iou = 0.9

[[tool.coreml-quality.models]]
path = "Models/PersonSeg.mlpackage"
mask = "channel:1"
variants = ["int8", "pal4"]
channel_order = "bgr"
normalization = "-1..1"
max_drift = 0.05
"""


def table(tmp_path: Path, text: str) -> ProjectTable | None:
    file = tmp_path / "pyproject.toml"
    file.write_text(text, encoding="utf-8")
    return read_project_table(file, tuple(spec.dest for spec in all_options()))


def settings_from(
    tmp_path: Path, text: str, options: dict[str, Any] | None = None, ini: dict[str, Any] | None = None
) -> Settings:
    options, ini = options or {}, ini or {}
    return resolve(options.get, lambda name: ini.get(name), tmp_path / "cwd", tmp_path, table=table(tmp_path, text))


def error(tmp_path: Path, text: str, **kwargs: Any) -> str:
    with pytest.raises(SettingError) as info:
        settings_from(tmp_path, text, **kwargs)
    return str(info.value)


def test_two_models_get_their_own_settings(tmp_path: Path) -> None:
    s = settings_from(tmp_path, TWO_MODELS)
    assert s.models == (tmp_path / "Models/ISNet.mlmodel", tmp_path / "Models/PersonSeg.mlpackage")
    assert s.dataset == tmp_path / "tests/golden"
    isnet, person = s.per_model
    assert (isnet.variants, isnet.mask, isnet.channel_order, isnet.normalization) == (("q8", "q4"), "auto", "RGB", "0..1")
    assert isnet.thresholds == {"coreml_min_iou": 0.9}
    assert (person.variants, person.mask, person.channel_order, person.normalization) == (
        ("int8", "pal4"),
        "channel:1",
        "BGR",
        "-1..1",
    )
    # The top-level bound applies where the entry does not set its own.
    assert person.thresholds == {"coreml_min_iou": 0.5, "coreml_max_drift": 0.05}
    assert person.origin.endswith("tool.coreml-quality.models[1]")
    assert person.where("coreml_mask").endswith("tool.coreml-quality.models[1].mask")


def test_command_line_flags_apply_to_every_model_and_win(tmp_path: Path) -> None:
    s = settings_from(
        tmp_path, TWO_MODELS, options={"coreml_min_iou": "0.7", "coreml_mask": "prob", "coreml_variants": "fp16"}
    )
    for own in s.per_model:
        assert own.thresholds["coreml_min_iou"] == 0.7
        assert own.mask == "prob"
        assert own.variants == ("fp16",)
    assert s.per_model[1].thresholds["coreml_max_drift"] == 0.05  # not on the command line: the entry's stays


def test_logits_flag_overrides_an_entry_mask(tmp_path: Path) -> None:
    s = settings_from(tmp_path, TWO_MODELS, options={"coreml_logits": "true"})
    assert [own.mask for own in s.per_model] == ["logits", "logits"]


def test_command_line_models_replace_the_tables_and_say_so(tmp_path: Path) -> None:
    s = settings_from(tmp_path, TWO_MODELS, options={"coreml_model": ["Other.mlmodel"]})
    assert s.models == (tmp_path / "cwd" / "Other.mlmodel",)
    assert s.per_model == ()
    assert s.for_model(0).thresholds == {"coreml_min_iou": 0.5}  # top-level settings still apply
    assert len(s.notes) == 1 and "2 model(s) listed in [tool.coreml-quality]" in s.notes[0]


def test_no_table_means_no_table_settings(tmp_path: Path) -> None:
    assert table(tmp_path, "[tool.pytest.ini_options]\naddopts = '-q'\n") is None
    s = settings_from(tmp_path, "[project]\nname = 'app'\n", options={"coreml_model": ["A.mlmodel"]})
    assert s.per_model == () and s.notes == ()


def test_entry_switches_and_logits(tmp_path: Path) -> None:
    s = settings_from(
        tmp_path,
        """
        [[tool.coreml-quality.models]]
        path = "A.mlmodel"
        logits = true
        normalize_predictions = true
        [[tool.coreml-quality.models]]
        path = "B.mlmodel"
        """,
        ini={"coreml_mask": "channel:0"},
    )
    a, b = s.per_model
    assert (a.mask, a.normalize_predictions) == ("logits", True)
    assert (b.mask, b.normalize_predictions) == ("channel:0", False)


def test_find_pyproject_prefers_the_inifile(tmp_path: Path) -> None:
    assert find_pyproject(tmp_path, None) is None
    (tmp_path / "pyproject.toml").write_text("", encoding="utf-8")
    assert find_pyproject(tmp_path, None) == tmp_path / "pyproject.toml"
    other = tmp_path / "sub" / "pyproject.toml"
    assert find_pyproject(tmp_path, other) == other
    assert find_pyproject(tmp_path, tmp_path / "pytest.ini") == tmp_path / "pyproject.toml"


@pytest.mark.parametrize(
    ("text", "where", "expected"),
    [
        ('[[tool.coreml-quality.models]]\npath = "A.mlmodel"\nmask = "chanel:1"', "models[0].mask", "expected auto, prob, logits"),
        (
            '[[tool.coreml-quality.models]]\npath = "A.mlmodel"\n[[tool.coreml-quality.models]]\npath = "B.mlmodel"\nmask = 3',
            "models[1].mask",
            "got '3'",
        ),
        ('[[tool.coreml-quality.models]]\npath = "A.mlmodel"\nmin_iou = 1.5', "models[0].min_iou", "expected a number between"),
        ('[[tool.coreml-quality.models]]\npath = "A.mlmodel"\nmin_iou = "high"', "models[0].min_iou", "expected a number"),
        ('[[tool.coreml-quality.models]]\npath = "A.mlmodel"\nchannel_order = "RBG"', "models[0].channel_order", "expected one of RGB, BGR"),
        ('[[tool.coreml-quality.models]]\npath = "A.mlmodel"\ninput_layout = "CHW"', "models[0].input_layout", "expected one of auto"),
        ('[[tool.coreml-quality.models]]\npath = "A.mlmodel"\nnormalization = "mean=0;std=0"', "models[0].normalization", "expected"),
        ('[[tool.coreml-quality.models]]\npath = "A.mlmodel"\nnormalize_predictions = "maybe"', "models[0].normalize_predictions", "expected one of true"),
        ('[[tool.coreml-quality.models]]\npath = "A.mlmodel"\nvariants = ["q8", 4]', "models[0].variants", "expected a list of recipe names"),
        ('[[tool.coreml-quality.models]]\npath = "A.mlmodel"\nvariants = {a = 1}', "models[0].variants", "expected a string"),
        ('[[tool.coreml-quality.models]]\npath = "A.mlmodel"\nvariants = 8', "models[0].variants", "got 8, expected a string such as"),
        ('[tool.coreml-quality]\nvariants = true', "tool.coreml-quality.variants", "got True, expected a string such as"),
        ('[tool.coreml-quality]\nmin_iou = "0.9"', "tool.coreml-quality.min_iou", "got the string '0.9', expected a number (write 0.9 without quotes)"),
        ('[[tool.coreml-quality.models]]\npath = "A.mlmodel"\nbackend = "onnx"', "models[0].backend", "same for every model"),
        ('[[tool.coreml-quality.models]]\npath = "A.mlmodel"\ncoreml_min_iou = 0.9', "models[0].coreml_min_iou", "write 'min_iou'"),
        ('[[tool.coreml-quality.models]]\npath = "A.mlmodel"\nmin-iou = 0.9', "models[0].min-iou", "write 'min_iou'"),
        ('[[tool.coreml-quality.models]]\npath = "A.mlmodel"\nmin_jou = 0.9', "models[0].min_jou", "expected one of path, variants"),
        ('[[tool.coreml-quality.models]]\nvariants = "q8"', "models[0]", "no 'path' key"),
        ('[[tool.coreml-quality.models]]\npath = 3', "models[0].path", "expected the path of a .mlmodel"),
        ('[[tool.coreml-quality.models]]\npath = "A.mlmodel"\n[[tool.coreml-quality.models]]\npath = "./A.mlmodel"', "models[1].path", "already listed at"),
        (
            '[[tool.coreml-quality.models]]\npath = "A.mlmodel"\nlogits = true\nmask = "channel:1"',
            "models[0].logits = true conflicts",
            "expected one of them",
        ),
        ("[tool.coreml-quality]\nmodels = \"A.mlmodel\"", "tool.coreml-quality.models", "expected an array of tables"),
        ('[tool.coreml-quality]\nmodel = "A.mlmodel"', "tool.coreml-quality.model", "[[tool.coreml-quality.models]]"),
        ('[tool.coreml-quality]\nbackend = "tpu"', "tool.coreml-quality.backend", "expected one of auto, coreml, onnx"),
        ('[tool.coreml-quality]\nload_rounds = 0', "tool.coreml-quality.load_rounds", "expected a whole number"),
        ('[tool.coreml-quality]\nmax_size_mb = -1', "tool.coreml-quality.max_size_mb", "expected a number >= 0"),
        ("[tool]\ncoreml-quality = 1", "tool.coreml-quality", "expected a table"),
    ],
)
def test_bad_entries_name_the_file_the_table_path_and_what_was_expected(
    tmp_path: Path, text: str, where: str, expected: str
) -> None:
    message = error(tmp_path, "\n".join(line.strip() for line in text.splitlines()))
    assert f"pyproject.toml ({tmp_path / 'pyproject.toml'})" in message
    assert f"{where}" in message
    assert expected in message
    assert "--coreml-" not in message.split(where)[0]  # named by its table path, not a flag


def test_a_setting_in_the_table_and_an_ini_key_is_an_error(tmp_path: Path) -> None:
    message = error(tmp_path, '[tool.coreml-quality]\ndataset = "golden"', ini={"coreml_dataset": "other"})
    assert "tool.coreml-quality.dataset" in message and "ini key 'coreml_dataset'" in message


def test_table_models_and_ini_models_is_an_error(tmp_path: Path) -> None:
    message = error(tmp_path, TWO_MODELS, ini={"coreml_model": ["Other.mlmodel"]})
    assert "tool.coreml-quality.models[0]" in message and "ini key 'coreml_model'" in message


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    message = error(tmp_path, "[tool.coreml-quality\n")
    assert str(tmp_path / "pyproject.toml") in message and "not valid TOML" in message


def test_invalid_toml_without_our_table_is_left_alone(tmp_path: Path) -> None:
    assert table(tmp_path, "[tool.other\nkey = 1\n") is None
