"""The recipe language: short names (``q8``, ``pal4``, ``prune50+int8``) for coremltools compressions.

A recipe is one or more *steps* joined by ``+`` (joint compression). Each step maps to
exactly one coremltools call; :mod:`pytest_coreml_quality.variants.build` makes the calls.

* NeuralNetwork ``.mlmodel`` (``quantization_utils.quantize_weights``): ``fp16``,
  ``q1``..``q8`` (linear), ``qN-kmeans`` (``kmeans_lut``), ``qN-lut`` (``linear_lut``),
  ``q8-sym`` (``linear_symmetric``, which coremltools only offers at 8 bits).
* ML Program ``.mlpackage`` (``coremltools.optimize.coreml``):
  ``int8``/``int4`` with ``-sym`` and ``-pertensor`` or ``-blockN``;
  ``palN`` (N in 1, 2, 3, 4, 6, 8) with ``-uniform``, ``-groupN`` and ``-int8lut``;
  ``pruneP`` (P percent) with ``-blockN``, and ``pruneN:M``;
  joints ``prune..+pal..`` and ``prune..+int..``.
* ``base``: the model as given.

Names are case-insensitive; modifiers may come in any order and are normalised to the
canonical order above, so ``INT4-block32-sym`` and ``int4-sym-block32`` are one recipe
(one cache entry).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pytest_coreml_quality.errors import RecipeError
from pytest_coreml_quality.results import BASE_VARIANT

if TYPE_CHECKING:
    from pytest_coreml_quality.model import Model

Family = Literal["base", "neuralNetwork", "mlProgram"]

NEURAL_NETWORK_KINDS = frozenset({"neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor"})
PIPELINE_KINDS = frozenset({"pipeline", "pipelineClassifier", "pipelineRegressor"})
PALETTE_BITS = (1, 2, 3, 4, 6, 8)  # what OpPalettizerConfig accepts
IOS18_SPEC_VERSION = 9

VALID_FORMS = (
    "base; "
    "NeuralNetwork .mlmodel: fp16, q1..q8, q1..q8-kmeans, q1..q8-lut, q8-sym; "
    "ML Program .mlpackage: int8|int4[-sym][-pertensor|-blockN], "
    "pal1|pal2|pal3|pal4|pal6|pal8[-uniform][-groupN][-int8lut], "
    "prune1..prune99[-blockN], pruneN:M (e.g. prune2:4), "
    "and joints prune..+pal.. or prune..+int.. (e.g. prune50+pal4, prune50+int8)"
)
NEURAL_NETWORK_FORMS = "fp16, q1..q8, q1..q8-kmeans, q1..q8-lut, q8-sym"
ML_PROGRAM_FORMS = "int8, int4 (-sym, -pertensor, -blockN), pal1..pal8 (-uniform, -groupN, -int8lut), prune25/50/75 (-blockN), pruneN:M, prune..+pal.., prune..+int.."


# --- steps: each family describes its own coremltools calls, ordering and requirements -------


@dataclass(frozen=True)
class Call:
    """One ``coremltools.optimize.coreml`` call: ``function(model, OptimizationConfig(config(**kwargs)))``."""

    function: str
    config: str
    kwargs: dict[str, Any]

    def source(self, joint: bool) -> str:
        """The call as Python source, for docs and reports."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        tail = ", joint_compression=True" if joint else ""
        return f"{self.function}(m, OptimizationConfig({self.config}({args})){tail})"


@dataclass(frozen=True)
class NNQuantize:
    """``quantization_utils.quantize_weights(model, nbits, quantization_mode)``; nbits 16 is fp16."""

    nbits: int
    mode: Literal["linear", "linear_symmetric", "kmeans_lut", "linear_lut"] = "linear"

    joint_order: ClassVar[int | None] = None  # NeuralNetwork compressions do not combine

    @property
    def name(self) -> str:
        if self.nbits == 16:
            return "fp16"
        suffix = {"linear": "", "linear_symmetric": "-sym", "kmeans_lut": "-kmeans", "linear_lut": "-lut"}[self.mode]
        return f"q{self.nbits}{suffix}"

    def ios18_reason(self) -> str | None:
        return None

    def source(self, joint: bool) -> str:
        return f"quantization_utils.quantize_weights(model, nbits={self.nbits}, quantization_mode={self.mode!r})"


