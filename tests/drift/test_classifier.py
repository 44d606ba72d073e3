"""Classifier outputs: agreement with the base model, and accuracy against labels.csv (issue 12, part 3)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from pytest_coreml_quality.dataset import Dataset
from pytest_coreml_quality.errors import DatasetError
from pytest_coreml_quality.labels import read_labels
from pytest_coreml_quality.metrics import classifier_drift as cd

from ..conftest import FIXTURES
from .models import save_classifier_model

GOLDEN = FIXTURES / "golden"


# --- per-image figures against independent computations ----------------------------------------


def test_agreement_overlap_mae_and_kl() -> None:
    base = np.array([0.5, 0.2, 0.1, 0.08, 0.06, 0.04, 0.02])
    pred = np.array([0.2, 0.5, 0.1, 0.08, 0.02, 0.04, 0.06])
    assert cd.top1_agreement(pred, base) == 0.0 and cd.top1_agreement(base, base) == 1.0
    # base top 5: {0, 1, 2, 3, 4}; pred top 5: {1, 0, 2, 3, 6} -> 4 shared
    assert cd.top5_overlap(pred, base) == pytest.approx(4 / 5)
    assert cd.prob_mae(pred, base) == pytest.approx((0.3 + 0.3 + 0 + 0 + 0.04 + 0 + 0.04) / 7)
    expected_kl = sum(b * math.log(b / p) for b, p in zip(base, pred))
    assert cd.kl_divergence(pred, base) == pytest.approx(expected_kl)
    assert cd.kl_divergence(base, base) == 0.0


def test_kl_stays_finite_when_the_variant_rules_a_class_out() -> None:
    assert math.isfinite(cd.kl_divergence(np.array([1.0, 0.0]), np.array([0.5, 0.5])))


def test_fewer_than_five_classes_and_accuracy() -> None:
    assert cd.top5_overlap(np.array([0.6, 0.4]), np.array([0.3, 0.7])) == 1.0
    labels = ["cat", "dog", "fox", "owl", "bee", "ant"]
    probs = np.array([0.05, 0.4, 0.3, 0.1, 0.1, 0.05])
    assert cd.accuracy_values(probs, labels, "dog") == {"top1": 1.0, "top5": 1.0}
    assert cd.accuracy_values(probs, labels, "fox") == {"top1": 0.0, "top5": 1.0}
    assert cd.accuracy_values(probs, labels, "ant") == {"top1": 0.0, "top5": 0.0}


# --- labels.csv ----------------------------------------------------------------------------------


def _photos(root: Path, stems: tuple[str, ...] = ("a", "b")) -> Dataset:
    from PIL import Image

    (root / "images").mkdir(parents=True)
    for stem in stems:
        Image.new("RGB", (8, 8), (10, 20, 30)).save(root / "images" / f"{stem}.png")
    return Dataset.open(root)


def test_labels_by_id_file_name_or_relative_path(tmp_path: Path) -> None:
    ds = _photos(tmp_path, ("a", "b", "c"))
    (tmp_path / "labels.csv").write_text("image,label\na,cat\nb.png,dog\nimages/c.png,owl\n")
    assert read_labels(ds) == {"a": "cat", "b": "dog", "c": "owl"}


def test_labels_problems_are_listed_with_the_file(tmp_path: Path) -> None:
    ds = _photos(tmp_path, ("a", "b", "c"))
    (tmp_path / "labels.csv").write_text("image,label\na,cat\na,dog\nzzz,owl\nb,\n")
    with pytest.raises(DatasetError) as info:
        read_labels(ds)
    text = str(info.value)
    assert str(tmp_path / "labels.csv") in text and "line 3: 'a' is labelled twice" in text
    assert "line 4: field 'image': 'zzz' is not an image" in text and "line 5: field 'label' is empty" in text
    assert "no label for b, c" in text


def test_no_labels_file(tmp_path: Path) -> None:
    assert read_labels(_photos(tmp_path)) is None


# --- the plugin, end to end ---------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("plain_run_environment")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A classifier, an image-only set, and a labelled copy whose labels are the base model's answers but one."""
    from pytest_coreml_quality.model import Model
    from pytest_coreml_quality.preprocess import PreprocessSettings, Preprocessor
    from pytest_coreml_quality.runtime import get_backend

    root = tmp_path_factory.mktemp("classifier")
    model = save_classifier_model(root / "Tiny Classifier.mlmodel")
    shutil.copytree(GOLDEN / "images", root / "photos" / "images")
    shutil.copytree(GOLDEN / "images", root / "labelled" / "images")
    m = Model.open(model)
    pre = Preprocessor(m, PreprocessSettings(output_kind="classifier"))
    predictor = get_backend("onnx").load(m)
    rows = []
    for i, sample in enumerate(Dataset.open(root / "labelled")):  # decoded as the plugin decodes them
        answer = predictor.predict(pre.prepare(sample.image))["classLabel"]
        rows.append(f"{sample.entry.image_path.name},{'not-a-class' if i == 0 else answer}")
    (root / "labelled" / "labels.csv").write_text("image,label\n" + "\n".join(rows) + "\n")
    return {"model": model, "photos": root / "photos", "labelled": root / "labelled", "cache": root / "cache"}


