"""A recipe that compressed nothing: its note in the terminal table, HTML, JSON and baselines."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pytest_coreml_quality.baseline import load_baseline, save_baseline
from pytest_coreml_quality.errors import CoreMLQualityError
from pytest_coreml_quality.report.html import render_html
from pytest_coreml_quality.report.json_report import read_json, write_json
from pytest_coreml_quality.report.terminal import render_model, render_table
from pytest_coreml_quality.results import RunResults
from tests.report.sample import LONG_RECIPE, make_run

MODEL = "TinySeg.mlmodel"
NOTE = "q8: no change, weights already 8-bit (LUT)"
LONG_NOTE = f"{LONG_RECIPE}: weights already 8-bit (LUT) were dequantized, then re-quantized to 4-bit, and more words to wrap"


def _run() -> RunResults:
    run = make_run()
    variants = run.models[MODEL].variants
    variants["q8"].unchanged, variants["q8"].note = True, NOTE
    variants[LONG_RECIPE].unchanged, variants[LONG_RECIPE].note = False, LONG_NOTE
    variants["prune50+pal4-int8lut"].unchanged = False
    return run


def test_terminal_table_has_a_note_line_per_affected_variant() -> None:
    lines = render_model(_run().models[MODEL], width=80)
    notes = [i for i, line in enumerate(lines) if line.startswith("note: ")]
    assert [lines[i] for i in notes][0] == f"note: {NOTE}"
    # Under the table (after the last row), in variant order, wrapped to the width.
    last_row = max(i for i, line in enumerate(lines) if line.split()[:1] and line.split()[0].startswith("prune50"))
    assert notes[0] > last_row and len(notes) == 2
    assert lines[notes[1]].startswith(f"note: {LONG_RECIPE}: weights already 8-bit (LUT)")
    assert lines[notes[1] + 1].startswith("      ") and "wrap" in " ".join(lines[notes[1]:])
    assert max(len(line) for line in lines) <= 80


def test_no_note_no_line() -> None:
    assert not any(line.startswith("note:") for line in render_table(make_run(), width=100))


class _Rows(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, list[str]]] = []
        self._cls = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append((dict(attrs).get("class") or "", []))
        elif tag == "td":
            self.rows[-1][1].append("")

    def handle_data(self, data: str) -> None:
        if self.rows and self.rows[-1][1]:
            self.rows[-1][1][-1] += data


def test_html_figures_table_has_the_note_under_its_variant_row() -> None:
    parser = _Rows()
    parser.feed(render_html(_run(), None))
    rows = parser.rows
    q8_row = next(i for i, (cls, cells) in enumerate(rows) if cls == "variant" and cells[0] == "q8")
    cls, cells = rows[q8_row + 1]
    assert cls == "variant-note" and cells[1].strip() == NOTE
    assert sum(1 for cls, _ in rows if cls == "variant-note") == 2
    base_row = next(i for i, (cls, cells) in enumerate(rows) if cls == "variant" and cells[0] == "base")
    assert rows[base_row + 1][0] == "variant"  # no note, no extra row


def test_json_report_has_the_fields_and_the_summary(tmp_path: Path) -> None:
    run = _run()
    path = write_json(tmp_path / "r.json", run)
    data = json.loads(path.read_text())
    q8 = data["models"][MODEL]["variants"]["q8"]
    assert (q8["unchanged"], q8["note"]) == (True, NOTE)
    summary = data["summary"][MODEL]
    assert (summary["q8"]["unchanged"], summary["q8"]["note"]) == (True, NOTE)
    assert (summary["base"]["unchanged"], summary["base"]["note"]) == (None, "")
    assert summary["prune50+pal4-int8lut"]["unchanged"] is False
    assert read_json(path) == run


def test_baseline_keeps_the_note_and_old_baselines_without_it_still_load(tmp_path: Path) -> None:
    run = _run()
    path = save_baseline(tmp_path / "b.json", run)
    loaded, _ = load_baseline(path)
    q8 = loaded.models[MODEL].variants["q8"]
    assert (q8.unchanged, q8.note) == (True, NOTE)
    # A baseline written before the fields existed.
    data = json.loads(path.read_text())
    for variant in data["models"][MODEL]["variants"].values():
        del variant["unchanged"], variant["note"]
    path.write_text(json.dumps(data))
    old, _ = load_baseline(path)
    assert (old.models[MODEL].variants["q8"].unchanged, old.models[MODEL].variants["q8"].note) == (None, "")
    assert old.models[MODEL].variants["q8"].size_bytes == run.models[MODEL].variants["q8"].size_bytes


def test_baseline_with_a_wrong_unchanged_value_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text('{"schema": 1, "models": {"M": {"variants": {"q8": {"unchanged": "yes"}}}}}')
    with pytest.raises(CoreMLQualityError) as info:
        load_baseline(path)
    message = str(info.value)
    assert "models.M.variants.q8.unchanged" in message and "true, false or null" in message and str(path) in message