@dataclass(frozen=True)
class MLStep:
    """An ML Program step: one or more :class:`Call` s of ``coremltools.optimize.coreml``."""

    joint_order: ClassVar[int | None] = None  # position in a joint recipe: prune, pal, int

    def calls(self) -> list[Call]:
        raise NotImplementedError

    def ios18_reason(self) -> str | None:
        """Why this step needs an ML Program targeting iOS18, or None."""
        return None

    def source(self, joint: bool) -> str:
        return " -> ".join(call.source(joint or index > 0) for index, call in enumerate(self.calls()))


@dataclass(frozen=True)
class LinearQuantize(MLStep):
    """``optimize.coreml.linear_quantize_weights`` with an ``OpLinearQuantizerConfig``."""

    dtype: Literal["int8", "int4"]
    symmetric: bool = False
    granularity: Literal["per_channel", "per_tensor", "per_block"] = "per_channel"
    block_size: int | None = None

    joint_order: ClassVar[int | None] = 2

    @property
    def name(self) -> str:
        out = self.dtype + ("-sym" if self.symmetric else "")
        if self.granularity == "per_tensor":
            out += "-pertensor"
        elif self.granularity == "per_block":
            out += f"-block{self.block_size}"
        return out

    def calls(self) -> list[Call]:
        kwargs: dict[str, Any] = {
            "mode": "linear_symmetric" if self.symmetric else "linear",
            "dtype": self.dtype,
            "granularity": self.granularity,
        }
        if self.block_size is not None:
            kwargs["block_size"] = self.block_size
        return [Call("linear_quantize_weights", "OpLinearQuantizerConfig", kwargs)]

    def ios18_reason(self) -> str | None:
        if self.dtype == "int4":
            return "4-bit linear quantization"
        if self.granularity == "per_block":
            return "per-block quantization"
        return None


# The lookup table of a palN-int8lut recipe: one int8 scale for the whole table.
INT8_LUT_CALL = Call(
    "linear_quantize_weights", "OpLinearQuantizerConfig", {"mode": "linear_symmetric", "dtype": "int8", "granularity": "per_tensor"}
)


@dataclass(frozen=True)
class Palettize(MLStep):
    """``optimize.coreml.palettize_weights`` with an ``OpPalettizerConfig``.

    ``int8_lut`` adds a joint ``linear_quantize_weights`` that stores the lookup table as int8.
    """

    nbits: int
    mode: Literal["kmeans", "uniform"] = "kmeans"
    group_size: int | None = None  # None: per_tensor; else per_grouped_channel
    int8_lut: bool = False

    joint_order: ClassVar[int | None] = 1

    @property
    def name(self) -> str:
        out = f"pal{self.nbits}"
        if self.mode == "uniform":
            out += "-uniform"
        if self.group_size is not None:
            out += f"-group{self.group_size}"
        if self.int8_lut:
            out += "-int8lut"
        return out

    def calls(self) -> list[Call]:
        kwargs: dict[str, Any] = {"mode": self.mode, "nbits": self.nbits}
        if self.group_size is not None:
            kwargs.update(granularity="per_grouped_channel", group_size=self.group_size)
        calls = [Call("palettize_weights", "OpPalettizerConfig", kwargs)]
        return calls + [INT8_LUT_CALL] if self.int8_lut else calls

    def ios18_reason(self) -> str | None:
        if self.group_size is not None:
            return "per-grouped-channel palettization"
        if self.nbits == 3:
            return "3-bit palettes"
        if self.int8_lut:
            return "an int8 lookup table (joint compression)"
        return None


