"""Workers beyond the number of variants help predict, so ``-n N`` keeps all N workers busy.

Under ``--dist loadgroup`` every item of one variant runs on one worker (its size, quality,
load and baseline items share an xdist group), so a run with fewer variants than workers
left the other workers idle: one variant on ``-n 2`` ran on one worker with half the cores.
When the workers outnumber the variants, the collector adds one ``predict[...]`` helper item
per idle worker, each in its own group. A helper claims the chunks of images no one holds
(:func:`.chunks.fill_in_chunks` with ``wait=False``), of its own variant first and then of the
model's other variants, and writes the predictions to the cache; the quality items read
every chunk back from the cache, whoever predicted it, so the figures are identical.

Helpers measure and judge nothing, never wait for a chunk another worker holds, and load a
model only while some of its chunks are unclaimed: a helper that starts late finds the cache
full and returns. A variant's load items run after its quality item on the variant's own
worker, when every chunk is done, so no helper loads that model while its loads are timed.
Collection depends only on the worker count, the same in every worker.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pytest_coreml_quality.errors import CoreMLQualityError
from pytest_coreml_quality.results import BASE_VARIANT

# The items whose predictions a helper computes ahead: they score every image of a variant.
PREDICTING_CHECKS = ("quality", "baseline")


@dataclass(frozen=True)
class Helper:
    """One helper item: the model it predicts for, the variant it claims chunks of first."""

    model_key: str
    first: str
    ordinal: int = 1  # 2, 3 ... for further helpers starting at the same variant

    @property
    def name(self) -> str:
        suffix = "" if self.ordinal == 1 else f"-{self.ordinal}"
        return f"predict[{self.first}{suffix}]"

    def order(self, recipes: list[str]) -> list[str]:
        """``recipes`` in the order this helper visits them: its own first, then the next ones round."""
        start = recipes.index(self.first) if self.first in recipes else 0
        return recipes[start:] + recipes[:start]


def plan_helpers(workers: int, groups: dict[str, list[str]], helpable: dict[str, list[str]]) -> list[Helper]:
    """The helper items of a run on ``workers`` xdist workers.

    ``groups``: model key -> its recipes (one xdist group each, all busy); ``helpable``: model
    key -> the recipes helpers may predict (not swept ones, whose builds the sweep plans).
    One helper per worker beyond the groups, the models in turn, and within a model its
    helpable variants in order (the base first: every variant's drift needs it).
    """
    idle = workers - sum(len(recipes) for recipes in groups.values())
    models = [key for key in groups if helpable.get(key)]
    if idle <= 0 or not models:
        return []
    helpers = []
    started: Counter[tuple[str, str]] = Counter()
    for j in range(idle):
        key = models[j % len(models)]
        recipes = helpable[key]
        first = recipes[(j // len(models)) % len(recipes)]
        started[(key, first)] += 1
        helpers.append(Helper(key, first, started[(key, first)]))
    return helpers


def needed_recipes(selected: Iterable[tuple[str, str, str]], model_key: str) -> set[str]:
    """The recipes of ``model_key`` whose predictions the selected ``(model, check, recipe)`` items
    need: the variants of its quality and baseline items, and the base (their drift)."""
    needed = {recipe for model, check, recipe in selected if model == model_key and check in PREDICTING_CHECKS}
    if needed:
        needed.add(BASE_VARIANT)
    return needed


def help_predict(state: Any, helper: Helper, helpable: list[str], needed: set[str]) -> dict[str, int]:
    """Predict the unclaimed chunks of the helper's variants (on every lane) into the cache.

    Returns images predicted per results key. A variant that fails to build or load is left
    alone: its own items report the error.
    """
    from pytest_coreml_quality.variants.sweep import SweepSkipped

    model_key = helper.model_key
    predicted: dict[str, int] = {}
    for recipe in helper.order(helpable):
        if recipe not in needed:
            continue
        # Tensor outputs are compared on the run's backend only; masks on every lane.
        keys = [recipe] if model_key in state.kinds else state.run_keys(recipe)
        for key in keys:
            try:
                if model_key in state.kinds:
                    evaluation = state.tensor_evaluation(model_key, key)
                else:
                    evaluation = state.evaluation(model_key, key)
                predicted[key] = evaluation.predict_free_chunks()
            except (CoreMLQualityError, SweepSkipped):
                break
    return predicted


__all__ = ["PREDICTING_CHECKS", "Helper", "help_predict", "needed_recipes", "plan_helpers"]
