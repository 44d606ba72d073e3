"""Sharding beyond masks (issue 14, item 4): tensor and classifier outputs, a baseline judged in
the merge run, and compute-unit lanes / two backends. Each merge is compared with one job
field by field (JSON without timings and paths, table, outcomes, JUnit properties)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .conftest import FIXTURES
from .drift.models import save_classifier_model, save_two_output_model
from .fake_coremltools import FakeCoreMLTools, install
from .test_shard_merge import _properties, comparable, differences, merge, table

GOLDEN = FIXTURES / "golden"
SEG = FIXTURES / "models" / "TinySeg.mlmodel"

pytestmark = pytest.mark.usefixtures("plain_run_environment")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A classifier and a two-output tensor model; a labelled image-only set and a weighted manifest."""
    root = tmp_path_factory.mktemp("shard-kinds")
    photos = sorted((GOLDEN / "images").iterdir())[:9]
    (root / "labelled" / "images").mkdir(parents=True)
    for photo in photos:
        shutil.copy2(photo, root / "labelled" / "images" / photo.name)
    # Labels cycling through the classes: some top-1 and top-5 hits, some misses.
    rows = [f"{photo.name},class{k % 4}" for k, photo in enumerate(photos)]
    (root / "labelled" / "labels.csv").write_text("image,label\n" + "\n".join(rows) + "\n")
    # Weighted, in reverse name order (shards split by sorted id): weights and row order must survive the merge.
    weighted = [f"{photo},{0.5 + k}" for k, photo in enumerate(reversed(photos))]
    (root / "weighted.csv").write_text("image,weight\n" + "\n".join(weighted) + "\n")
    return {
        "classifier": save_classifier_model(root / "Classifier.mlmodel"),
        "two": save_two_output_model(root / "DepthAndFeatures.mlmodel"),
        "weighted": root / "weighted.csv",
        "labelled": root / "labelled",
        "cache": root / "cache",
    }


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:randomly", "-p", "no:cacheprovider", "--coreml-load-rounds=1", *args)


def _same_as_one_job(
    pytester: pytest.Pytester, name: str, common: tuple[str, ...], counts: tuple[int, ...] = (2, 3),
    merge_args: tuple[str, ...] = (), single_args: tuple[str, ...] = (), shard_passed: int | None = None,
) -> dict:
    """Run one job and ``count`` shards + a merge for each count; assert the merge equals the job. Returns the job's JSON."""
    one, junit_one = pytester.path / f"{name}-one.json", pytester.path / f"{name}-one.xml"
    single = _run(pytester, *common, *single_args, f"--coreml-report-json={one}", f"--junitxml={junit_one}")
    assert "Traceback" not in single.stdout.str() + single.stderr.str()
    outcomes = single.parseoutcomes()
    for count in counts:
        folder = pytester.path / f"{name}-shards{count}"
        for index in range(1, count + 1):
            part = _run(pytester, *common, f"--coreml-shard={index}/{count}", f"--coreml-report-json={folder}/s{index}.json")
            assert part.ret == 0, part.stdout.str() + part.stderr.str()
            if shard_passed is not None:
                part.assert_outcomes(passed=shard_passed)
        out, junit = pytester.path / f"{name}-merged{count}.json", pytester.path / f"{name}-merged{count}.xml"
        merged = merge(
            pytester, *[a for a in common if a.startswith("-k") or not a.startswith("-")], *merge_args,
            f"--coreml-merge={folder}", f"--coreml-report-json={out}", f"--junitxml={junit}",
        )
        assert merged.parseoutcomes() == outcomes, merged.stdout.str()
        assert table(merged) == table(single)
        found = differences(comparable(json.loads(out.read_text())), comparable(json.loads(one.read_text())))
        assert not found, found[:10]
        assert _properties(junit) == _properties(junit_one) and _properties(junit_one)
    return json.loads(one.read_text())


def _verdicts(report: dict, model: str) -> dict[str, bool]:
    """Variant -> whether all its checks passed (the thresholds are chosen so that some fail)."""
    variants = report["models"][model]["variants"]
    return {key: all(c["passed"] for c in v["checks"]) for key, v in variants.items()}


def test_classifier_shards_merge_to_one_job(pytester: pytest.Pytester, files: dict[str, Path]) -> None:
    common = (
        f"--coreml-model={files['classifier']}", f"--coreml-dataset={files['labelled']}", "--coreml-variants=q8,q2",
        f"--coreml-cache-dir={files['cache']}", "-k", "not load",
        "--coreml-min-top1-agreement=0.99", "--coreml-min-top5=0.5", "--coreml-max-kl=0.01",
    )
    page = pytester.path / "merged.html"
    data = _same_as_one_job(pytester, "classifier", common, shard_passed=6, merge_args=(f"--coreml-report-html={page}",))
    assert "Classifier.mlmodel" in page.read_text() and "<img" not in page.read_text()  # no photos on a merge job
    summary = data["summary"]["Classifier.mlmodel"]
    # Figures a merge must rebuild from per-image values: accuracy, agreement, overlap, KL.
    assert 0 < summary["base"]["top1"] < summary["base"]["top5"] < 1
    assert summary["q2"]["drift_top1_agreement"] < 1 and summary["q2"]["drift_kl"] > 0
    assert _verdicts(data, "Classifier.mlmodel") == {"base": True, "q8": True, "q2": False}


