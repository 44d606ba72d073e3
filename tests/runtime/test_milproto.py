"""The protobuf reader of ML Programs: fixture packages translate to coremltools' graph, the
blob reader decodes weight.bin like coremltools and names the file and offset when it is
damaged, weights are streamed to the external-data file, and opening + translating a
package imports no coremltools module beyond its generated protobuf files."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, numpy_helper

from pytest_coreml_quality.errors import ModelFormatError
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.base import RuntimeOptions
from pytest_coreml_quality.runtime.onnx import backend, mil_blob
from pytest_coreml_quality.runtime.onnx.builder import GraphBuilder
from pytest_coreml_quality.runtime.onnx.mlprogram import translate_mlprogram
from tests.runtime import mil_crosscheck

pytestmark = pytest.mark.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "fixtures" / "models"
PACKAGES = ["TinySeg.mlpackage", "TinySeg18.mlpackage", "TinySegArray.mlpackage"]


def _package(name: str) -> Path:
    path = MODELS / name
    if not path.exists():
        pytest.skip(f"fixtures/models/{name} is missing: run fixtures/make_fixtures.py")
    return path


def _weight_bin(package: Path) -> Path:
    return package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"


def _blob_offsets(model: Model) -> list[int]:
    from pytest_coreml_quality.integrity import blob_references

    return sorted({offset for _, offset in blob_references(model.spec.mlProgram)})


@pytest.mark.parametrize("name", PACKAGES)
def test_fixture_packages_translate_to_coremltools_graph(name: str) -> None:
    path = _package(name)
    ours = mil_crosscheck.assert_same_translation(path)
    reference = mil_crosscheck.translate_with(path, "coremltools")
    feeds = {i.name: np.random.default_rng(0).random([d.dim_value for d in i.type.tensor_type.shape.dim],
                                                     dtype=np.float32) * 255 for i in ours.graph.input}
    for a, b in zip(mil_crosscheck.run(ours, feeds), mil_crosscheck.run(reference, feeds)):
        assert np.array_equal(a, b)


def test_blob_reader_equals_coremltools_blob_reader() -> None:
    from coremltools.libmilstoragepython import _BlobStorageReader

    path = _package("TinySeg.mlpackage")
    blob = _weight_bin(path)
    ours, theirs = mil_blob.open_blob_file(blob), _BlobStorageReader(str(blob))
    offsets = _blob_offsets(Model.open(path))
    assert offsets
    for offset in offsets:
        values = theirs.read_fp16_data(offset)
        got = ours.read(offset, "fp16", (values.size,))
        assert got.tobytes() == np.asarray(values).tobytes()


@pytest.mark.parametrize(("bits", "signed"), [(1, False), (2, False), (3, False), (4, False), (6, False), (4, True)])
def test_sub_byte_unpacking_equals_coremltools(bits: int, signed: bool) -> None:
    """uint1..uint6 and int4 (sign-extended) values, packed LSB first."""
    from coremltools.optimize._utils import restore_elements_from_packed_bits

    rng = np.random.default_rng(bits)
    for count in (1, 7, 64, 999):
        packed = rng.integers(0, 256, size=-(-count * bits // 8), dtype=np.uint8)
        ours = mil_blob._unpack(packed, bits, count, signed)
        assert ours.tolist() == restore_elements_from_packed_bits(packed, bits, count, signed).tolist()


@pytest.fixture
def damaged(tmp_path: Path) -> tuple[Model, Path, int]:
    """An opened copy of the fixture package, its weight.bin and the first weight's record offset.

    The file is damaged after ``Model.open`` (which checks the records itself), so the
    reader's own checks are what the tests see.
    """
    package = tmp_path / "copy.mlpackage"
    shutil.copytree(_package("TinySeg.mlpackage"), package)
    model = Model.open(package)
    return model, _weight_bin(package), _blob_offsets(model)[0]


def _translate_error(model: Model) -> str:
    with pytest.raises(ModelFormatError) as info:
        translate_mlprogram(model, GraphBuilder())
    return str(info.value)


def test_truncated_weight_file_names_the_file_and_offset(damaged: tuple[Model, Path, int]) -> None:
    model, blob, _ = damaged
    offsets = _blob_offsets(model)
    blob.write_bytes(blob.read_bytes()[: offsets[-1] + 80])  # the last weight's data is cut
    text = _translate_error(model)
    assert str(blob) in text and f"offset {offsets[-1]}" in text and "too small" in text


def test_bad_sentinel_names_the_file_and_offset(damaged: tuple[Model, Path, int]) -> None:
    model, blob, offset = damaged
    data = bytearray(blob.read_bytes())
    data[offset : offset + 4] = b"\0\0\0\0"
    blob.write_bytes(bytes(data))
    text = _translate_error(model)
    assert str(blob) in text and f"offset {offset}" in text and "sentinel" in text


def test_wrong_data_type_names_the_file_and_offset(damaged: tuple[Model, Path, int]) -> None:
    model, blob, offset = damaged
    data = bytearray(blob.read_bytes())
    struct.pack_into("<I", data, offset + 4, 2)  # declared fp32 where the program reads fp16
    blob.write_bytes(bytes(data))
    text = _translate_error(model)
    assert str(blob) in text and f"offset {offset}" in text and "fp32" in text and "fp16" in text


def test_emptied_weight_file(damaged: tuple[Model, Path, int]) -> None:
    model, blob, _ = damaged
    blob.write_bytes(b"")
    assert str(blob) in _translate_error(model)


def test_blob_reader_refuses_an_offset_outside_the_file(tmp_path: Path) -> None:
    blob = tmp_path / "weight.bin"
    blob.write_bytes(struct.pack("<II", 0, 2) + bytes(56))
    with pytest.raises(ModelFormatError, match="offset 4096"):
        mil_blob.open_blob_file(blob).read(4096, "fp16", (4,))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open descriptors through /proc")
@pytest.mark.parametrize("content", [b"short", struct.pack("<II", 0, 3) + bytes(56)], ids=["truncated", "other-version"])
def test_a_refused_weight_file_is_closed(tmp_path: Path, content: bytes) -> None:
    blob = tmp_path / "weight.bin"
    blob.write_bytes(content)
    before = len(list(Path("/proc/self/fd").iterdir()))
    with pytest.raises(ModelFormatError, match="weight.bin") as refused:
        mil_blob.open_blob_file(blob)
    # The error's traceback still holds the half-made reader: its map must be closed already.
    assert len(list(Path("/proc/self/fd").iterdir())) == before and refused.value is not None


def test_weights_are_streamed_to_the_external_file(tmp_path: Path) -> None:
    """With a weights file, large initializers hold no bytes in the proto; the data equals
    the in-memory translation, with and without fp16 emulation."""
    import onnx

    model = Model.open(_package("TinySeg.mlpackage"))
    for precision in ("fp32", "fp16"):
        options = RuntimeOptions(precision=precision)
        folder = tmp_path / precision
        folder.mkdir()
        streamed = backend.translate(model, options, weights=folder / "streamed.bin")
        external = [t for t in streamed.graph.initializer if t.data_location == TensorProto.EXTERNAL]
        assert external and all(not t.raw_data for t in external)
        assert all(len(t.raw_data) < 1024 for t in streamed.graph.initializer)
        onnx.save_model(streamed, str(folder / "graph.onnx"))
        loaded = onnx.load(str(folder / "graph.onnx"))
        in_memory = backend.translate(model, options)
        assert [n.SerializeToString() for n in loaded.graph.node] == [n.SerializeToString() for n in in_memory.graph.node]
        for a, b in zip(loaded.graph.initializer, in_memory.graph.initializer):
            assert a.name == b.name and numpy_helper.to_array(a).tobytes() == numpy_helper.to_array(b).tobytes()


_NO_COREMLTOOLS = """
import sys
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.onnx.builder import GraphBuilder
from pytest_coreml_quality.runtime.onnx.mlprogram import translate_mlprogram
model = Model.open(sys.argv[1])
translate_mlprogram(model, GraphBuilder())
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("coremltools", "torch"))
assert not loaded, loaded
import coremltools.proto.Model_pb2 as real  # coremltools still imports, and shares the classes
assert type(model.spec) is real.Model
print("ok")
"""


def test_open_and_translate_import_no_coremltools() -> None:
    """coremltools' package import (converters, torch) is most of a small model's cold load."""
    out = subprocess.run([sys.executable, "-c", _NO_COREMLTOOLS, str(_package("TinySeg.mlpackage"))],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_backend_streams_only_ml_program_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cold build streams an ML Program's weights to the scratch file; a NeuralNetwork's stay in the proto."""
    seen: dict[str, Path | None] = {}
    real = backend.translate

    def spy(model: Model, options: RuntimeOptions, weights: Path | None = None) -> object:
        seen[model.kind] = weights
        return real(model, options, weights)

    monkeypatch.setattr(backend, "translate", spy)
    for name in ("TinySeg.mlpackage", "TinySeg.mlmodel"):
        model = Model.open(_package(name))
        predictor = backend.OnnxBackend().load(model, RuntimeOptions(cache_dir=tmp_path))
        assert predictor.session.get_outputs()
    assert seen["mlProgram"] is not None and seen["mlProgram"].name == "translated.weights"
    assert seen["neuralNetwork"] is None


@pytest.mark.parametrize("name", PACKAGES)
def test_blob_references_walk_the_program_like_reflection(name: str) -> None:
    """Model.open's weight check reads the MIL layout directly; it finds what a full walk finds."""
    from pytest_coreml_quality import integrity

    program = Model.open(_package(name)).spec.mlProgram
    fast = list(integrity.blob_references(program))
    assert fast and sorted(fast) == sorted(integrity._walk(program))
