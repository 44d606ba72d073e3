"""The recipe grammar: normalisation, validation errors, and which model kinds a recipe fits."""

from __future__ import annotations

import pytest

from pytest_coreml_quality.errors import RecipeError
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.variants import BASE_RECIPE, coremltools_call, parse_recipe, parse_recipes
from pytest_coreml_quality.variants.recipes import LinearQuantize, NNQuantize, Palettize, Prune


@pytest.mark.parametrize(
    ("text", "name", "steps"),
    [
        ("base", "base", ()),
        ("fp16", "fp16", (NNQuantize(16),)),
        ("Q4", "q4", (NNQuantize(4, "linear"),)),
        ("q4-linear", "q4", (NNQuantize(4, "linear"),)),
        ("q3-kmeans", "q3-kmeans", (NNQuantize(3, "kmeans_lut"),)),
        ("q2-lut", "q2-lut", (NNQuantize(2, "linear_lut"),)),
        ("q8-sym", "q8-sym", (NNQuantize(8, "linear_symmetric"),)),
        ("int8", "int8", (LinearQuantize("int8"),)),
        ("int4-block32-sym", "int4-sym-block32", (LinearQuantize("int4", True, "per_block", 32),)),
        ("int8-pertensor", "int8-pertensor", (LinearQuantize("int8", False, "per_tensor"),)),
        ("pal4-int8lut-uniform", "pal4-uniform-int8lut", (Palettize(4, "uniform", None, True),)),
        ("pal4+int8lut", "pal4-int8lut", (Palettize(4, "kmeans", None, True),)),
        ("pal6-group16", "pal6-group16", (Palettize(6, "kmeans", 16),)),
        ("prune75", "prune75", (Prune(75),)),
        ("prune50-block4", "prune50-block4", (Prune(50, 4),)),
        ("prune2:4", "prune2:4", (Prune(n_m=(2, 4)),)),
        (" prune50+PAL4 ", "prune50+pal4", (Prune(50), Palettize(4))),
        ("prune50+int8-sym", "prune50+int8-sym", (Prune(50), LinearQuantize("int8", True))),
        ("prune50+pal4+int8lut", "prune50+pal4-int8lut", (Prune(50), Palettize(4, "kmeans", None, True))),
    ],
)
def test_recipes_are_normalised(text: str, name: str, steps: tuple) -> None:
    recipe = parse_recipe(text)
    assert recipe.name == name
    assert recipe.steps == steps
    # The canonical name parses back to the same recipe (one cache entry per recipe).
    assert parse_recipe(recipe.name) == recipe


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("q9", "1 to 8 bits"),
        ("q0", "1 to 8 bits"),
        ("q4-sym", "only at 8 bits"),
        ("int5", "int8 or int4"),
        ("int8-pertensor-block32", "one of -pertensor and -blockN"),
        ("int8-fast", "unknown modifier '-fast'"),
        ("pal5", "1, 2, 3, 4, 6, 8 bits"),
        ("pal4-group0", "at least 1"),
        ("prune0", "percentage from 1 to 99"),
        ("prune100", "percentage from 1 to 99"),
        ("prune50-block1", "at least 2"),
        ("prune5:4", "1 <= N <= M"),
        ("pal4:2", "only prune takes an N:M"),
        ("pal4+prune50", "write 'prune50+pal4'"),
        ("pal4+int8", "palN-int8lut"),
        ("int8lut", "must follow a pal step"),
        ("q8+pal4", "cannot be part of a joint"),
        ("prune50+", "empty step"),
        ("prune50+prune25", "may appear once"),
        ("gzip", "unknown step 'gzip'"),
        ("", "empty recipe name"),
    ],
)
def test_malformed_recipes_name_the_recipe_and_list_valid_forms(text: str, why: str) -> None:
    with pytest.raises(RecipeError) as info:
        parse_recipe(text)
    message = str(info.value)
    assert f"'{text}'" in message
    assert why in message
    for form in ("fp16", "q1..q8", "int8|int4", "pal1|pal2|pal3|pal4|pal6|pal8", "pruneN:M", "base"):
        assert form in message


def test_parse_recipes_puts_base_first_and_deduplicates(nn_model: Model) -> None:
    recipes = parse_recipes("q8, Q8,q4-linear,q4,base", nn_model)
    assert [r.name for r in recipes] == ["base", "q8", "q4"]
    assert recipes[0] is BASE_RECIPE
    assert [r.name for r in parse_recipes(["q8"], include_base=False)] == ["q8"]
    assert [r.name for r in parse_recipes("", nn_model)] == ["base"]


def test_empty_item_in_a_list_is_an_error() -> None:
    with pytest.raises(RecipeError, match="empty name"):
        parse_recipes("q8,,q4")


def test_ml_program_recipe_on_a_neural_network_says_why_and_what_applies(nn_model: Model) -> None:
    with pytest.raises(RecipeError) as info:
        parse_recipes("q8,pal4", nn_model)
    message = str(info.value)
    assert "'pal4'" in message and "optimize.coreml" in message and "neuralNetwork" in message
    assert str(nn_model.path) in message
    assert "fp16, q1..q8" in message  # what does apply


def test_neural_network_recipe_on_an_ml_program_says_why_and_what_applies(mlprogram_model: Model) -> None:
    with pytest.raises(RecipeError) as info:
        parse_recipes("q4", mlprogram_model)
    message = str(info.value)
    assert "'q4'" in message and "quantize_weights" in message and "ML Program" in message
    assert "int8, int4" in message and "pal1..pal8" in message
    with pytest.raises(RecipeError, match="compute_precision"):
        parse_recipes("fp16", mlprogram_model)


@pytest.mark.parametrize("text", ["int4", "int8-block32", "pal4-group16", "pal3", "pal4-int8lut", "prune50+pal4", "prune50+int8"])
def test_ios18_only_recipes_are_refused_for_older_ml_programs(mlprogram_ios16_model: Model, text: str) -> None:
    with pytest.raises(RecipeError) as info:
        parse_recipes(text, mlprogram_ios16_model)
    message = str(info.value)
    assert "iOS18" in message and f"'{parse_recipe(text).name}'" in message and "spec version 7" in message


@pytest.mark.parametrize("text", ["int8", "int8-sym-pertensor", "pal4", "pal8-uniform", "prune50", "prune2:4"])
def test_older_ml_programs_accept_the_ios16_recipes(mlprogram_ios16_model: Model, text: str) -> None:
    assert parse_recipes(text, mlprogram_ios16_model)[-1].name == parse_recipe(text).name


def test_coremltools_call_spells_out_the_api() -> None:
    assert coremltools_call(parse_recipe("q4-kmeans")) == (
        "quantization_utils.quantize_weights(model, nbits=4, quantization_mode='kmeans_lut')"
    )
    joint = coremltools_call(parse_recipe("prune2:4+int4-block32"))
    assert joint.startswith("prune_weights(m, OptimizationConfig(OpMagnitudePrunerConfig(n_m_ratio=(2, 4))))")
    assert "granularity='per_block', block_size=32)), joint_compression=True)" in joint
