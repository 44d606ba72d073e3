"""ML Program classifiers (``classifier_config``) on the onnx backend: label, probabilities, drift."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ..conftest import FIXTURES
from ..model_factory import CLASSIFIER_LABELS, save_mlprogram_classifier


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    return save_mlprogram_classifier(tmp_path_factory.mktemp("mlp_classifier") / "Tiny Classifier.mlpackage")


def _images(count: int) -> list[Any]:
    from PIL import Image

    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(count)]


def _torch_probs(net: Any, image: Any) -> np.ndarray:
    import torch

    x = torch.from_numpy(np.asarray(image, np.float32).transpose(2, 0, 1)[None] / 255)
    with torch.no_grad():
        return net(x).numpy()[0]


def test_labels_are_read_from_the_program(classifier: tuple[Path, Any]) -> None:
    from pytest_coreml_quality.model import Model
    from pytest_coreml_quality.tensors import class_labels

    assert class_labels(Model.open(classifier[0])) == list(CLASSIFIER_LABELS)


def test_predict_returns_label_and_probabilities_like_torch(classifier: tuple[Path, Any]) -> None:
    from pytest_coreml_quality.model import Model
    from pytest_coreml_quality.runtime import get_backend

    path, net = classifier
    predictor = get_backend("onnx").load(Model.open(path))
    tops = set()
    for image in _images(6):
        out = predictor.predict({"image": image})
        assert set(out) == {"classLabel", "classLabel_probs"}
        probs = out["classLabel_probs"]
        assert isinstance(probs, dict) and list(probs) == list(CLASSIFIER_LABELS)
        expected = _torch_probs(net, image)
        np.testing.assert_allclose([probs[c] for c in CLASSIFIER_LABELS], expected, atol=1e-4)
        assert out["classLabel"] == CLASSIFIER_LABELS[int(np.argmax(expected))]
        tops.add(out["classLabel"])
    assert len(tops) > 1, "the images should not all get the same class"


pytestmark = pytest.mark.usefixtures("plain_run_environment")


def test_int8_variant_drift_in_the_json_report(pytester: pytest.Pytester, classifier: tuple[Path, Any]) -> None:
    photos = pytester.path / "photos"
    shutil.copytree(FIXTURES / "golden" / "images", photos / "images")
    report = pytester.path / "r.json"
    result = pytester.runpytest(
        f"--coreml-model={classifier[0]}", f"--coreml-dataset={photos}", "--coreml-variants=int8",
        f"--coreml-cache-dir={pytester.path / 'cache'}", f"--coreml-report-json={report}", "-p", "no:randomly",
    )
    out = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in out and "cannot be read from the spec" not in out
    result.stdout.fnmatch_lines(["*Tiny Classifier.mlpackage output: 'classLabel_probs' compared as class probabilities*"])
    summary = json.loads(report.read_text())["summary"]["Tiny Classifier.mlpackage"]["int8"]
    assert summary["drift_top1_agreement"] > 0.5  # int8 weights rarely change a class
    assert 0.0 <= summary["drift_kl"] < 0.05 and summary["drift_kl"] > 0.0  # but do move the probabilities
    assert summary["top1"] is None  # no labels.csv
    assert result.ret == 0


def test_integer_labels_give_integer_keys(tmp_path: Path) -> None:
    from pytest_coreml_quality.model import Model
    from pytest_coreml_quality.runtime import get_backend

    path, net = save_mlprogram_classifier(tmp_path / "ints.mlpackage", labels=[7, 3, 11, 5])
    out = get_backend("onnx").load(Model.open(path)).predict({"image": _images(1)[0]})
    probs = next(v for v in out.values() if isinstance(v, dict))
    assert list(probs) == [7, 3, 11, 5]
    label = next(v for v in out.values() if not isinstance(v, dict))
    assert label == [7, 3, 11, 5][int(np.argmax(_torch_probs(net, _images(1)[0])))]


def test_classes_held_by_a_const_op_are_read(classifier: tuple[Path, Any]) -> None:
    """A program may pass ``classes`` by name from a ``const`` op rather than inline."""
    from coremltools.proto import MIL_pb2, Model_pb2

    from pytest_coreml_quality.model import Model
    from pytest_coreml_quality.runtime.onnx.mil_ops.classify import mlprogram_classifier_outputs

    spec = Model_pb2.Model()
    spec.CopyFrom(Model.open(classifier[0]).spec)  # edited below: keep any shared copy intact
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    op = next(o for o in block.operations if o.type == "classify")
    arg = op.inputs["classes"].arguments[0]
    const = MIL_pb2.Operation(type="const")
    const.outputs.add(name="the_classes", type=arg.value.type)
    const.attributes["val"].CopyFrom(arg.value)
    arg.Clear()
    arg.name = "the_classes"
    block.operations.insert(0, const)
    found = mlprogram_classifier_outputs(spec)
    assert found is not None and found[1:] == ("classLabel_probs", "classLabel", list(CLASSIFIER_LABELS))


def test_a_program_without_classify_is_not_a_classifier() -> None:
    from pytest_coreml_quality.model import Model
    from pytest_coreml_quality.runtime.onnx.mil_ops.classify import mlprogram_classifier_outputs

    packages = sorted((FIXTURES / "models").glob("*.mlpackage"))
    assert packages
    assert mlprogram_classifier_outputs(Model.open(packages[0]).spec) is None


def test_label_names_for_integer_classes_are_a_usage_error(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """Found on a converted classifier with integer classes: labels.csv written with names gave
    top-1 0.0000 for every variant, silently."""
    path, _ = save_mlprogram_classifier(tmp_path / "ints.mlpackage", labels=[7, 3, 11, 5])
    photos = pytester.path / "photos"
    shutil.copytree(FIXTURES / "golden" / "images", photos / "images")
    stems = sorted(p.stem for p in (photos / "images").iterdir())
    (photos / "labels.csv").write_text("image,label\n" + "".join(f"{s},class_{i % 4}\n" for i, s in enumerate(stems)))
    result = pytester.runpytest(f"--coreml-model={path}", f"--coreml-dataset={photos}", "--coreml-variants=int8",
                                f"--coreml-cache-dir={tmp_path / 'cache'}", "-p", "no:randomly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert f"{photos / 'labels.csv'}: field 'label': no label is a class of ints.mlpackage" in err
    assert "expected labels among the model's 4 classes: 7, 3, 11, 5" in err and "Traceback" not in err
