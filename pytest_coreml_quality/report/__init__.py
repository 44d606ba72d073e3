"""Reports of a run: terminal table, JSON file, self-contained HTML page, JUnit properties.

All of them read :class:`pytest_coreml_quality.results.RunResults` and nothing else.
The HTML report imports Pillow lazily, so importing this package stays cheap.
"""

from pytest_coreml_quality.report.json_report import read_json, write_json
from pytest_coreml_quality.report.junit import junit_properties
from pytest_coreml_quality.report.terminal import render_table, worst_image_lines

__all__ = [
    "junit_properties",
    "read_json",
    "render_table",
    "worst_image_lines",
    "write_html",
    "write_json",
]


def __getattr__(name: str) -> object:
    # write_html pulls in Pillow and numpy; only load them when an HTML report is asked for.
    if name in ("write_html", "ImageSource"):
        from pytest_coreml_quality.report import html

        return getattr(html, name)
    raise AttributeError(name)
