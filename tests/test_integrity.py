"""Broken downloads and checkouts (issue 11 §6): Git LFS pointers, incomplete packages and
weight files, each reported with the file and what was expected."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pytest_coreml_quality.dataset import Dataset
from pytest_coreml_quality.errors import DatasetError, ModelFormatError
from pytest_coreml_quality.model import Model

from .conftest import FIXTURES

POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
           b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 1312256\n")
LFS = "this is a Git LFS pointer, not the file: run `git lfs pull`"
DATA = Path("Data") / "com.apple.CoreML"


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A writable copy of the fixture ML Program package."""
    return Path(shutil.copytree(FIXTURES / "models" / "TinySeg.mlpackage", tmp_path / "TinySeg.mlpackage"))


def _error(path: Path) -> str:
    with pytest.raises(ModelFormatError) as info:
        Model.open(path)
    return str(info.value)


def test_an_lfs_pointer_instead_of_an_mlmodel(tmp_path: Path) -> None:
    path = tmp_path / "ISNet.mlmodel"
    path.write_bytes(POINTER)
    assert _error(path) == f"{path}: {LFS}"


@pytest.mark.parametrize("item", ["model.mlmodel", "weights/weight.bin"])
def test_an_lfs_pointer_inside_a_package(package: Path, item: str) -> None:
    target = package / DATA / item
    target.write_bytes(POINTER)
    assert _error(package) == f"{target}: {LFS}"


def test_a_missing_weights_folder_the_manifest_names(package: Path) -> None:
    shutil.rmtree(package / DATA / "weights")
    text = _error(package)
    assert text.startswith(f"{package / 'Manifest.json'}: field 'itemInfoEntries.")
    assert "names folder Data/com.apple.CoreML/weights, which is missing" in text
    assert f"(expected {package / DATA / 'weights'} in the package)" in text


def test_a_missing_weights_folder_the_manifest_does_not_name(package: Path) -> None:
    manifest = json.loads((package / "Manifest.json").read_text())
    manifest["itemInfoEntries"] = {k: v for k, v in manifest["itemInfoEntries"].items() if v["name"] != "weights"}
    (package / "Manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(package / DATA / "weights")
    assert _error(package) == (f"{package / DATA / 'weights'}: the weights/ folder is missing "
                               "(expected weight.bin with the weights model.mlmodel references)")


def test_a_manifest_naming_a_missing_item(package: Path) -> None:
    manifest = json.loads((package / "Manifest.json").read_text())
    manifest["itemInfoEntries"]["0000-extra"] = {"author": "x", "description": "x", "name": "extra.bin",
                                                 "path": "com.apple.CoreML/extra.bin"}
    (package / "Manifest.json").write_text(json.dumps(manifest))
    assert _error(package) == (
        f"{package / 'Manifest.json'}: field 'itemInfoEntries.0000-extra.path': names file "
        "Data/com.apple.CoreML/extra.bin, which is missing (an incomplete copy or checkout?) "
        f"(expected {package / DATA / 'extra.bin'} in the package)"
    )


def _edit_manifest(package: Path, edit) -> str:  # type: ignore[no-untyped-def]
    manifest = json.loads((package / "Manifest.json").read_text())
    (package / "Manifest.json").write_text(json.dumps(edit(manifest)))
    return _error(package)


def _root_entry(manifest: dict) -> dict:  # type: ignore[type-arg]
    return manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (lambda m: [m], None, "the top level is a JSON array (expected a JSON object"),
        (lambda m: {k: v for k, v in m.items() if k != "itemInfoEntries"}, "itemInfoEntries", "is missing (expected a JSON object"),
        (lambda m: {**m, "rootModelIdentifier": None}, "rootModelIdentifier", "is a JSON null (expected a string"),
        (lambda m: _root_entry(m).update(path=5) or m, ".path", "is a JSON number (expected a string"),
    ],
)
def test_a_manifest_of_another_shape_names_the_field(package: Path, edit, field: str | None, message: str) -> None:  # type: ignore[no-untyped-def]
    # These were "cannot be read (KeyError: 'itemInfoEntries')" or a TypeError about list indices.
    error = _edit_manifest(package, edit)
    assert error.startswith(f"{package / 'Manifest.json'}: ")
    assert message in error and "as coremltools and Xcode write it" in error
    if field is not None:
        assert "field '" in error and field in error


def test_a_manifest_path_leaving_the_package_is_refused(package: Path) -> None:
    # The weights folder exists two levels up; it must not be read as this package's.
    shutil.copytree(package / DATA, package.parent / "elsewhere")
    error = _edit_manifest(package, lambda m: _root_entry(m).update(path="../../elsewhere/model.mlmodel") or m)
    assert "names Data/../../elsewhere/model.mlmodel, which lies outside the package" in error
    assert "expected a path inside the package's Data folder" in error


def test_a_weight_file_of_another_format_version(package: Path) -> None:
    weights = package / DATA / "weights" / "weight.bin"
    data = bytearray(weights.read_bytes())
    data[4:8] = (1).to_bytes(4, "little")
    weights.write_bytes(bytes(data))
    assert _error(package) == (f"{weights}: is weight file format version 1 "
                               "(expected version 2, the format Core ML ML Programs use)")


def test_a_truncated_weight_file(package: Path) -> None:
    weights = package / DATA / "weights" / "weight.bin"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    text = _error(package)
    assert text.startswith(f"{weights}: is {len(data) // 2} bytes, too small for the weights the program references (")
    assert text.endswith("(expected the complete file (a truncated download or copy?))")


def test_intact_packages_still_open() -> None:
    for name in ("TinySeg.mlpackage", "TinySeg18.mlpackage"):
        assert Model.open(FIXTURES / "models" / name).kind == "mlProgram"


def test_an_lfs_pointer_in_the_golden_set(tmp_path: Path) -> None:
    golden = Path(shutil.copytree(FIXTURES / "golden", tmp_path / "golden"))
    image = sorted((golden / "images").iterdir())[0]
    mask = sorted((golden / "masks").iterdir())[1]
    image.write_bytes(POINTER)
    mask.write_bytes(POINTER)
    with pytest.raises(DatasetError) as info:
        Dataset.open(golden)
    text = str(info.value)
    assert f"  - {image}: {LFS}" in text.splitlines()
    assert f"  - {mask}: {LFS}" in text.splitlines()
