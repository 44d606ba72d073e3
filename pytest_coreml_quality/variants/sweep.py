"""``--coreml-variants=sweep``: every recipe that applies to a model, within a time budget.

The sweep lists the recipes worth comparing for the model's kind and deployment target
(the iOS18-only ones are dropped for older ML Programs). A :class:`SweepBudget` stops
starting new builds once the builds so far, plus the expected cost of one more (their
mean), would exceed the budget; cached variants cost nothing and are always used.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pytest_coreml_quality.errors import RecipeError
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.variants.recipes import Recipe, parse_recipe

SWEEP = "sweep"

# Cheap builds first: k-means (coremltools' own clustering) costs minutes where the
# others cost a fraction of a second, so a budget cuts it before anything else.
NEURAL_NETWORK_SWEEP = (
    "fp16",
    *(f"q{n}" for n in range(8, 1, -1)),
    *(f"q{n}-lut" for n in range(8, 3, -1)),
    *(f"q{n}-kmeans" for n in range(4, 9)),
)
ML_PROGRAM_SWEEP = (
    "int8",
    "int8-sym",
    "int4-block32",  # iOS18
    "pal8",
    "pal6",
    "pal4",
    "pal3",  # iOS18
    "pal2",
    "pal4-group16",  # iOS18
    "prune25",
    "prune50",
    "prune75",
    "prune50+pal4",  # joints: iOS18
    "prune50+int8",
)


def sweep_recipes(model: Model) -> list[Recipe]:
    """The sweep's recipes that apply to ``model`` (its kind and spec version), in sweep order."""
    recipes = []
    for name in NEURAL_NETWORK_SWEEP + ML_PROGRAM_SWEEP:
        recipe = parse_recipe(name)
        try:
            recipe.check_applies_to(model)
        except RecipeError:
            continue
        recipes.append(recipe)
    return recipes


def split_sweep(names: Iterable[str]) -> tuple[list[str], bool]:
    """(the named recipes, whether ``sweep`` was asked for) from ``--coreml-variants`` items."""
    names = list(names)
    named = [n for n in names if n.strip().lower() != SWEEP]
    return named, len(named) != len(names)


class SweepSkipped(Exception):
    """A swept recipe not built because the sweep's time budget is spent."""


@dataclass
class SweepBudget:
    """Seconds the sweep's builds may take in this process; see the module docstring."""

    seconds: float
    clock: Callable[[], float] = field(default=time.perf_counter, repr=False)
    spent: float = 0.0
    builds: int = 0
    skipped: list[str] = field(default_factory=list)

    def allows_another(self) -> bool:
        estimate = self.spent / self.builds if self.builds else 0.0
        return self.spent + estimate <= self.seconds

    def charge(self, seconds: float, builds: int = 1) -> None:
        """Add ``seconds`` of build time; ``builds=0`` for time that belongs to builds already counted."""
        self.spent += seconds
        self.builds += builds

    def skip(self, label: str) -> SweepSkipped:
        if label not in self.skipped:
            self.skipped.append(label)
        return SweepSkipped(
            f"{label} not built: the sweep budget of {self.seconds:g} s is spent "
            f"({self.builds} build(s) took {self.spent:.1f} s; raise --coreml-sweep-budget)"
        )
