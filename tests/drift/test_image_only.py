"""Image-only golden sets: no ground truth, drift against the base model only (issue 12, part 1)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from ..conftest import FIXTURES

MODEL = FIXTURES / "models" / "TinySeg.mlmodel"
GOLDEN = FIXTURES / "golden"


pytestmark = pytest.mark.usefixtures("plain_run_environment")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture golden set's photos, without their masks."""
    root = tmp_path_factory.mktemp("photos")
    shutil.copytree(GOLDEN / "images", root / "images")
    return root



def _run(pytester: pytest.Pytester, photos: Path, cache: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest(
        f"--coreml-model={MODEL}", f"--coreml-dataset={photos}", "--coreml-variants=q8,q2",
        f"--coreml-cache-dir={cache}", "-p", "no:randomly", "-k", "quality", *args,
    )


def test_image_only_set_measures_drift_and_shows_truth_figures_as_absent(
    pytester: pytest.Pytester, photos: Path, shared_cache: Path
) -> None:
    report = pytester.path / "r.json"
    result = _run(pytester, photos, shared_cache, f"--coreml-report-json={report}")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*dataset has no ground-truth masks: figures against the ground truth are not measured*"])
    rows = {m.group(1): line for line in result.stdout.lines if (m := re.match(r"^(base|q8|q2)\s", line))}
    assert set(rows) == {"base", "q8", "q2"}
    assert re.search(r"\bq2\s.*\s-\s", rows["q2"])  # IoU etc. shown as '-'
    summary = json.loads(report.read_text())["summary"]["TinySeg.mlmodel"]
    assert summary["q2"]["iou"] is None and summary["q2"]["mae"] is None  # needs ground truth
    assert summary["base"]["drift_mae"] is None  # the base is the reference
    assert 0 < summary["q8"]["drift_mae"] < summary["q2"]["drift_mae"]
    assert summary["q2"]["drift_flip_share"] is not None and summary["q2"]["drift_psnr"] is not None


def test_image_only_set_judges_drift_bounds(pytester: pytest.Pytester, photos: Path, shared_cache: Path) -> None:
    result = _run(pytester, photos, shared_cache, "--coreml-max-drift=0.02")
    # 2-bit weights move the masks a lot; 8-bit ones barely.
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*TinySeg.mlmodel [[]q2[]]: 1 threshold(s) broken*", "*drift_mae = *, bound <= 0.02*"])
