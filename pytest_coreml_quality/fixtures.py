"""Fixtures for an app repo's own tests.

``coreml_variant`` is parametrised over the selected variants (ids = recipe names) and,
when several lanes run (compute units, two backends), over each variant's lanes (ids like
``q4-CPU_AND_NE``, as the generated items); everything derived from it (predictions, metrics) is computed lazily and shared through
the run's session: two tests asking for one variant's metrics run the model once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from pytest_coreml_quality.items import fail_on_user_error
from pytest_coreml_quality.lanes import split_key
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.results import BASE_VARIANT, VariantResult
from pytest_coreml_quality.session import QualitySession
from pytest_coreml_quality.stash import session_of

if TYPE_CHECKING:
    from pytest_coreml_quality.recommend import Recommendation
    from pytest_coreml_quality.dataset import Dataset


@dataclass(frozen=True)
class VariantHandle:
    """One variant of one model, as a test sees it. Everything is computed on first use."""

    session: QualitySession
    model_key: str
    recipe: str  # the recipe name ('q4'), also on a lane
    key: str = ""  # the results key on this variant's lane ('q4@CPU_AND_NE'); '' means ``recipe``

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.recipe)

    @property
    def lane(self) -> str:
        """The lane's label (``CPU_AND_NE``, ``coreml:ALL``, ``onnx``); '' in a plain run."""
        return split_key(self.key)[1]

    @property
    def base_model(self) -> Model:
        return self.session.model(self.model_key)

    @property
    def model(self) -> Model:
        """The variant's own model file (the base model for ``base``)."""
        return fail_on_user_error(lambda: self.session.variant_model(self.model_key, self.key))

    @property
    def result(self) -> VariantResult:
        """Size, ratio and weight summary (building the variant if needed)."""
        fail_on_user_error(lambda: self.session.variant(self.model_key, self.key))
        return self.session.results.models[self.model_key].variant(self.key)

    @property
    def size_mb(self) -> float:
        value = self.result.size_mb
        assert value is not None
        return value

    @property
    def ratio(self) -> float | None:
        return self.result.ratio

    def predictions(self) -> dict[str, Any]:
        """Image id -> the variant's prediction for that image.

        Segmenters: the predicted mask (float32 in [0, 1], the photo's size). Models that
        are not (``--coreml-output-kind``): classifiers give {class label: probability};
        other models the output as the model returned it (float32 array; image outputs as
        H x W x C pixels), or {output name: array} when several outputs are compared.
        """
        if self.model_key in self.session.kinds:
            return fail_on_user_error(self._raw_outputs)
        return fail_on_user_error(lambda: self.session.evaluation(self.model_key, self.key).predictions)

    def _raw_outputs(self) -> dict[str, Any]:
        from pytest_coreml_quality.images import class_probabilities

        tev = self.session.tensor_evaluation(self.model_key, self.recipe)
        outputs, names = tev.outputs, tev.output_names
        ids = tev.dataset.ids
        if tev.labels is not None:
            return {sid: class_probabilities(tev.labels, outputs[names[0]][sid]) for sid in ids}
        if len(names) == 1:
            return {sid: outputs[names[0]][sid] for sid in ids}
        return {sid: {name: outputs[name][sid] for name in names} for sid in ids}

    def metrics(self) -> VariantResult:
        """Metrics vs ground truth (``.metrics``), drift vs base (``.drift``), per image (``.per_image``)."""
        return fail_on_user_error(lambda: self.session.quality(self.model_key, self.key))

    def __repr__(self) -> str:
        return f"<coreml variant {self.model_key} [{self.key}]>"


def variant_params(session: QualitySession | None) -> list[tuple[str, str]]:
    """(model key, results key) pairs that ``coreml_variant`` is parametrised over: one per variant and lane."""
    if session is None or not session.models:
        return []
    return [(key, run_key) for key, recipes in session.recipes.items() for recipe in recipes for run_key in session.run_keys(recipe)]


def variant_id(session: QualitySession, param: tuple[str, str]) -> str:
    """Recipe names as ids (``q4-CPU_AND_NE`` on a lane, as the generated items); prefixed with the model
    when the run checks several models."""
    key, run_key = param
    recipe, _ = split_key(run_key)
    lane = session.lane(run_key)
    name = lane.item_id(recipe) if lane is not None else recipe
    return name if len(session.models) == 1 else f"{key}-{name}"


