"""ML Program translation errors: unsupported ops are all listed before any prediction;
damaged packages give a ModelFormatError naming the file, never a raw traceback."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="torch builds the ML Program test models (test-only dependency)")


from pytest_coreml_quality.errors import ModelFormatError, UnsupportedModelError
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.onnx.builder import GraphBuilder
from pytest_coreml_quality.runtime.onnx.mil_ops import MIL_OPS, mil_op
from pytest_coreml_quality.runtime.onnx.mlprogram import translate_mlprogram
from tests.runtime import mil_zoo

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def vision_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mil_errors")
    _, shape = mil_zoo.ZOO["vision"]
    return mil_zoo.convert(mil_zoo.make_module("vision"), shape, root / "vision.mlpackage")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _weight_bin(package: Path) -> Path:
    return package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"


def test_unsupported_ops_are_all_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    # Two ops made unsupported for this test (both translate now), so it does not depend on
    # which ops still lack a handler.
    monkeypatch.delitem(MIL_OPS, "cumsum")
    monkeypatch.delitem(MIL_OPS, "argsort")

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 6))], opset_version=ct.target.iOS16)
    def prog(x: Any) -> Any:
        total = mb.cumsum(x=x, axis=1, name="running_total")
        order = mb.argsort(x=total, axis=1, name="order")
        return mb.add(x=total, y=mb.cast(x=order, dtype="fp32", name="order_f"), name="output")

    path = mil_zoo.save_program(prog, tmp_path / "unsupported.mlpackage")
    builder = GraphBuilder()
    with pytest.raises(UnsupportedModelError) as info:
        translate_mlprogram(Model.open(path), builder)
    text = str(info.value)
    assert str(path) in text
    assert "cumsum 'running_total'" in text and "argsort 'order'" in text
    assert "2 ML Program op(s)" in text
    assert builder.nodes == [] and builder.inputs == []  # raised before translating anything


def test_missing_weight_bin(vision_package: Path, tmp_path: Path) -> None:
    package = _copy(vision_package, tmp_path / "no_weights.mlpackage")
    _weight_bin(package).unlink()
    with pytest.raises(ModelFormatError) as info:
        translate_mlprogram(Model.open(package), GraphBuilder())
    assert "weight.bin" in str(info.value) and "missing" in str(info.value)


def test_truncated_weight_bin(vision_package: Path, tmp_path: Path) -> None:
    package = _copy(vision_package, tmp_path / "short_weights.mlpackage")
    blob = _weight_bin(package)
    data = blob.read_bytes()
    blob.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError) as info:
        translate_mlprogram(Model.open(package), GraphBuilder())
    assert str(blob) in str(info.value)


def test_truncated_program_spec(vision_package: Path, tmp_path: Path) -> None:
    package = _copy(vision_package, tmp_path / "short_spec.mlpackage")
    spec = package / "Data" / "com.apple.CoreML" / "model.mlmodel"
    data = spec.read_bytes()
    spec.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelFormatError) as info:
        translate_mlprogram(Model.open(package), GraphBuilder())
    assert str(package) in str(info.value)


def test_neuralnetwork_is_not_an_ml_program(tmp_path: Path) -> None:
    import coremltools as ct
    import torch

    traced = torch.jit.trace(torch.nn.ReLU().eval(), torch.rand(1, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ct.convert(traced, inputs=[ct.TensorType(name="input", shape=(1, 2))], convert_to="neuralnetwork")
    path = tmp_path / "relu.mlmodel"
    model.save(str(path))
    with pytest.raises(ModelFormatError, match="not an ML Program"):
        translate_mlprogram(Model.open(path), GraphBuilder())


def test_handler_failure_names_the_op(vision_package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler that cannot translate an op's arguments gives an UnsupportedModelError naming it."""

    def refuse(ctx: Any, op: Any) -> str:
        raise ValueError("mode 'weird' is not defined")

    monkeypatch.setitem(MIL_OPS, "max_pool", refuse)
    with pytest.raises(UnsupportedModelError) as info:
        translate_mlprogram(Model.open(vision_package), GraphBuilder())
    assert "max_pool op" in str(info.value) and "weird" in str(info.value)


def test_weights_that_do_not_decompress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Damaged compressed data (here: a one-entry lookup table) is a ModelFormatError."""
    import coremltools as ct
    import coremltools.optimize.coreml as cto
    import numpy as np

    from pytest_coreml_quality.runtime.onnx import mil_weights

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dense = ct.models.MLModel(str(mil_zoo.convert(
            mil_zoo.make_module("vision"), mil_zoo.ZOO["vision"][1], tmp_path / "dense.mlpackage"
        )), skip_model_load=True)  # fmt: skip
        config = cto.OptimizationConfig(cto.OpPalettizerConfig(nbits=2, mode="uniform", weight_threshold=0))
        path = tmp_path / "pal.mlpackage"
        cto.palettize_weights(dense, config).save(str(path))

    def short_lut(indices: np.ndarray, lut: np.ndarray, shape: Any) -> np.ndarray:
        return mil_weights.lut_to_dense_ios16(indices, lut[:1], shape)

    monkeypatch.setitem(
        mil_weights._DISPATCH, ("constexpr_lut_to_dense", False), lambda a: short_lut(a("indices"), a("lut"), a("shape"))
    )
    with pytest.raises(ModelFormatError) as info:
        translate_mlprogram(Model.open(path), GraphBuilder())
    assert "constexpr_lut_to_dense" in str(info.value) and str(path) in str(info.value)


def test_registering_an_op_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        mil_op("conv")(lambda ctx, op: "x")
