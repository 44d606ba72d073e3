"""JSON report: strict JSON, atomic write, and a lossless round trip through RunResults."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from pytest_coreml_quality.errors import CoreMLQualityError
from pytest_coreml_quality.report.json_report import decode_floats, read_json, write_json
from pytest_coreml_quality.results import SCHEMA_VERSION, RunResults
from tests.report.sample import LONG_RECIPE, make_run


def _reject_constant(name: str) -> None:
    raise AssertionError(f"non-standard JSON constant {name} in the report")


def test_round_trip_keeps_every_figure(tmp_path: Path) -> None:
    run = make_run()
    path = write_json(tmp_path / "out" / "report.json", run)
    assert path == tmp_path / "out" / "report.json"
    back = read_json(path)
    assert back == run  # dataclass equality: every variant, metric, per-image value, check
    base = back.models["TinySeg.mlmodel"].variants["base"]
    assert math.isinf(base.drift["psnr"])
    worst = back.models["TinySeg.mlmodel"].variants[LONG_RECIPE].checks[0].worst
    assert worst[0] == ("scene_05.jpg", pytest.approx(0.2025)) and isinstance(worst[0], tuple)


def test_file_is_strict_json_with_schema_versions_and_summary(tmp_path: Path) -> None:
    run = make_run()
    path = write_json(tmp_path / "report.json", run)
    data = json.loads(path.read_text(), parse_constant=_reject_constant)
    assert data["schema"] == SCHEMA_VERSION
    assert data["versions"] == {"coremltools": "9.0", "numpy": "2.0"}
    model = data["models"]["TinySeg.mlmodel"]
    assert model["content_hash"] == "0123456789abcdef" * 4
    assert model["variants"]["base"]["drift"]["psnr"] == "inf"
    assert model["variants"]["q8"]["per_image"]["scene_03.jpg"]["iou"] == pytest.approx(1.0 - 0.01 * 4)
    summary = data["summary"]["TinySeg.mlmodel"]
    assert list(summary) == list(run.models["TinySeg.mlmodel"].variants)
    assert summary["base"]["verdict"] == "-"
    assert summary["q8"]["verdict"] == "PASS"
    assert summary["prune50+pal4-int8lut"]["verdict"] == "FAIL"
    check = run.models["TinySeg.mlmodel"].variants["prune50+pal4-int8lut"].checks[0]
    assert summary["prune50+pal4-int8lut"]["failed_checks"] == [f"{check.check} {check.describe()}"]
    assert summary["q8"]["iou"] == pytest.approx(run.models["TinySeg.mlmodel"].variants["q8"].metrics["iou"])
    assert summary["q8"]["drift_mae"] == pytest.approx(run.models["TinySeg.mlmodel"].variants["q8"].drift["mae"])
    assert summary["q8"]["size_mb"] == pytest.approx(run.models["TinySeg.mlmodel"].variants["q8"].size_mb)
    assert summary["q8"]["load_speedup"] == pytest.approx(1.5 / 0.06)
    # RunResults.from_dict reads the file itself once the non-finite markers are decoded.
    assert RunResults.from_dict(decode_floats(data)) == run


def test_empty_versions_are_filled_with_the_installed_tools(tmp_path: Path) -> None:
    path = write_json(tmp_path / "r.json", RunResults())
    data = json.loads(path.read_text())
    assert "numpy" in data["versions"] and data["models"] == {} and data["summary"] == {}


def test_write_replaces_atomically_and_is_readable(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text("old")
    write_json(path, make_run())
    assert json.loads(path.read_text())["schema"] == SCHEMA_VERSION
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # like open(), not the temp file's 0600


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "file not found"), ("{not json", "not valid JSON"), ("[1, 2]", "holds a JSON list")],
)
def test_unreadable_report_names_the_file(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CoreMLQualityError) as info:
        read_json(path)
    assert str(path) in str(info.value) and message in str(info.value)