def _active(request: pytest.FixtureRequest) -> QualitySession:
    session = session_of(request.config)
    if session is None or not session.models:
        pytest.skip("no Core ML model given: pass --coreml-model=PATH or set coreml_model in the ini file")
    return session


@pytest.fixture(scope="session")
def coreml_session(request: pytest.FixtureRequest) -> QualitySession:
    """The run-wide session (settings, models, results); skips when no model is given."""
    return _active(request)


@pytest.fixture
def coreml_variant(request: pytest.FixtureRequest, coreml_session: QualitySession) -> VariantHandle:
    """The variant this test instance is about (parametrised over ``--coreml-variants``, with base)."""
    param = getattr(request, "param", None)
    if param is None:
        first = coreml_session.key(coreml_session.models[0])
        param = (first, coreml_session.run_keys(BASE_VARIANT)[0])
    model_key, run_key = param
    return VariantHandle(coreml_session, model_key, split_key(run_key)[0], run_key)


@pytest.fixture
def coreml_model(request: pytest.FixtureRequest, coreml_session: QualitySession) -> Model:
    """The model under test (the base model of this test's variant, or the first model)."""
    if "coreml_variant" in request.fixturenames:
        handle: VariantHandle = request.getfixturevalue("coreml_variant")
        return handle.base_model
    return coreml_session.models[0]


@pytest.fixture(scope="session")
def coreml_dataset(coreml_session: QualitySession) -> "Dataset":
    """The golden set (decoded once per run); skips when ``--coreml-dataset`` is not given."""
    if coreml_session.dataset is None:
        pytest.skip("no golden set given: pass --coreml-dataset=DIR or set coreml_dataset in the ini file")
    return coreml_session.dataset


@pytest.fixture
def coreml_predictions(coreml_variant: VariantHandle, coreml_dataset: "Dataset") -> dict[str, Any]:
    """This variant's predictions by image id (cached, shared).

    Segmenters: predicted masks, float32 in [0, 1] at the photo's size. Models that are
    not segmenters give their raw outputs instead: a classifier {class label: probability}
    per image; heat maps, depth, embeddings and colour images the float32 array the model
    returned (image outputs as H x W x C pixels), or {output name: array} per image when
    several outputs are compared (no ``--coreml-output``).
    """
    return coreml_variant.predictions()


@pytest.fixture
def coreml_metrics(coreml_variant: VariantHandle, coreml_dataset: "Dataset") -> VariantResult:
    """This variant's metrics: ``.metrics["iou"]``, ``.drift["mae"]``, ``.per_image[name]``."""
    return coreml_variant.metrics()


@pytest.fixture
def coreml_load_benchmark(
    request: pytest.FixtureRequest, coreml_variant: VariantHandle, coreml_session: QualitySession
) -> Any:
    """A function ``measure(kind="warm")`` timing this variant's cold or warm load with pytest-benchmark.

    pytest-benchmark allows one measurement per test, so call it once; it returns the
    median seconds (timed plainly when pytest-benchmark is disabled).
    """
    from pytest_coreml_quality.items import measure_load, optional_benchmark

    benchmark = optional_benchmark(request)

    def measure(kind: str = "warm") -> float:
        if kind not in ("cold", "warm"):
            raise ValueError(f"coreml_load_benchmark: kind={kind!r}, expected 'cold' or 'warm'")
        return measure_load(coreml_session, coreml_variant.model_key, coreml_variant.key, kind, benchmark)

    return measure


@pytest.fixture
def coreml_recommendation(coreml_session: QualitySession) -> "Recommendation":
    """What to ship for the (first) model: ``.recipe`` is the smallest variant passing every threshold.

    ``assert coreml_recommendation.recipe == "q6"`` keeps an app's choice from drifting.
    Every variant is measured for what the thresholds need (from the caches when the
    generated items already did). For several models use
    ``coreml_session.recommendation(key, measure=True)``.
    """
    key = coreml_session.key(coreml_session.models[0])
    return fail_on_user_error(lambda: coreml_session.recommendation(key, measure=True))
