"""A NeuralNetwork spec shipped inside an ``.mlpackage`` (as some public models are) compresses
into a variant that opens: its variants are written as ``.mlmodel`` files, since a
NeuralNetwork spec is self-contained and coremltools' NeuralNetwork writers make files."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_coreml_quality.model import Model
from pytest_coreml_quality.variants import build_variant, parse_recipe

from ..conftest import FIXTURES


@pytest.fixture(scope="module")
def packaged_nn(tmp_path_factory: pytest.TempPathFactory) -> Model:
    import coremltools as ct

    path = tmp_path_factory.mktemp("pkg") / "TinySegPackaged.mlpackage"
    ct.models.MLModel(str(FIXTURES / "models" / "TinySeg.mlmodel"), skip_model_load=True).save(str(path))
    model = Model.open(path)
    assert path.is_dir() and model.kind == "neuralNetwork"
    return model


@pytest.mark.parametrize("recipe", ["fp16", "q8", "q4-lut"])
def test_variants_of_a_packaged_neural_network_open(packaged_nn: Model, recipe: str, tmp_path: Path) -> None:
    variant = build_variant(packaged_nn, parse_recipe(recipe), tmp_path)
    assert variant.path.suffix == ".mlmodel" and variant.path.is_file()
    built = Model.open(variant.path)
    assert built.kind == "neuralNetwork"
    assert 0 < variant.size_bytes < packaged_nn.size_bytes