def _run(pytester: pytest.Pytester, files: dict[str, Path], dataset: str, *args: str) -> pytest.RunResult:
    return pytester.runpytest(
        f"--coreml-model={files['model']}", f"--coreml-dataset={files[dataset]}", "--coreml-variants=q8,q2",
        f"--coreml-cache-dir={files['cache']}", "-p", "no:randomly", "-k", "quality", *args,
    )


def test_classifier_agreement_with_the_base(pytester: pytest.Pytester, files: dict[str, Path]) -> None:
    report = pytester.path / "r.json"
    result = _run(pytester, files, "photos", "--coreml-min-top1-agreement=0.99", f"--coreml-report-json={report}")
    result.stdout.fnmatch_lines(["*Tiny Classifier.mlmodel output: 'out' compared as class probabilities*no labels.csv*"])
    header = next(line for line in result.stdout.lines if line.startswith("variant"))
    assert "top1=" in header and "KL" in header and "IoU" not in header and "t-MAE" not in header
    summary = json.loads(report.read_text())["summary"]["Tiny Classifier.mlmodel"]
    assert summary["q8"]["drift_top1_agreement"] >= summary["q2"]["drift_top1_agreement"]
    assert summary["q8"]["drift_kl"] < summary["q2"]["drift_kl"]
    assert summary["q2"]["top1"] is None  # no labels
    failing = [r for r in ("q8", "q2") if summary[r]["drift_top1_agreement"] < 0.99]
    assert failing, "2-bit weights should change some image's class"
    result.assert_outcomes(passed=3 - len(failing), failed=len(failing))
    result.stdout.fnmatch_lines(["*drift_top1_agreement = *, bound >= 0.99*"])


def test_labels_give_accuracy_with_thresholds(pytester: pytest.Pytester, files: dict[str, Path]) -> None:
    report, page = pytester.path / "r.json", pytester.path / "r.html"
    result = _run(pytester, files, "labelled", "--coreml-min-top1=0.99", f"--coreml-report-json={report}",
                  f"--coreml-report-html={page}")
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert "Tiny Classifier.mlmodel" in page.read_text()  # the page is written, without mask thumbnails
    result.stdout.fnmatch_lines(["*compared as class probabilities*top-1/top-5 accuracy against labels.csv*"])
    # the unknown label is said, not only counted as a miss
    result.stdout.fnmatch_lines(["*1 label of labels.csv is not a class of the model: 'not-a-class' (scene_000)*"])
    summary = json.loads(report.read_text())["summary"]["Tiny Classifier.mlmodel"]
    n = len(list((files["labelled"] / "images").iterdir()))
    assert summary["base"]["top1"] == pytest.approx((n - 1) / n)  # one label is not a class of the model
    assert summary["base"]["top5"] == pytest.approx((n - 1) / n)
    result.assert_outcomes(failed=3)  # no variant can reach 0.99: one image is labelled with an unknown class
    result.stdout.fnmatch_lines(["*Tiny Classifier.mlmodel [[]base[]]: 1 threshold(s) broken*", "*top1 = 0.96*, bound >= 0.99*"])


def test_accuracy_bound_without_labels_is_a_usage_error(pytester: pytest.Pytester, files: dict[str, Path]) -> None:
    result = _run(pytester, files, "photos", "--coreml-min-top1=0.5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--coreml-min-top1: the golden set" in result.stderr.str() and "has no labels.csv" in result.stderr.str()


# --- labels.csv against the model's classes ------------------------------------------------------


def test_labels_that_are_no_class_of_the_model_stop_the_run(tmp_path: Path) -> None:
    from pytest_coreml_quality.labels import check_labels

    # e.g. names written for a model whose classes are integers: accuracy would be a silent 0
    labels = {"a": "class_3", "b": "class_1", "c": "class_3"}
    with pytest.raises(DatasetError) as info:
        check_labels(labels, [0, 1, 2, 3], tmp_path / "labels.csv", "Net.mlpackage")
    text = str(info.value)
    assert text.startswith(f"{tmp_path / 'labels.csv'}: field 'label': ")
    assert "no label is a class of Net.mlpackage" in text
    assert "'class_3' (a, c)" in text and "'class_1' (b)" in text
    assert "(expected labels among the model's 4 classes: 0, 1, 2, 3)" in text


def test_some_unknown_labels_are_named_in_a_note(tmp_path: Path) -> None:
    from pytest_coreml_quality.labels import check_labels

    classes = [f"c{i}" for i in range(20)]
    labels = {"a": "c3", "b": "dgo", "c": "c19", "d": "dgo", "e": "c0"}
    note = check_labels(labels, classes, tmp_path / "labels.csv", "Net.mlmodel")
    assert note == "1 label of labels.csv is not a class of the model: 'dgo' (b, d); those images count as misses"
    assert check_labels({"a": "3", "b": "0"}, [0, 1, 2, 3], tmp_path / "labels.csv", "Net.mlpackage") == ""


def test_class_list_in_the_error_is_cut_short(tmp_path: Path) -> None:
    from pytest_coreml_quality.labels import check_labels

    with pytest.raises(DatasetError) as info:
        check_labels({"a": "cat"}, [f"n{i:05d}" for i in range(1000)], tmp_path / "labels.csv", "Big.mlmodel")
    assert "1000 classes: n00000, n00001, n00002, n00003, n00004, n00005, n00006, n00007 and 992 more)" in str(info.value)