@dataclass(frozen=True)
class Prune(MLStep):
    """``optimize.coreml.prune_weights`` with an ``OpMagnitudePrunerConfig``."""

    percent: int | None = None  # target_sparsity * 100
    block_size: int | None = None
    n_m: tuple[int, int] | None = None

    joint_order: ClassVar[int | None] = 0

    @property
    def name(self) -> str:
        if self.n_m is not None:
            return f"prune{self.n_m[0]}:{self.n_m[1]}"
        return f"prune{self.percent}" + (f"-block{self.block_size}" if self.block_size else "")

    def calls(self) -> list[Call]:
        if self.n_m is not None:
            return [Call("prune_weights", "OpMagnitudePrunerConfig", {"n_m_ratio": self.n_m})]
        kwargs: dict[str, Any] = {"target_sparsity": (self.percent or 0) / 100}
        if self.block_size is not None:
            kwargs["block_size"] = self.block_size
        return [Call("prune_weights", "OpMagnitudePrunerConfig", kwargs)]


Step = NNQuantize | LinearQuantize | Palettize | Prune


@dataclass(frozen=True)
class Recipe:
    """A normalised recipe: its canonical ``name``, the model family it needs, its steps."""

    name: str
    family: Family
    steps: tuple[Step, ...] = ()

    @property
    def is_base(self) -> bool:
        return self.family == "base"

    def __str__(self) -> str:
        return self.name

    def ios18_reason(self) -> str | None:
        """Why this recipe needs an ML Program targeting iOS18 (spec version 9), or None."""
        if len(self.steps) > 1:
            return "joint compression"
        return next((reason for step in self.steps if (reason := step.ios18_reason())), None)

    def check_applies_to(self, model: Model) -> None:
        """Raise :class:`RecipeError` if this recipe cannot compress ``model``'s kind."""
        if self.is_base:
            return
        kind = model.kind
        nn_like = kind in NEURAL_NETWORK_KINDS or kind in PIPELINE_KINDS
        if self.family == "neuralNetwork" and nn_like:
            return
        if self.family == "mlProgram" and kind == "mlProgram":
            reason = self.ios18_reason()
            if reason and model.spec_version < IOS18_SPEC_VERSION:
                raise RecipeError(
                    f"recipe '{self.name}' uses {reason}, which coremltools supports only for ML Programs "
                    f"targeting iOS18 (spec version {IOS18_SPEC_VERSION}), and this model has spec version "
                    f"{model.spec_version}: re-convert it with minimum_deployment_target=ct.target.iOS18",
                    path=model.path,
                    field="recipe",
                    expected="a recipe for older targets: int8[-sym][-pertensor], pal1|2|4|6|8[-uniform], prune..",
                )
            return
        if kind == "mlProgram":
            why = (
                f"recipe '{self.name}' uses quantization_utils.quantize_weights, which only compresses "
                "NeuralNetwork (.mlmodel) specs, and this model is an ML Program"
            )
            if self.name == "fp16":
                why += " (an ML Program's weight precision is chosen at conversion: ct.convert(compute_precision=...))"
            expected = f"an ML Program recipe: base, {ML_PROGRAM_FORMS}"
        elif nn_like:
            why = (
                f"recipe '{self.name}' uses coremltools.optimize.coreml, which only compresses ML Programs "
                f"(.mlpackage), and this model is a {kind} spec"
            )
            expected = f"a NeuralNetwork recipe: base, {NEURAL_NETWORK_FORMS}"
        else:
            why = f"recipe '{self.name}' cannot compress a '{kind}' model: coremltools compresses only NeuralNetwork and ML Program models"
            expected = "base"
        raise RecipeError(why, path=model.path, field="recipe", expected=expected)


BASE_RECIPE = Recipe(name=BASE_VARIANT, family="base")


# --- parsing ------------------------------------------------------------------------------

_NN_RE = re.compile(r"^q([0-9]+)(?:-(kmeans|lut|sym|linear))?$")
_HEAD_RE = re.compile(r"^(int|pal|prune)([0-9]+)(?::([0-9]+))?$")
_BLOCK_RE = re.compile(r"^block([0-9]+)$")
_GROUP_RE = re.compile(r"^group([0-9]+)$")


