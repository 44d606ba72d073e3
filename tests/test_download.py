"""Download size: the variant zipped with deflate, as it would be served."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from pytest_coreml_quality import catalogue
from pytest_coreml_quality.download import archive_members, cached_zip_size, zip_size
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.results import VariantResult
from pytest_coreml_quality.variants import build_variant

from .conftest import FIXTURES

MODELS = FIXTURES / "models"


def zipfile_bytes(path: Path) -> bytes:
    """The zip zipfile itself writes (into memory) for a model file or package."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for source, name in archive_members(path):
            archive.write(source, arcname=name)
    return buffer.getvalue()


@pytest.mark.parametrize("name", ["TinySeg.mlmodel", "TinySeg.mlpackage", "TinySeg18.mlpackage"])
def test_zip_size_is_exactly_the_length_of_zipfiles_own_archive(name: str) -> None:
    path = MODELS / name
    data = zipfile_bytes(path)
    assert zip_size(path) == len(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:  # a real archive of every file, named as served
        names = archive.namelist()
        assert archive.testzip() is None
    assert all(n.startswith(name) for n in names)
    if path.is_dir():
        assert any(n.endswith("Manifest.json") for n in names) and len(names) >= 3


def test_zeros_compress_so_download_is_smaller_than_disk(tmp_path: Path) -> None:
    model = tmp_path / "Zeros.mlmodel"
    model.write_bytes(bytes(100_000))
    assert zip_size(model) < 1_000


def test_cached_zip_size_is_remembered_and_a_damaged_entry_measured_again(tmp_path: Path) -> None:
    model = MODELS / "TinySeg.mlmodel"
    size = cached_zip_size(model, "abc", tmp_path)
    entry = tmp_path / "download" / "abc.json"
    assert json.loads(entry.read_text())["zip_bytes"] == size == zip_size(model)
    entry.write_text(json.dumps({"zip_bytes": 7}))
    assert cached_zip_size(model, "abc", tmp_path) == 7  # read back, not measured
    entry.write_text("{not json")
    assert cached_zip_size(model, "abc", tmp_path) == size


def test_variants_carry_download_size_and_build_time_also_from_the_cache(tmp_path: Path) -> None:
    model = Model.open(MODELS / "TinySeg.mlmodel")
    built = build_variant(model, "q8", tmp_path)
    assert not built.cached and built.download_bytes == zip_size(built.path)
    manifest = json.loads((built.path.parent / "manifest.json").read_text())
    assert manifest["download_bytes"] == built.download_bytes
    again = build_variant(model, "q8", tmp_path)
    assert again.cached and again.download_bytes == built.download_bytes
    assert again.build_seconds == built.build_seconds > 0



def test_the_session_records_download_sizes_and_build_times(tmp_path: Path) -> None:
    from pytest_coreml_quality.session import QualitySession
    from pytest_coreml_quality.settings import Settings

    session = QualitySession.start(Settings(models=(MODELS / "TinySeg.mlmodel",), variants=("q8",)), default_cache_dir=tmp_path)
    key = "TinySeg.mlmodel"
    session.variant(key, "base")
    session.variant(key, "q8")
    base, q8 = session.results.models[key].variants["base"], session.results.models[key].variants["q8"]
    assert base.download_bytes == zip_size(MODELS / "TinySeg.mlmodel") and base.build_s is None
    assert q8.download_bytes == zip_size(q8.path) and q8.build_s is not None and q8.build_s > 0
    assert (tmp_path / "download").is_dir()  # the base's zip size is remembered for the next run


def test_download_and_build_figures_read_the_result() -> None:
    result = VariantResult("q8", download_bytes=2_500_000, build_s=1.5)
    assert catalogue.get("download_mb").value(result) == 2.5  # type: ignore[union-attr]
    assert catalogue.get("build_s").value(result) == 1.5  # type: ignore[union-attr]
    assert catalogue.get("download_mb").option_dest == "coreml_max_download_mb"  # type: ignore[union-attr]
    assert "max_download_mb" in catalogue.keywords("size")
    assert catalogue.get("build_s").option_dest is None and catalogue.get("build_s").column is None  # type: ignore[union-attr]


def test_zip_size_of_a_multi_chunk_file_is_zipfiles_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # zip_size feeds zlib in large chunks, ZipFile.write in 8 KB ones: the archive length
    # must not depend on it. Small chunks here so that a few MB span many of them.
    import numpy as np

    from pytest_coreml_quality import download

    monkeypatch.setattr(download, "_ZIP_CHUNK", 100_003)
    rng = np.random.default_rng(3)
    parts = [rng.standard_normal(300_000).astype(np.float32).tobytes(), bytes(500_000),
             np.repeat(rng.integers(0, 16, 100_000, dtype=np.uint8), 7).tobytes()]
    model = tmp_path / "Mixed.mlmodel"
    model.write_bytes(b"".join(parts))
    package = tmp_path / "Mixed.mlpackage"
    (package / "Data").mkdir(parents=True)
    (package / "Data" / "weight.bin").write_bytes(b"".join(reversed(parts)))
    (package / "Manifest.json").write_text("{}")
    for path in (model, package):
        assert zip_size(path) == len(zipfile_bytes(path))
