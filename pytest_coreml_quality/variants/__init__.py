"""Compressed variants of a Core ML model: recipe names -> coremltools calls -> cached builds.

    recipes = parse_recipes("q8,q4", model)          # [base, q8, q4], validated
    variant = build_variant(model, recipes[1], cache_dir, progress=print)
    variant.path, variant.size_bytes, variant.ratio, variant.bits_per_weight
"""

from pytest_coreml_quality.variants.build import coremltools_call
from pytest_coreml_quality.variants.cache import Variant, build_variant, cache_key, clear_cache
from pytest_coreml_quality.variants.recipes import BASE_RECIPE, VALID_FORMS, Recipe, parse_recipe, parse_recipes
from pytest_coreml_quality.variants.summary import WeightSummary, weight_summary

__all__ = [
    "BASE_RECIPE",
    "VALID_FORMS",
    "Recipe",
    "Variant",
    "WeightSummary",
    "build_variant",
    "cache_key",
    "clear_cache",
    "coremltools_call",
    "parse_recipe",
    "parse_recipes",
    "weight_summary",
]
