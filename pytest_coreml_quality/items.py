"""The test items the plugin adds on its own: size, quality, load and baseline per variant.

They are ordinary ``pytest.Function`` items (whose functions live here), so fixtures such
as pytest-benchmark's ``benchmark`` and ``record_property`` work on them, and their ids
read ``ISNet.mlmodel::quality[q4]`` for ``-k`` and ``--deselect``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import warnings

import pytest

from pytest_coreml_quality.errors import CoreMLQualityError
from pytest_coreml_quality.loadtime import (
    PLAIN_TIMER,
    time_plainly,
    time_with_benchmark,
)
from pytest_coreml_quality.report.junit import junit_properties
from pytest_coreml_quality import catalogue
from pytest_coreml_quality.results import CheckOutcome, VariantResult
from pytest_coreml_quality.shard import LOAD_SHARD
from pytest_coreml_quality.sharing import Helper, help_predict, needed_recipes, plan_helpers
from pytest_coreml_quality.thresholds import Bound
from pytest_coreml_quality.session import QualitySession
from pytest_coreml_quality.stash import SESSION_KEY

CHECKS = ("size", "quality", "load-cold", "load-warm")


class CoreMLCheckItem(pytest.Function):
    """A generated check; it reports the model file, not this module, as its location."""

    def reportinfo(self) -> tuple[Any, int | None, str]:
        # Line 0 of the model file: pytest's warning machinery needs a line number.
        return self.path, 0, self.name


class CoreMLModelCollector(pytest.Collector):
    """Collects the generated items of one model (its node id is the model's file name)."""

    def __init__(self, *, model_key: str, session_state: QualitySession, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_key = model_key
        self.state = session_state

    def collect(self) -> Iterator[pytest.Item]:
        recipes = self.state.recipes[self.model_key]
        checks = list(CHECKS)
        if self.state.settings.baseline is not None:
            checks.append("baseline")
        grouped = self.config.pluginmanager.hasplugin("xdist")
        for check in checks:
            for recipe in recipes:
                # Size is a property of the file; the other checks run once per lane (compute unit, backend).
                lanes = self.state.lanes if check != "size" and len(self.state.lanes) > 1 else [None]
                for lane in lanes:
                    name = f"{check}[{lane.item_id(recipe) if lane else recipe}]"
                    key = lane.key(recipe) if lane else recipe
                    # A merge run judges the merged figures; its baseline items compare them as one job's would.
                    merging = self.state.merged is not None and check != "baseline"
                    make = _merged_function if merging else _check_function
                    item = CoreMLCheckItem.from_parent(self, name=name, callobj=make(self.model_key, key, check))
                    item.extra_keyword_matches.update({recipe, check, self.model_key})
                    if lane is not None:
                        item.extra_keyword_matches.update(p for p in lane.label.split(":") if p)
                    item.coreml_target = (self.model_key, check, recipe)  # type: ignore[attr-defined]
                    if grouped:
                        # --dist loadgroup keeps all of a variant's items (every lane) on one worker.
                        item.add_marker(pytest.mark.xdist_group(f"coreml-{self.model_key}-{recipe}"))
                    yield item
        yield from self._helpers()
        if self.model_key not in self.state.swept:
            return
        # Last, in a sweep: what to ship, judged over every variant (it measures what it
        # lacks itself, so it is right also when xdist ran the other items elsewhere).
        item = CoreMLCheckItem.from_parent(self, name="recommend", callobj=_recommend_function(self.model_key))
        item.extra_keyword_matches.update({"recommend", self.model_key})
        if grouped:
            item.add_marker(pytest.mark.xdist_group(f"coreml-{self.model_key}-recommend"))
        yield item

    def _helpers(self) -> Iterator[pytest.Item]:
        """On xdist workers beyond the variants, ``predict[...]`` items predicting chunks of images
        ahead of the quality items (see .sharing); the same plan in every worker."""
        workers = int(getattr(self.config, "workerinput", {}).get("workercount", 1))
        state = self.state
        if workers <= 1 or state.dataset is None or state.merged is not None:
            return
        groups = {state.key(m): state.recipes[state.key(m)] for m in state.models}
        helpable = {key: [r for r in recipes if not state.is_swept(key, r)] for key, recipes in groups.items()}
        plan = plan_helpers(workers, groups, helpable)
        for n, helper in enumerate(plan, start=1):
            if helper.model_key != self.model_key:
                continue
            call = _helper_function(helper, helpable[self.model_key])
            item = CoreMLCheckItem.from_parent(self, name=helper.name, callobj=call)
            # -k quality keeps them: they predict for the quality items.
            item.extra_keyword_matches.update({"predict", "quality", helper.first, self.model_key})
            item.add_marker(pytest.mark.xdist_group(f"coreml-predict-{n}"))
            yield item

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, self.name


def make_collectors(parent: pytest.Session, state: QualitySession) -> list[CoreMLModelCollector]:
    """One collector per model; node ids are the models' keys (file names)."""
    if state.merged is not None:
        # No model file on a merge job: the items point at shard 1's report.
        where = state.merged.partials[0].path
        return [
            CoreMLModelCollector.from_parent(parent, name=key, nodeid=key, path=where, model_key=key, session_state=state)
            for key in state.results.models
        ]
    return [
        CoreMLModelCollector.from_parent(
            parent, name=state.key(m), nodeid=state.key(m), path=m.path, model_key=state.key(m), session_state=state
        )
        for m in state.models
    ]


def _check_function(model_key: str, recipe: str, check: str) -> Callable[..., None]:
    """The function a generated item calls; its parameters are the fixtures it needs."""
    if check == "size":

        def size(request: pytest.FixtureRequest) -> None:
            state = _state(request)
            fail_on_user_error(lambda: state.variant(model_key, recipe))
            keys = state.run_keys(recipe)
            for key in keys[1:] if state.settings.shard is None else ():  # the same file on every lane: judge each row, report once
                state.check(model_key, key, "size")
            _finish(request, state, model_key, keys[0], "size")

        return size

    if check == "quality":

        def quality(request: pytest.FixtureRequest) -> None:
            state = _state(request)
            if state.dataset is None:
                pytest.skip("no golden set: pass --coreml-dataset=DIR (or set coreml_dataset) to measure quality")
            fail_on_user_error(lambda: state.quality(model_key, recipe))
            _finish(request, state, model_key, recipe, "quality")

        return quality

    if check in ("load-cold", "load-warm"):
        temperature = check.split("-")[1]

        def load(request: pytest.FixtureRequest) -> None:
            state = _state(request)
            shard = state.settings.shard
            if shard is not None and shard[0] != LOAD_SHARD:
                pytest.skip(f"load times are measured by shard {LOAD_SHARD}/{shard[1]} only (this is shard {shard[0]}/{shard[1]})")
            measure_load(state, model_key, recipe, temperature, optional_benchmark(request))  # type: ignore[arg-type]
            _finish(request, state, model_key, recipe, "load")

        load.__name__ = f"load_{temperature}"
        return load

    def baseline(request: pytest.FixtureRequest) -> None:
        compare_variant_to_baseline(_state(request), model_key, recipe)

    return baseline


def _helper_function(helper: Helper, helpable: list[str]) -> Callable[..., None]:
    def predict(request: pytest.FixtureRequest) -> None:
        selected = [getattr(i, "coreml_target", ("", "", "")) for i in request.session.items]
        needed = needed_recipes(selected, helper.model_key)
        if not needed:
            pytest.skip(f"nothing to predict ahead: no quality or baseline item of {helper.model_key} is selected")
        help_predict(_state(request), helper, helpable, needed)

    return predict


def _recommend_function(model_key: str) -> Callable[..., None]:
    def recommend(request: pytest.FixtureRequest) -> None:
        state = _state(request)
        if state.settings.shard is not None:
            pytest.skip("a shard does not recommend: the --coreml-merge run does, over the whole golden set")
        # A merge run has every figure the shards measured, and nothing to measure with.
        rec = fail_on_user_error(lambda: state.recommendation(model_key, measure=state.merged is None))
        request.node.user_properties.append(("coreml.recommended", rec.recipe or "none"))
        request.node.user_properties.append(("coreml.recommendation", rec.line))
        if rec.pareto:
            request.node.user_properties.append(("coreml.pareto", ",".join(rec.pareto)))
        if rec.failed:
            lines = [f"{model_key}: {rec.line}"]
            lines += [f"  {recipe}: {'; '.join(broken)}" for recipe, broken in rec.failing.items()]
            lines += [f"  {recipe}: not measured: {', '.join(missing)}" for recipe, missing in rec.unmeasured.items()]
            pytest.fail("\n".join(lines), pytrace=False)

    return recommend


def compare_variant_to_baseline(state: QualitySession, model_key: str, recipe: str) -> None:
    """The ``baseline[recipe]`` item: fail where a figure got worse than the saved baseline allows,
    or where nothing could be compared; every gap and caveat becomes a note under the table."""
    comparison = fail_on_user_error(lambda: state.compare_with_baseline(model_key, recipe))
    for note in comparison.warnings:
        line = f"coreml-quality: WARNING: {note}"
        if line not in state.report_notes:
            state.report_notes.append(line)
            warnings.warn(pytest.PytestWarning(f"coreml-quality: {note}"), stacklevel=1)
    why = comparison.not_compared.get((model_key, recipe))
    if why is not None:
        pytest.fail(f"{model_key} [{recipe}]: nothing compared with the baseline: {why}", pytrace=False)
    failures = comparison.failures
    if failures:
        lines = [f"{model_key} [{recipe}]: worse than baseline {state.settings.baseline}"]
        lines += [f"  {d.describe()}" for d in failures]
        pytest.fail("\n".join(lines), pytrace=False)


def measure_load(state: QualitySession, model_key: str, recipe: str, temperature: str, benchmark: Any | None) -> float:
    """Time ``temperature`` loads of a variant, record them, and return the median in seconds."""
    model = fail_on_user_error(lambda: state.variant_model(model_key, recipe))
    lane = state.lane(recipe)
    backend = fail_on_user_error(lambda: state.backend(lane))
    options = state.runtime_options(lane)
    rounds = state.settings.load_rounds
    if benchmark is not None:
        seconds, timer = fail_on_user_error(lambda: time_with_benchmark(benchmark, backend, model, options, temperature, rounds))  # type: ignore[arg-type]
    else:
        seconds, timer = fail_on_user_error(lambda: time_plainly(backend, model, options, temperature, rounds)), PLAIN_TIMER  # type: ignore[arg-type]
    result = state.results.models[model_key].variant(recipe)
    result.load.timer = timer
    setattr(result.load, f"{temperature}_s", seconds)
    if temperature == "warm" and state.dataset is not None:
        # Xcode's performance report shows prediction beside load medians: so does ours.
        result.load.predict_ms = fail_on_user_error(lambda: state.predict_ms(model_key, recipe))
    return seconds


def optional_benchmark(request: pytest.FixtureRequest) -> Any | None:
    """pytest-benchmark's ``benchmark`` fixture, or None under ``-p no:benchmark`` (plain timer)."""
    if not request.config.pluginmanager.hasplugin("benchmark"):
        return None
    return request.getfixturevalue("benchmark")


def _state(request: pytest.FixtureRequest) -> QualitySession:
    return request.config.stash[SESSION_KEY]


def fail_on_user_error(step: Callable[[], Any]) -> Any:
    """Run a core step; a user-caused error fails the item with its message, no traceback."""
    from pytest_coreml_quality.variants.sweep import SweepSkipped

    try:
        return step()
    except CoreMLQualityError as exc:
        message = str(exc)
    except SweepSkipped as exc:
        message = ""
        skipped = str(exc)
    if not message:
        pytest.skip(skipped)
    # Failing outside the except block: inside it, pytest would print the message twice
    # ("During handling of the above exception, another exception occurred").
    pytest.fail(message, pytrace=False)


def _merged_function(model_key: str, recipe: str, check: str) -> Callable[..., None]:
    """A merge run's item (``--coreml-merge``): judge the merged figures, measure nothing.

    It passes and fails like the single-job item: ``load-cold`` records and judges the cold
    load alone, as it would before ``load-warm`` ran.
    """
    family = check.split("-")[0]

    def merged(request: pytest.FixtureRequest) -> None:
        state = _state(request)
        key = recipe
        if check == "size":  # one item per recipe, as in one job: every lane's row judged, the first reported
            keys = state.run_keys(recipe)
            for other in keys[1:]:
                state.check(model_key, other, "size", _bounds(state, model_key, "size", state.results.models[model_key].variant(other)))
            key = keys[0]
        result = state.results.models[model_key].variant(key)
        view = result
        if check == "load-cold":
            view = replace(result, load=replace(result.load, warm_s=None, predict_ms=None))
        # The base model of an image-only set has no quality figure of its own: judge quality
        # items when the shards scored any variant of the model.
        scored = any(v.per_image or v.metrics or v.drift for v in state.results.models[model_key].variants.values())
        measured = {
            "size": result.size_bytes is not None,
            "quality": scored,
            "load": view.load.cold_s is not None or view.load.warm_s is not None,
        }[family]
        if not measured:
            pytest.skip(f"the shard reports hold no {family} figures for {model_key} [{key}] (their {check} item did not run)")
        _finish(request, state, model_key, key, family, bounds=_bounds(state, model_key, family, view), view=view)

    merged.__name__ = check.replace("-", "_")
    return merged


def _bounds(state: QualitySession, model_key: str, family: str, view: VariantResult) -> list[Bound]:
    """The configured bounds a merge run judges: those of ``family`` on figures the shards measured."""
    return [b for b in state.configured_bounds(model_key) if b.check != family or _measured(b, view)]


def _measured(bound: Bound, result: VariantResult) -> bool:
    figure = catalogue.get(bound.metric)
    return figure is not None and figure.value(result) is not None


def _finish(
    request: pytest.FixtureRequest,
    state: QualitySession,
    model_key: str,
    recipe: str,
    check: str,
    bounds: list[Bound] | None = None,
    view: VariantResult | None = None,
) -> None:
    """Record figures as JUnit properties, then judge them against the thresholds (``bounds``: the configured ones).

    A shard (``--coreml-shard``) judges nothing: its figures cover part of the golden set.
    ``view`` is the result as the JUnit properties should show it (default: the whole result).
    """
    result = state.results.models[model_key].variant(recipe)
    for name, value in junit_properties(view or result, check):
        request.node.user_properties.append((name, value))
    if state.settings.shard is not None:
        return
    outcomes = state.check(model_key, recipe, check, bounds)
    failed = [o for o in outcomes if not o.passed]
    # A sweep explores: its own variants are reported (FAIL in the table) but only the
    # recommend item and the variants the user named fail the run.
    if failed and not state.is_swept(model_key, recipe):
        pytest.fail(failure_message(model_key, recipe, failed), pytrace=False)


def failure_message(model_key: str, recipe: str, failed: list[CheckOutcome]) -> str:
    """Which variant, which metric, measured value, bound, and the worst images."""
    lines = [f"{model_key} [{recipe}]: {len(failed)} threshold(s) broken"]
    for o in failed:
        lines.append(f"  {o.metric} = {o.value:.6g}, bound {o.op} {o.bound:.6g}")
        if o.worst:
            worst = ", ".join(f"{name} ({value:.4g})" for name, value in o.worst)
            lines.append(f"    worst images: {worst}")
    return "\n".join(lines)


__all__ = [
    "CHECKS",
    "CoreMLModelCollector",
    "fail_on_user_error",
    "failure_message",
    "make_collectors",
    "measure_load",
    "optional_benchmark",
]
