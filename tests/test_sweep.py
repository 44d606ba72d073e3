"""--coreml-variants=sweep: the recipes per model kind and target, and the time budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_coreml_quality.errors import CoreMLQualityError
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.session import QualitySession
from pytest_coreml_quality.settings import Settings
from pytest_coreml_quality.variants.sweep import SweepBudget, SweepSkipped, split_sweep, sweep_recipes

from .conftest import FIXTURES

MODELS = FIXTURES / "models"


def names(model: str) -> list[str]:
    return [str(r) for r in sweep_recipes(Model.open(MODELS / model))]


def test_neural_network_sweep() -> None:
    assert names("TinySeg.mlmodel") == [
        "fp16", "q8", "q7", "q6", "q5", "q4", "q3", "q2",
        "q8-lut", "q7-lut", "q6-lut", "q5-lut", "q4-lut",
        "q4-kmeans", "q5-kmeans", "q6-kmeans", "q7-kmeans", "q8-kmeans",  # slowest last: a budget cuts them first
    ]


def test_ml_program_sweep_for_ios16_leaves_out_ios18_recipes() -> None:
    assert names("TinySeg.mlpackage") == [
        "int8", "int8-sym", "pal8", "pal6", "pal4", "pal2", "prune25", "prune50", "prune75",
    ]


def test_ml_program_sweep_for_ios18_adds_blocks_groups_3_bit_and_joints() -> None:
    assert names("TinySeg18.mlpackage") == [
        "int8", "int8-sym", "int4-block32", "pal8", "pal6", "pal4", "pal3", "pal2", "pal4-group16",
        "prune25", "prune50", "prune75", "prune50+pal4", "prune50+int8",
    ]


def test_split_sweep_keeps_named_recipes() -> None:
    assert split_sweep(["sweep", "q3"]) == (["q3"], True)
    assert split_sweep(["SWEEP"]) == ([], True)
    assert split_sweep(["q8"]) == (["q8"], False)


def start(tmp_path: Path, variants: tuple[str, ...], budget: float | None = None) -> QualitySession:
    settings = Settings(models=(MODELS / "TinySeg.mlmodel",), variants=variants, sweep_budget=budget)
    return QualitySession.start(settings, default_cache_dir=tmp_path)


def test_named_recipes_stay_named_and_the_sweep_adds_the_rest(tmp_path: Path) -> None:
    session = start(tmp_path, ("sweep", "q3", "q1"))
    recipes = session.recipes["TinySeg.mlmodel"]
    assert recipes[:3] == ["base", "q3", "q1"] and recipes.count("q3") == 1
    assert len(recipes) == 3 + 17  # the sweep's 18, less q3 already named
    assert not session.is_swept("TinySeg.mlmodel", "q3") and not session.is_swept("TinySeg.mlmodel", "q1")
    assert session.is_swept("TinySeg.mlmodel", "q2") and not session.is_swept("TinySeg.mlmodel", "base")


def test_budget_arithmetic_with_a_clockless_estimate() -> None:
    budget = SweepBudget(10.0)
    assert budget.allows_another()  # nothing built yet: the first build always starts
    budget.charge(4.0)
    assert budget.allows_another()  # 4 + 4 expected <= 10
    budget.charge(4.0)
    assert not budget.allows_another()  # 8 + 4 expected > 10
    error = budget.skip("M [q2]")
    assert isinstance(error, SweepSkipped) and "budget of 10 s is spent" in str(error) and budget.skipped == ["M [q2]"]


def test_spent_budget_skips_new_builds_but_not_cached_or_named_variants(tmp_path: Path) -> None:
    session = start(tmp_path, ("sweep", "q4"), budget=0.0)
    key = "TinySeg.mlmodel"
    session.variant(key, "q4")  # named: never held back by the budget
    session.variant(key, "q8")  # the first swept build always starts
    assert session.sweep_budget.builds == 1 and session.sweep_budget.spent > 0
    with pytest.raises(SweepSkipped, match=r"TinySeg.mlmodel \[q7\] not built"):
        session.variant(key, "q7")
    assert session.sweep_budget.skipped == ["TinySeg.mlmodel [q7]"]
    assert any("sweep budget spent" in note for note in session.report_notes)
    # a second run with the same cache: q8 is cached and costs nothing; the swept variants
    # are built in one pass (cheap first) until the budget is spent: fp16 is its first build
    again = start(tmp_path, ("sweep",), budget=0.0)
    again.variant(key, "q8")
    assert again.sweep_budget.builds == 1 and again.variant(key, "fp16").cached
    with pytest.raises(SweepSkipped):
        again.variant(key, "q7")
    assert again.sweep_budget.skipped == ["TinySeg.mlmodel [q7]"]  # listed as asked, not all at once


def test_unknown_recommend_metric_is_a_setting_error() -> None:
    from pytest_coreml_quality.settings import resolve

    values = {"coreml_recommend_metric": "iuo"}
    with pytest.raises(CoreMLQualityError, match=r"--coreml-recommend-metric.*'iuo'.*expected a quality figure"):
        resolve(lambda dest: values.get(dest), lambda ini: None, invocation_dir=Path.cwd(), rootdir=Path.cwd())


def test_the_first_swept_variant_asked_for_builds_the_others_in_one_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_coreml_quality.errors import RecipeError
    from pytest_coreml_quality.variants import build as build_module
    from pytest_coreml_quality.variants.cache import is_cached
    from pytest_coreml_quality.variants.recipes import parse_recipe

    session = start(tmp_path, ("sweep", "q3"))
    key = "TinySeg.mlmodel"
    session.swept[key] = ["q8", "q6", "q4-lut"]  # a short sweep for the test
    built = []
    original = build_module.build_recipe

    def record(model, recipe, out_path, **kwargs):  # type: ignore[no-untyped-def]
        built.append(recipe.name)
        if recipe.name == "q4-lut":
            raise RecipeError("coremltools could not build recipe 'q4-lut': boom", path=model.path, field="recipe")
        return original(model, recipe, out_path, **kwargs)

    monkeypatch.setattr(build_module, "build_recipe", record)
    session.variant(key, "q3")  # named: built alone, as before
    assert built == ["q3"]
    session.variant(key, "q6")
    assert built == ["q3", "q6", "q8", "q4-lut"]  # the one asked for first, then the sweep's order
    model = session.model(key)
    assert is_cached(model, parse_recipe("q8"), session.cache_dir / "variants")
    assert session.variant(key, "q8").cached
    for _ in range(2):  # the failure is the recipe's own, reported each time it is asked for, not rebuilt
        with pytest.raises(RecipeError, match="boom"):
            session.variant(key, "q4-lut")
    assert built.count("q4-lut") == 1
