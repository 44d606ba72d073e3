"""Models that are not segmenters, end to end: the HTML report's images and the coreml_predictions fixture."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from ..conftest import FIXTURES
from ..report.test_html_outputs import _sections
from .models import save_classifier_model, save_heatmap_model

GOLDEN = FIXTURES / "golden"

pytestmark = pytest.mark.usefixtures("plain_run_environment")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("outputs-shown")
    shutil.copytree(GOLDEN / "images", root / "photos" / "images")
    return {
        "photos": root / "photos",
        "heatmap": save_heatmap_model(root / "Pose.mlmodel"),
        "classifier": save_classifier_model(root / "Classifier.mlmodel"),
        "cache": root / "cache",
    }


def _run(pytester: pytest.Pytester, files: dict[str, Path], model: str, page: Path) -> pytest.RunResult:
    return pytester.runpytest(
        f"--coreml-model={files[model]}", f"--coreml-dataset={files['photos']}", "--coreml-variants=q8,q2",
        f"--coreml-cache-dir={files['cache']}", f"--coreml-report-html={page}", "-p", "no:randomly", "-v", "-k", "not load",
    )


def _ids() -> list[str]:
    return sorted(p.stem for p in (GOLDEN / "images").iterdir())


def test_heatmap_model_page_and_raw_predictions(pytester: pytest.Pytester, files: dict[str, Path]) -> None:
    pytester.makepyfile(
        """
        import numpy as np
        from pytest_coreml_quality.fixtures import VariantHandle

        def test_outputs(coreml_predictions, coreml_dataset, coreml_variant, coreml_session):
            assert set(coreml_predictions) == set(coreml_dataset.ids)
            for arr in coreml_predictions.values():
                assert isinstance(arr, np.ndarray) and arr.dtype == np.float32 and arr.shape == (5, 24, 24)
            if coreml_variant.recipe != "base":
                base = VariantHandle(coreml_session, coreml_variant.model_key, "base").predictions()
                assert any(not np.array_equal(base[s], coreml_predictions[s]) for s in base)
        """
    )
    page = pytester.path / "r.html"
    result = _run(pytester, files, "heatmap", page)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*test_outputs[[]base[]] PASSED*", "*test_outputs[[]q2[]] PASSED*"])
    sections = _sections(page.read_text())
    assert sorted(s["heading"].split()[0] for s in sections) == _ids()
    errors = []
    for s in sections:
        name = s["heading"].split()[0]
        # the photo, and one heat map of |variant - base| per variant (the base has none)
        assert [img["alt"] for img in s["imgs"]] == [f"photo {name}", f"q8 vs base {name}", f"q2 vs base {name}"]
        found = re.search(r"\(worst: q[28], tensor MAE ([0-9.]+)\)$", s["heading"])
        assert found, s["heading"]
        errors.append(float(found.group(1)))
    assert errors == sorted(errors, reverse=True)  # worst first


def test_classifier_page_and_class_probabilities(pytester: pytest.Pytester, files: dict[str, Path]) -> None:
    pytester.makepyfile(
        """
        import pytest

        def test_probabilities(coreml_predictions, coreml_dataset):
            assert set(coreml_predictions) == set(coreml_dataset.ids)
            for probs in coreml_predictions.values():
                assert list(probs) == [f"class{i}" for i in range(10)]
                assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
        """
    )
    page = pytester.path / "r.html"
    result = _run(pytester, files, "classifier", page)
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    # the fixture test passes for each variant (the quality items' verdicts do not matter here)
    result.stdout.fnmatch_lines([f"*test_probabilities[[]{recipe}[]] PASSED*" for recipe in ("base", "q8", "q2")])
    sections = _sections(page.read_text())
    assert sorted(s["heading"].split()[0] for s in sections) == _ids()
    for s in sections:
        assert s["rows"][0] == ["#", "base", "q8", "q2"]
        assert [row[0] for row in s["rows"][1:]] == ["1", "2", "3", "4", "5"]
        for column in (1, 2, 3):
            probs = [float(row[column].split()[1]) for row in s["rows"][1:]]
            assert all(re.fullmatch(r"class\d", row[column].split()[0]) for row in s["rows"][1:])
            assert probs == sorted(probs, reverse=True)
