"""The README documents every option the plugin registers (the table is easy to let drift)."""

from __future__ import annotations

from pytest_coreml_quality.settings import all_options
from tests.conftest import REPO


def test_every_option_and_ini_key_is_in_the_readme_table() -> None:
    rows = [line for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines() if line.startswith("| `--coreml-")]
    documented = {row.split("`")[1].split("=")[0]: row.split("`")[3] for row in rows}
    for spec in all_options():
        assert documented.get(spec.flag) == spec.ini, f"README options table: {spec.flag} / {spec.ini} missing or wrong"
