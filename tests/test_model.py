"""Model inspection: kinds, features, preprocessing, size, hash, and errors on bad files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pytest_coreml_quality.errors import ModelFormatError
from pytest_coreml_quality.model import Model, content_hash

from .model_factory import save_array_model, save_image_model

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One model per description path the tests check, built once for the module."""
    d = tmp_path_factory.mktemp("models")
    return {
        "nn_rgb": save_image_model(d / "rgb.mlmodel"),
        "nn_bgr": save_image_model(d / "bgr.mlmodel", color_layout="BGR", bias=[-0.1, -0.2, -0.3], scale=0.5),
        "nn_gray": save_image_model(d / "gray.mlmodel", color_layout="GRAYSCALE", bias=[-1.0], scale=2 / 255),
        "mp_bgr": save_image_model(d / "bgr.mlpackage", color_layout="BGR", bias=[-0.1, -0.2, -0.3], scale=0.5, convert_to="mlprogram"),
        "nn_enum": save_image_model(d / "enum.mlmodel", flexible="enumerated"),
        "mp_range": save_image_model(d / "range.mlpackage", flexible="range", convert_to="mlprogram"),
        "nn_array": save_array_model(d / "array.mlmodel"),
        "mp_array": save_array_model(d / "array.mlpackage", convert_to="mlprogram"),
    }


def test_neuralnetwork_image_model_is_described(built: dict[str, Path]) -> None:
    m = Model.open(built["nn_rgb"])
    assert m.kind == "neuralNetwork"
    assert not m.is_package and m.weights_dir is None
    (x,) = m.inputs
    assert (x.name, x.type, x.width, x.height, x.color_layout, x.channels) == ("x_1", "image", 48, 32, "RGB", 3)
    assert x.preprocessing is not None
    assert x.preprocessing.scale == pytest.approx(1 / 255)
    assert x.preprocessing.bias == pytest.approx((-0.5, -0.5, -0.5))
    (y,) = m.outputs
    assert (y.name, y.type, y.color_layout, y.channels) == ("activation_out", "image", "GRAYSCALE", 1)


@pytest.mark.parametrize("key", ["nn_bgr", "mp_bgr"])
def test_bgr_bias_is_reported_in_channel_order(built: dict[str, Path], key: str) -> None:
    """Both spec kinds keep scale/bias in different places; Model reports them alike."""
    m = Model.open(built[key])
    x = m.input("x_1")
    assert x.color_layout == "BGR"
    assert x.preprocessing is not None
    assert x.preprocessing.scale == pytest.approx(0.5)
    assert x.preprocessing.bias == pytest.approx((-0.1, -0.2, -0.3))


def test_grayscale_input_has_one_bias(built: dict[str, Path]) -> None:
    x = Model.open(built["nn_gray"]).input("x_1")
    assert x.color_layout == "GRAYSCALE" and x.channels == 1
    assert x.preprocessing is not None
    assert x.preprocessing.bias == pytest.approx((-1.0,))
    assert x.preprocessing.scale == pytest.approx(2 / 255)


def test_ml_program_package_is_described(built: dict[str, Path]) -> None:
    m = Model.open(built["mp_bgr"])
    assert m.kind == "mlProgram" and m.is_package
    assert m.spec_version >= 7  # iOS16
    assert m.weights_dir is not None and (m.weights_dir / "weight.bin").is_file()


def test_flexible_image_sizes(built: dict[str, Path]) -> None:
    enum = Model.open(built["nn_enum"]).input("x_1")
    assert enum.is_flexible
    assert set(enum.enumerated_sizes) == {(48, 32), (96, 64)}
    ranged = Model.open(built["mp_range"]).input("x_1")
    assert ranged.is_flexible
    assert ranged.size_ranges == ((16, 256), (16, 256))


@pytest.mark.parametrize("key", ["nn_array", "mp_array"])
def test_multiarray_features(built: dict[str, Path], key: str) -> None:
    m = Model.open(built[key])
    x = m.input("input")
    assert (x.type, x.shape, x.dtype) == ("multiarray", (1, 3, 16, 16), "float32")
    assert x.preprocessing is None
    assert m.output("mask").is_multiarray


def test_unknown_feature_name_lists_the_real_ones(built: dict[str, Path]) -> None:
    with pytest.raises(ModelFormatError, match=r"no input named 'image'.*'input'"):
        Model.open(built["nn_array"]).input("image")


def test_package_size_counts_every_file(built: dict[str, Path]) -> None:
    m = Model.open(built["mp_bgr"])
    files = [f for f in m.path.rglob("*") if f.is_file()]
    assert len(files) >= 3  # Manifest.json, model.mlmodel, weight.bin
    assert m.size_bytes == sum(f.stat().st_size for f in files)
    assert m.size_bytes > (m.weights_dir / "weight.bin").stat().st_size  # type: ignore[operator]


@pytest.mark.parametrize("key", ["nn_rgb", "mp_bgr"])
def test_content_hash_is_stable_across_copies_and_sees_changes(built: dict[str, Path], key: str, tmp_path: Path) -> None:
    src = built[key]
    copy = tmp_path / ("copy" + src.suffix)
    if src.is_dir():
        shutil.copytree(src, copy)
    else:
        shutil.copy(src, copy)
    original = Model.open(src).content_hash
    assert Model.open(copy).content_hash == original
    # Flip one byte of the weights: the hash must change.
    target = copy / "Data" / "com.apple.CoreML" / "weights" / "weight.bin" if copy.is_dir() else copy
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    assert content_hash(copy) != original


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.mlmodel", "no such file or directory"),
        (lambda d: _write(d / "model.onnx", b"\x08\x01"), "unrecognised suffix '.onnx'"),
        (lambda d: _write(d / "empty.mlmodel", b""), "is empty"),
        (lambda d: _write(d / "junk.mlmodel", b"this is not a protobuf" * 8), "cannot be read as a Core ML model"),
        (lambda d: _mkdir(d / "nomanifest.mlpackage"), "has no Manifest.json"),
        (lambda d: _mkdir(d / "dir.mlmodel"), "is not a file"),
        (lambda d: _mkdir(d / "Seg.mlmodelc"), "a compiled model"),
        (lambda d: _write(_mkdir(d / "Models") / "Seg.mlmodel", b"x").parent, "a folder holding Seg.mlmodel; give the model"),
    ],
)
def test_bad_model_paths_name_the_file_and_the_expectation(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    path = make(tmp_path)
    with pytest.raises(ModelFormatError) as info:
        Model.open(path)
    text = str(info.value)
    assert str(path) in text
    assert message in text
    assert "expected" in text or "Manifest" in text


def test_truncated_model_is_a_format_error(built: dict[str, Path], tmp_path: Path) -> None:
    data = built["nn_rgb"].read_bytes()
    broken = _write(tmp_path / "truncated.mlmodel", data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="truncated.mlmodel"):
        Model.open(broken)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path