def _error(recipe: str, why: str) -> RecipeError:
    return RecipeError(f"invalid recipe '{recipe}': {why}", field="recipe", expected=VALID_FORMS)


def parse_recipe(text: str) -> Recipe:
    """Parse and normalise one recipe name; raise :class:`RecipeError` naming it if malformed."""
    raw = text
    name = text.strip().lower()
    if not name:
        raise _error(raw, "empty recipe name")
    if name == "base":
        return BASE_RECIPE
    if name == "fp16":
        return Recipe("fp16", "neuralNetwork", (NNQuantize(16),))
    nn = _NN_RE.match(name)
    if nn:
        return Recipe(*_nn_recipe(raw, int(nn.group(1)), nn.group(2)))
    tokens = name.split("+")
    if any(not t for t in tokens):
        raise _error(raw, "empty step around '+'")
    steps: list[Step] = []
    for token in tokens:
        if token in ("fp16", "base") or _NN_RE.match(token):
            raise _error(raw, f"'{token}' cannot be part of a joint ('+') recipe; only ML Program steps prune.., pal.., int.. combine")
        steps.append(_parse_ml_step(raw, token))
    steps = _fold_int8lut(raw, steps)  # 'pal4+int8lut' is another spelling of 'pal4-int8lut'
    _check_joint_order(raw, steps)
    return Recipe("+".join(s.name for s in steps), "mlProgram", tuple(steps))


def _nn_recipe(raw: str, nbits: int, suffix: str | None) -> tuple[str, Family, tuple[Step, ...]]:
    if not 1 <= nbits <= 8:
        raise _error(raw, f"quantize_weights takes 1 to 8 bits (or fp16), not {nbits}")
    mode = {None: "linear", "linear": "linear", "kmeans": "kmeans_lut", "lut": "linear_lut", "sym": "linear_symmetric"}[suffix]
    if mode == "linear_symmetric" and nbits != 8:
        raise _error(raw, "quantize_weights offers linear_symmetric only at 8 bits: use q8-sym")
    step = NNQuantize(nbits, mode)  # type: ignore[arg-type]
    return step.name, "neuralNetwork", (step,)


def _parse_ml_step(raw: str, token: str) -> Step:
    if token == "int8lut":
        return Palettize(nbits=0, int8_lut=True)  # placeholder folded into the preceding pal step
    head, *mods = token.split("-")
    m = _HEAD_RE.match(head)
    if not m:
        raise _error(raw, f"unknown step '{token}'")
    kind, number, second = m.group(1), int(m.group(2)), m.group(3)
    if second is not None and kind != "prune":
        raise _error(raw, f"'{head}': only prune takes an N:M ratio")
    if len(set(mods)) != len(mods):
        raise _error(raw, f"repeated modifier in '{token}'")
    if kind == "int":
        return _parse_linear(raw, token, number, mods)
    if kind == "pal":
        return _parse_palettize(raw, token, number, mods)
    return _parse_prune(raw, token, number, None if second is None else int(second), mods)


def _parse_linear(raw: str, token: str, bits: int, mods: list[str]) -> LinearQuantize:
    if bits not in (8, 4):
        raise _error(raw, f"linear quantization stores int8 or int4 weights, not int{bits}")
    symmetric = False
    granularity = "per_channel"
    block = None
    for mod in mods:
        b = _BLOCK_RE.match(mod)
        if mod == "sym":
            symmetric = True
        elif mod == "pertensor" and granularity == "per_channel":
            granularity = "per_tensor"
        elif b and granularity == "per_channel":
            granularity, block = "per_block", _positive(raw, int(b.group(1)), "block size")
        elif mod == "pertensor" or b:
            raise _error(raw, f"'{token}': choose one of -pertensor and -blockN")
        else:
            raise _error(raw, f"unknown modifier '-{mod}' in '{token}' (int steps take -sym, -pertensor, -blockN)")
    return LinearQuantize(f"int{bits}", symmetric, granularity, block)  # type: ignore[arg-type]