def test_tensor_shards_merge_to_one_job(pytester: pytest.Pytester, files: dict[str, Path]) -> None:
    """Two outputs: per-output figures and the worst of them (means, a min and a max) merge exactly."""
    common = (
        f"--coreml-model={files['two']}", f"--coreml-dataset={files['weighted']}", "--coreml-variants=q8,q2",
        f"--coreml-cache-dir={files['cache']}", "-k", "not load", "--coreml-min-cosine=0.9999",
    )
    data = _same_as_one_job(pytester, "tensor", common, shard_passed=6)
    assert _verdicts(data, "DepthAndFeatures.mlmodel") == {"base": True, "q8": True, "q2": False}
    q2 = data["summary"]["DepthAndFeatures.mlmodel"]["q2"]
    assert q2["drift_tensor_mae"] > 0 and q2["drift_tensor_psnr"] is not None
    drift = data["models"]["DepthAndFeatures.mlmodel"]["variants"]["q2"]["drift"]
    assert {"tensor_psnr[depth]", "tensor_psnr[features]", "tensor_max_abs[depth]"} <= set(drift)


# --- a baseline judged by the merge run ------------------------------------------------------------


def test_merge_run_compares_with_a_baseline_as_one_job(pytester: pytest.Pytester, shared_cache: Path) -> None:
    common = (
        f"--coreml-model={SEG}", f"--coreml-dataset={GOLDEN}", "--coreml-variants=q8,q4", f"--coreml-cache-dir={shared_cache}",
        "-k", "not load", "--coreml-min-iou=0.5",
    )
    saved = pytester.path / "saved.json"
    _run(pytester, *common, f"--coreml-save-baseline={saved}").assert_outcomes(passed=6)
    # The baseline claims q4 was better than it is: its baseline item fails, the others pass.
    data = json.loads(saved.read_text())
    q4 = data["models"]["TinySeg.mlmodel"]["variants"]["q4"]
    q4["metrics"]["iou"] = min(1.0, q4["metrics"]["iou"] + 0.05)
    q4["drift"]["mae"] = q4["drift"]["mae"] / 10
    baseline = pytester.path / "baseline.json"
    baseline.write_text(json.dumps(data))
    args = (f"--coreml-baseline={baseline}", "--coreml-baseline-tolerance-metric=0.001")
    one = _same_as_one_job(pytester, "baseline", common, counts=(2,), merge_args=args, single_args=args)
    checks = one["models"]["TinySeg.mlmodel"]["variants"]["q4"]["checks"]
    assert {c["metric"] for c in checks if c["check"] == "baseline" and not c["passed"]} == {"iou", "drift_mae"}
    failing = _run(pytester, "-k", "baseline", f"--coreml-merge={pytester.path / 'baseline-shards2'}", *args)
    failing.assert_outcomes(passed=2, failed=1)
    failing.stdout.fnmatch_lines([f"*TinySeg.mlmodel [[]q4[]]: worse than baseline {baseline}*", "*iou*"])


# --- lanes: compute units and two backends ----------------------------------------------------------------


@pytest.fixture(scope="module")
def small_golden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six of the golden images: every lane scores them, so fewer keep this fast."""
    root = tmp_path_factory.mktemp("golden6")
    for sub in ("images", "masks"):
        (root / sub).mkdir()
        for path in sorted((GOLDEN / sub).iterdir())[:6]:
            shutil.copy2(path, root / sub / path.name)
    return root


def test_compute_unit_lanes_shard_and_merge_to_one_job(pytester: pytest.Pytester, shared_cache: Path, small_golden: Path) -> None:
    common = (
        f"--coreml-model={SEG}", f"--coreml-dataset={small_golden}", "--coreml-variants=q8", f"--coreml-cache-dir={shared_cache}",
        "-k", "not load", "--coreml-backend=onnx", "--coreml-precision=fp16", "--coreml-compute-units=CPU_ONLY,CPU_AND_NE",
        "--coreml-max-drift=0.0001",
    )
    one = _same_as_one_job(pytester, "units", common, counts=(2,))
    assert set(one["summary"]["TinySeg.mlmodel"]) == {f"{r}@{u}" for r in ("base", "q8") for u in ("CPU_ONLY", "CPU_AND_NE")}


def test_two_backends_shard_and_merge_to_one_job(
    pytester: pytest.Pytester, shared_cache: Path, small_golden: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install(monkeypatch, FakeCoreMLTools(onnx_cache=tmp_path / "fake-onnx"))
    common = (
        f"--coreml-model={SEG}", f"--coreml-dataset={small_golden}", "--coreml-variants=q8", f"--coreml-cache-dir={shared_cache}",
        "-k", "not load", "--coreml-backend=coreml,onnx", "--coreml-compute-units=CPU_ONLY,CPU_AND_NE", "--coreml-max-backend-mae=0",
    )
    one = _same_as_one_job(pytester, "backends", common, counts=(3,))
    fp16 = one["summary"]["TinySeg.mlmodel"]["q8@coreml:CPU_AND_NE"]
    assert fp16["backend_mae"] > 0 and fp16["backend_flip_share"] is not None
