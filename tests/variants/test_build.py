"""Every recipe builds, shrinks the model as its bit width says, loads, and decompresses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pytest_coreml_quality.errors import RecipeError
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.variants import (
    Variant,
    build_variant,
    parse_recipe,
    parse_recipes,
    weight_summary,
)
from pytest_coreml_quality.variants.recipes import Prune
from tests.variants.conftest import fixture_model, mlprogram_weights, nn_weights, quiet

# recipe -> the most bits per weight it may spend (scales, LUTs, masks and the small
# uncompressed layers below coremltools' weight_threshold included).
NN_RECIPES = {
    "fp16": 16.0,
    "q8": 9.5, "q7": 8.5, "q6": 7.5, "q5": 6.5, "q4": 5.5, "q3": 4.5, "q2": 3.5, "q1": 2.5,
    "q4-kmeans": 5.5, "q2-kmeans": 3.5, "q4-lut": 5.5, "q8-lut": 9.5, "q8-sym": 9.5,
}  # fmt: skip
ML_RECIPES = {
    "int8": 9.0, "int8-sym": 9.0, "int8-pertensor": 9.0, "int4": 5.0, "int4-sym": 5.0,
    "int4-block32": 5.0, "int4-sym-block32": 5.0, "int8-block32": 9.0,
    "pal1": 2.0, "pal2": 3.0, "pal3": 4.0, "pal4": 5.0, "pal6": 7.0, "pal8-uniform": 9.0,  # k-means pal8 is slow
    "pal4-uniform": 5.0, "pal4-group16": 5.0, "pal4-int8lut": 5.0,
    "prune25": 14.0, "prune50": 10.0, "prune75": 6.0, "prune50-block4": 10.0, "prune2:4": 10.0,
    "prune50+pal4": 4.0, "prune50+int8": 6.0, "prune50+pal4-int8lut": 4.0,
}  # fmt: skip
WEIGHT_THRESHOLD = 2048  # coremltools compresses only tensors with more elements (the tiny
# models' conv1 and conv2; every TinySeg conv but the first and the 1-channel head)
# The committed iOS18 fixture (fixtures/make_fixtures.py) and the recipes it must take: every
# recipe of the table above that needs iOS18 (a few seconds of k-means in all).
IOS18_FIXTURE = "TinySeg18.mlpackage"
IOS18_RECIPES = [text for text in ML_RECIPES if parse_recipe(text).ios18_reason()]
# On TinySeg18 the joint prune recipes spend more than on the tiny model (measured with
# coremltools 9: 4.47, 7.87 and 4.47 bits per weight; every tensor above the threshold is
# jointly compressed, the sparse layouts just cost more on this network).
IOS18_FIXTURE_BITS = ML_RECIPES | {"prune50+pal4": 5.0, "prune50+int8": 8.5, "prune50+pal4-int8lut": 5.0}


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("variant-cache")


def _check_loads_like(base: Model, variant: Variant) -> Model:
    import coremltools as ct

    with quiet():
        ct.models.MLModel(str(variant.path), skip_model_load=True)
    opened = variant.open()
    assert opened.kind == base.kind
    assert opened.inputs == base.inputs and opened.outputs == base.outputs
    assert variant.size_bytes < base.size_bytes
    assert variant.ratio == pytest.approx(variant.size_bytes / base.size_bytes)
    # The summary counts the base's weights; the variant's own count agrees (exactly for an
    # ML Program; a packed NeuralNetwork tensor may round up to its byte padding).
    own = weight_summary(opened)
    assert variant.parameters == weight_summary(base).parameters
    assert 0 <= own.parameters - variant.parameters < 8 * 8
    assert own.weight_bytes == variant.weights.weight_bytes
    return opened


@pytest.mark.parametrize("fixture", ["nn_model", "mlprogram_model"])
def test_weight_summary_of_the_base_models(fixture: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(fixture)
    channels = (3, 32, 64, 64, 1)
    expected = sum(cout * cin * 9 + cout for cin, cout in zip(channels[:-1], channels[1:]))
    summary = weight_summary(model)
    assert summary.parameters == expected
    if model.kind == "neuralNetwork":
        assert summary.weight_bytes == 4 * expected and summary.bits_per_weight == 32.0
    else:  # fp16 blobs plus weight.bin's per-blob headers and alignment
        assert 16.0 <= summary.bits_per_weight < 17.0


# --- NeuralNetwork ------------------------------------------------------------------------


@pytest.mark.parametrize("text", list(NN_RECIPES))
def test_neural_network_recipe(nn_model: Model, shared_cache: Path, text: str) -> None:
    variant = build_variant(nn_model, text, shared_cache)
    _check_loads_like(nn_model, variant)
    recipe = parse_recipe(text)
    nbits, mode = recipe.steps[0].nbits, recipe.steps[0].mode  # type: ignore[union-attr]
    assert nbits <= variant.bits_per_weight <= NN_RECIPES[text]
    assert variant.ratio <= NN_RECIPES[text] / 32 + 0.03
    base = nn_weights(nn_model.path)
    got = nn_weights(variant.path)
    assert got.keys() == base.keys()
    for key, original in base.items():
        values = got[key]
        assert values.shape == original.shape
        if nbits == 16:
            np.testing.assert_array_equal(values, original.astype(np.float16).astype(np.float32))
            continue
        levels = 1 << nbits
        # Linear modes quantize weights per output channel and a bias vector as one channel;
        # lookup tables are per tensor.
        per_channel = mode in ("linear", "linear_symmetric") and key[1] == "weights"
        rows = original.reshape(_out_channels(key, base), -1) if per_channel else original.reshape(1, -1)
        got_rows = values.reshape(rows.shape)
        assert max(len(np.unique(row)) for row in got_rows) <= levels
        if mode == "kmeans_lut":
            continue  # cluster centres: no closed-form error bound
        if mode == "linear_symmetric":
            step = np.abs(rows).max(axis=1) / (levels / 2 - 1)
        else:
            step = (rows.max(axis=1) - rows.min(axis=1)) / (levels - 1)
        assert np.all(np.abs(got_rows - rows) <= step[:, None] / 2 * 1.001 + 1e-6)


def _out_channels(key: tuple[str, str], weights: dict) -> int:
    return weights[(key[0], "bias")].size


def test_neural_network_variants_on_the_fixture_models(shared_cache: Path) -> None:
    for name in ("TinySeg.mlmodel", "TinySegArray.mlmodel"):
        model = fixture_model(name)
        for recipe in parse_recipes("fp16,q8,q4,q2,q4-lut,q8-sym", model, include_base=False):
            variant = build_variant(model, recipe, shared_cache)
            _check_loads_like(model, variant)
            assert variant.bits_per_weight <= NN_RECIPES[recipe.name]
            with quiet():
                assert nn_weights(variant.path).keys() == nn_weights(model.path).keys()


# --- ML Program ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ml_bases(request: pytest.FixtureRequest) -> dict[str, tuple[Model, dict]]:
    """Per base name: the ML Program and its decompressed weights, loaded once."""
    return {}


def _ml_base(name: str, request: pytest.FixtureRequest) -> tuple[Model, dict]:
    bases = request.getfixturevalue("ml_bases")
    if name not in bases:
        model = request.getfixturevalue("mlprogram_model") if name == "tiny" else fixture_model(name)
        bases[name] = (model, mlprogram_weights(model.path))
    return bases[name]


def test_the_ios18_recipes_are_the_table_s_ios18_rows() -> None:
    assert set(IOS18_RECIPES) == {
        "int4", "int4-sym", "int4-block32", "int4-sym-block32", "int8-block32", "pal3", "pal4-group16",
        "pal4-int8lut", "prune50+pal4", "prune50+int8", "prune50+pal4-int8lut",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("base_name", "text"),
    [("tiny", text) for text in ML_RECIPES] + [(IOS18_FIXTURE, text) for text in IOS18_RECIPES],
)
def test_ml_program_recipe(base_name: str, shared_cache: Path, text: str, request: pytest.FixtureRequest) -> None:
    mlprogram_model, base_ml_weights = _ml_base(base_name, request)
    variant = build_variant(mlprogram_model, text, shared_cache)
    _check_loads_like(mlprogram_model, variant)
    max_bits = (ML_RECIPES if base_name == "tiny" else IOS18_FIXTURE_BITS)[text]
    assert variant.bits_per_weight <= max_bits
    assert variant.ratio <= max_bits / 16 + 0.1
    got = mlprogram_weights(variant.path)
    weight_keys = {k for k in base_ml_weights if k[1] == "weight"}
    assert weight_keys <= got.keys()
    recipe = parse_recipe(text)
    for key in weight_keys:
        original, values = base_ml_weights[key], got[key]
        assert values.shape == original.shape
        if original.size <= WEIGHT_THRESHOLD:
            np.testing.assert_array_equal(values, original)  # below weight_threshold: untouched
            continue
        for step in recipe.steps:
            _check_step(step, original, values, alone=len(recipe.steps) == 1)
    if any(isinstance(step, Prune) and step.n_m is None for step in recipe.steps):
        compressed = [key for key in weight_keys if base_ml_weights[key].size > WEIGHT_THRESHOLD]
        dense = [key for key in compressed if (got[key] == 0).mean() < 0.05]
        # All pruned on the tiny model; coremltools 9 leaves 3 of TinySeg18's 13 dense.
        assert len(dense) <= (0 if base_name == "tiny" else 3), dense


def _check_step(step: object, original: np.ndarray, values: np.ndarray, alone: bool) -> None:
    from pytest_coreml_quality.variants.recipes import LinearQuantize, Palettize, Prune

    out_channels = original.shape[0]
    if isinstance(step, Prune):
        zeros = values == 0
        if step.n_m is not None:
            n, m = step.n_m
            groups = zeros.reshape(out_channels, -1, m, *original.shape[2:])  # m consecutive input channels
            assert groups.sum(axis=2).min() >= n
        else:
            if zeros.mean() < 0.05:
                # coremltools' magnitude pruner left this tensor dense (on TinySeg18 the three
                # biggest convs, alone and in joint recipes; test_ml_program_recipe bounds how many)
                if alone:
                    np.testing.assert_array_equal(values, original)
                return
            assert zeros.mean() >= step.percent / 100 - 0.01
        if alone:  # in a joint recipe the kept weights are quantized further
            kept = ~zeros
            np.testing.assert_array_equal(values[kept], original[kept])
    elif isinstance(step, Palettize):
        rows = values.reshape(-1, step.group_size, *original.shape[1:]) if step.group_size else values[None]
        for group in rows:
            nonzero = np.unique(group[group != 0]) if values.size and (values == 0).mean() > 0.3 else np.unique(group)
            assert len(nonzero) <= 1 << step.nbits
    elif isinstance(step, LinearQuantize):
        bits = 8 if step.dtype == "int8" else 4
        if step.granularity == "per_tensor":
            blocks = values.reshape(1, -1)
        elif step.granularity == "per_block":
            if original.shape[1] % step.block_size:
                # coremltools leaves a tensor whose input channels the block size does not
                # divide as it is (TinySeg's 16- and 48-channel convs), with a warning.
                if alone:
                    np.testing.assert_array_equal(values, original)
                return
            # A block is block_size consecutive input channels of one output channel.
            blocks = values.reshape(-1, step.block_size * int(np.prod(original.shape[2:])))
        else:
            blocks = values.reshape(out_channels, -1)
        assert max(len(np.unique(b)) for b in blocks) <= 1 << bits
        span = np.abs(original).max() * 2
        kept = np.ones(values.shape, bool) if alone else values != 0  # after a prune, only the kept weights
        assert np.abs(values - original)[kept].max() <= span / ((1 << bits) - 1) + 1e-3


def test_ml_program_variants_on_the_fixture_models(shared_cache: Path) -> None:
    # A representative set (k-means over the fixtures' weights is slow); the full
    # list runs on the tiny model above.
    for name in ("TinySeg.mlpackage", "TinySegArray.mlpackage"):
        model = fixture_model(name)
        if model.spec_version < 9:  # iOS16/17 fixtures: the iOS18-only recipes are refused
            with pytest.raises(RecipeError, match="iOS18"):
                parse_recipes("int4", model)
        base_weights = {k for k in mlprogram_weights(model.path) if k[1] == "weight"}
        base_bits = weight_summary(model).bits_per_weight
        for recipe in parse_recipes("int8,pal4-uniform,pal2-uniform,prune50,prune2:4", model, include_base=False):
            variant = build_variant(model, recipe, shared_cache)
            _check_loads_like(model, variant)
            # Small tensors stay fp16 (weight_threshold), so only "fewer bits than base" holds generally.
            assert variant.bits_per_weight < base_bits
            assert mlprogram_weights(variant.path).keys() >= base_weights