def _parse_palettize(raw: str, token: str, bits: int, mods: list[str]) -> Palettize:
    if bits not in PALETTE_BITS:
        raise _error(raw, f"palettization takes {', '.join(map(str, PALETTE_BITS))} bits, not {bits}")
    mode = "kmeans"
    group = None
    int8_lut = False
    for mod in mods:
        g = _GROUP_RE.match(mod)
        if mod == "uniform":
            mode = "uniform"
        elif mod == "kmeans":
            mode = "kmeans"
        elif g:
            group = _positive(raw, int(g.group(1)), "group size")
        elif mod == "int8lut":
            int8_lut = True
        else:
            raise _error(raw, f"unknown modifier '-{mod}' in '{token}' (pal steps take -uniform, -groupN, -int8lut)")
    return Palettize(bits, mode, group, int8_lut)  # type: ignore[arg-type]


def _parse_prune(raw: str, token: str, number: int, second: int | None, mods: list[str]) -> Prune:
    if second is not None:
        if mods:
            raise _error(raw, f"'{token}': an N:M prune takes no modifiers")
        if not 1 <= number <= second:
            raise _error(raw, f"'{token}': N:M pruning needs 1 <= N <= M")
        return Prune(n_m=(number, second))
    if not 1 <= number <= 99:
        raise _error(raw, f"'{token}': the sparsity is a percentage from 1 to 99")
    block = None
    for mod in mods:
        b = _BLOCK_RE.match(mod)
        if b:
            block = int(b.group(1))
            if block < 2:
                raise _error(raw, f"'{token}': block-structured pruning needs a block size of at least 2")
        else:
            raise _error(raw, f"unknown modifier '-{mod}' in '{token}' (prune steps take -blockN, or write pruneN:M)")
    return Prune(percent=number, block_size=block)


def _positive(raw: str, value: int, what: str) -> int:
    if value < 1:
        raise _error(raw, f"the {what} must be at least 1")
    return value


def _fold_int8lut(raw: str, steps: list[Step]) -> list[Step]:
    """Merge a bare ``int8lut`` step into the palettization before it."""
    out: list[Step] = []
    for step in steps:
        if isinstance(step, Palettize) and step.nbits == 0:
            prev = out[-1] if out else None
            if not isinstance(prev, Palettize) or prev.int8_lut:
                raise _error(raw, "'int8lut' quantizes a palette's lookup table: it must follow a pal step (e.g. pal4+int8lut)")
            out[-1] = Palettize(prev.nbits, prev.mode, prev.group_size, True)
        else:
            out.append(step)
    return out


def _check_joint_order(raw: str, steps: list[Step]) -> None:
    kinds = [type(s) for s in steps]
    if len(set(kinds)) != len(kinds):
        raise _error(raw, "each kind of step (prune, pal, int) may appear once")
    if kinds != sorted(kinds, key=lambda kind: kind.joint_order):
        ordered = "+".join(s.name for s in sorted(steps, key=lambda s: s.joint_order))
        raise _error(raw, f"joint steps apply in the order prune, pal, int: write '{ordered}'")
    if Palettize in kinds and LinearQuantize in kinds:
        raise _error(raw, "to quantize a palette's lookup table write palN-int8lut; pal and int steps do not otherwise combine")


def parse_recipes(
    recipes: str | Iterable[str], model: Model | None = None, *, include_base: bool = True
) -> list[Recipe]:
    """Parse ``"q8,q4"`` (or a list of names) into normalised, de-duplicated recipes.

    With ``model``, every recipe is also checked against the model's kind. ``base`` comes
    first when ``include_base`` is true, since every comparison is made against it.
    """
    if isinstance(recipes, str):
        items = recipes.split(",") if recipes.strip() else []
        if any(not item.strip() for item in items):
            raise _error(recipes, "empty name in the comma-separated list")
    else:
        items = list(recipes)
    parsed: list[Recipe] = [BASE_RECIPE] if include_base else []
    for item in items:
        recipe = parse_recipe(item)
        if model is not None:
            recipe.check_applies_to(model)
        if recipe not in parsed:
            parsed.append(recipe)
    return parsed
