"""pytest glue: options, ini keys, markers, fixtures, generated items, summary and reports.

Everything of substance lives in the core modules; this file only translates pytest's
world (config, items, fixtures, xdist workers) into calls of the core and user errors
into ``pytest.UsageError`` or a failed item with a plain message.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from pytest_coreml_quality.errors import CoreMLQualityError
from pytest_coreml_quality.fixtures import (  # noqa: F401  (fixtures are found as plugin attributes)
    coreml_dataset,
    coreml_load_benchmark,
    coreml_metrics,
    coreml_model,
    coreml_predictions,
    coreml_session,
    coreml_variant,
    variant_id,
    variant_params,
)
from pytest_coreml_quality.markers import MARKERS as MARKER_KWARGS
from pytest_coreml_quality.quiet import silence_coremltools_import_notices
from pytest_coreml_quality.markers import MarkerError, marker_bounds
from pytest_coreml_quality.results import RunResults
from pytest_coreml_quality.session import BASE, Bound, QualitySession
from pytest_coreml_quality.settings import OPTIONS, SettingError, resolve

silence_coremltools_import_notices()

SESSION_KEY = pytest.StashKey[QualitySession]()
MARKER_BOUNDS_KEY = pytest.StashKey[list[tuple[list[Bound], "list[str] | None"]]]()
WORKER_OUTPUT_KEY = "coreml_quality_results"

MARKERS = {
    "coreml_quality": "coreml_quality(max_mae=None, min_iou=None, max_drift=None, metric=None, variants=None): "
    "after the test, assert quality thresholds of the Core ML model variants (all selected ones, or variants=[...]).",
    "coreml_size": "coreml_size(max_mb=None, max_ratio=None, variants=None): after the test, assert variants' size on disk.",
    "coreml_load": "coreml_load(max_cold_s=None, max_warm_s=None, min_speedup=None, variants=None): "
    "after the test, assert variants' cold and warm load times.",
}


# --- options and configuration ---------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("coreml-quality", "Core ML model quality (pytest-coreml-quality)")
    for spec in OPTIONS:
        # argparse %-formats help texts ("1%" would break --help); ini help is printed as is.
        flag_help = spec.help.replace("%", "%%")
        kwargs: dict[str, object] = {"dest": spec.dest, "metavar": spec.metavar, "help": flag_help}
        if spec.multiple:
            kwargs["action"] = "append"
        elif spec.metavar == "BOOL":
            # A bare flag on the command line; the ini key takes true/false.
            kwargs = {"dest": spec.dest, "help": flag_help, "action": "store_const", "const": "true"}
        group.addoption(spec.flag, **kwargs)
        parser.addini(spec.ini, spec.help, type="linelist" if spec.multiple else "string")


def pytest_configure(config: pytest.Config) -> None:
    for doc in MARKERS.values():
        config.addinivalue_line("markers", doc)
    try:
        settings = resolve(
            config.getoption,
            config.getini,
            invocation_dir=Path(config.invocation_params.dir),
            rootdir=config.rootpath,
        )
        # Only touch the disk (pytest's cache dir) when there is a model to work on.
        default_cache = _default_cache_dir(config) if settings.active else config.rootpath
        session = QualitySession.start(settings, default_cache_dir=default_cache)
    except (SettingError, CoreMLQualityError) as exc:
        raise pytest.UsageError(str(exc)) from None
    session.progress = _progress_writer(config)
    config.stash[SESSION_KEY] = session
    if settings.cache_clear and not _is_xdist_worker(config):
        from pytest_coreml_quality.cachefs import remove_path

        remove_path(session.cache_dir)
        session.cache_cleared = True  # said in the report header: no terminal exists yet


def pytest_report_header(config: pytest.Config) -> list[str]:
    session = config.stash.get(SESSION_KEY, None)
    return session.header_lines() if session is not None else []


def _default_cache_dir(config: pytest.Config) -> Path:
    """A folder inside pytest's own cache dir, so ``--cache-clear`` users know where it is.

    With ``-p no:cacheprovider`` the user asked for no ``.pytest_cache``: use the user cache
    directory instead (``$XDG_CACHE_HOME/pytest-coreml-quality``, by default
    ``~/.cache/pytest-coreml-quality``), where the onnx backend keeps compiled models anyway.
    """
    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("coreml-quality"))
    from pytest_coreml_quality.runtime.base import default_cache_dir

    return default_cache_dir()


def _progress_writer(config: pytest.Config) -> Any:
    """One line per long step (variant build, evaluation) on the real terminal; quiet under -q."""

    def write(line: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None or config.get_verbosity() < 0 or _is_xdist_worker(config):
            return
        # Inside a test, output capture owns the terminal: step out of it for one line,
        # as pytest's live logging does, so the line shows whatever -s / --capture say.
        capman = config.pluginmanager.get_plugin("capturemanager")
        suspended = capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext()
        with suspended:
            reporter.ensure_newline()
            reporter.write_line(f"coreml-quality: {line}")

    return write


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


# --- collection: generated items, parametrisation, marker validation --------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Add the generated items (before -k / -m deselection runs) and validate markers."""
    state = config.stash[SESSION_KEY]
    _validate_markers(config, state, items)
    if not state.models:
        return
    from pytest_coreml_quality.items import make_collectors

    for collector in make_collectors(session, state):
        generated = list(collector.collect())
        # Report the collection like pytest's own collectors do, so counts and --co are right.
        config.hook.pytest_collectreport(report=pytest.CollectReport(collector.nodeid, "passed", None, generated))
        items.extend(generated)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "coreml_variant" not in metafunc.fixturenames:
        return
    state = metafunc.config.stash.get(SESSION_KEY, None)
    params = variant_params(state)
    if not params or state is None:
        return  # the fixture skips with a message saying what to pass
    wanted = _marker_variants(metafunc.definition)
    if wanted is not None:
        params = [p for p in params if p[1] in wanted]
    metafunc.parametrize("coreml_variant", params, indirect=True, ids=[variant_id(state, p) for p in params])


def _validate_markers(config: pytest.Config, state: QualitySession, items: list[pytest.Item]) -> None:
    """Check every coreml marker's keywords at collection; report all bad ones at once."""
    from pytest_coreml_quality.metrics.scores import HIGHER_IS_BETTER

    known = [*HIGHER_IS_BETTER, *(f"drift_{m}" for m in HIGHER_IS_BETTER)]
    problems = []
    for item in items:
        collected = []
        for name in MARKER_KWARGS:
            for mark in item.iter_markers(name):
                try:
                    bounds, variants = marker_bounds(name, mark.args, dict(mark.kwargs), item.nodeid, known)
                    if variants is not None and state.models:
                        _check_marker_variants(state, variants)
                except MarkerError as exc:
                    problems.append(str(exc))
                    continue
                except CoreMLQualityError as exc:
                    problems.append(f"{item.nodeid}: @pytest.mark.{name}: {exc}")
                    continue
                collected.append((bounds, variants))
        if collected:
            item.stash[MARKER_BOUNDS_KEY] = collected
    if problems:
        raise pytest.UsageError("invalid coreml marker(s):\n  " + "\n  ".join(problems))


def _check_marker_variants(state: QualitySession, variants: list[str]) -> None:
    from pytest_coreml_quality.variants import parse_recipes

    for model in state.models:
        for recipe in parse_recipes(variants, model, include_base=False):
            if str(recipe) not in state.recipes[state.key(model)]:
                state.recipes[state.key(model)].append(str(recipe))
                state.results.models[state.key(model)].variant(str(recipe))


def _marker_variants(definition: pytest.Item) -> set[str] | None:
    """The union of ``variants=`` over the item's coreml markers, or None when any marker takes all."""
    wanted: set[str] = set()
    for name in MARKER_KWARGS:
        for mark in definition.iter_markers(name):
            variants = mark.kwargs.get("variants")
            if variants is None:
                return None
            wanted.update([variants] if isinstance(variants, str) else variants)
    return wanted or None


# --- markers are asserted after the test body ------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    result = yield
    marks = item.stash.get(MARKER_BOUNDS_KEY, None)
    if marks:
        _assert_markers(item, marks)
    return result


def _assert_markers(item: pytest.Item, marks: list[tuple[list[Bound], list[str] | None]]) -> None:
    from pytest_coreml_quality.fixtures import VariantHandle
    from pytest_coreml_quality.items import failure_message, measure_load

    state = item.config.stash[SESSION_KEY]
    if not state.models:
        pytest.skip("no Core ML model given: coreml markers need --coreml-model=PATH")
    funcargs = getattr(item, "funcargs", {})
    handle = funcargs.get("coreml_variant")
    messages = []
    for bounds, variants in marks:
        if isinstance(handle, VariantHandle):
            targets = [(handle.model_key, handle.recipe)]
        else:
            targets = [(k, r) for k, rs in state.recipes.items() for r in rs if variants is None or r in variants]
        for model_key, recipe in targets:
            kinds = {b.check for b in bounds}
            try:
                if "size" in kinds:
                    state.variant(model_key, recipe)
                if "quality" in kinds:
                    if state.dataset is None:
                        pytest.fail("@pytest.mark.coreml_quality needs a golden set: pass --coreml-dataset=DIR", pytrace=False)
                    state.quality(model_key, recipe)
                if "load" in kinds:
                    load = state.results.models[model_key].variant(recipe).load
                    for kind in ("cold", "warm"):
                        if getattr(load, f"{kind}_s") is None:
                            measure_load(state, model_key, recipe, kind, None)
            except CoreMLQualityError as exc:
                pytest.fail(str(exc), pytrace=False)
            failed = [o for kind in kinds for o in state.check(model_key, recipe, kind, bounds) if not o.passed]
            if failed:
                messages.append(failure_message(model_key, recipe, failed))
    if messages:
        pytest.fail("\n".join(messages), pytrace=False)


# --- results across xdist workers, summary, reports ------------------------------------------


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    state = config.stash.get(SESSION_KEY, None)
    if state is None or not state.models:
        return
    if _is_xdist_worker(config):
        config.workeroutput[WORKER_OUTPUT_KEY] = state.results.to_dict()  # type: ignore[attr-defined]
        return
    _write_reports(config, state)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: merge a finished worker's figures into the run's results."""
    state = node.config.stash.get(SESSION_KEY, None)
    data = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY)
    if state is None or not data:
        return
    merge_results(state.results, RunResults.from_dict(data))


def merge_results(into: RunResults, other: RunResults) -> None:
    """Copy every figure ``other`` measured into ``into`` (workers measure disjoint items)."""
    for name, model in other.models.items():
        target = into.models.setdefault(name, model)
        if target is model:
            continue
        for recipe, variant in model.variants.items():
            mine = target.variant(recipe)
            for attr in ("path", "kind", "size_bytes", "ratio", "params", "bits_per_weight", "content_hash"):
                if getattr(variant, attr) not in (None, ""):
                    setattr(mine, attr, getattr(variant, attr))
            for attr in ("metrics", "drift", "per_image"):
                if getattr(variant, attr):
                    setattr(mine, attr, getattr(variant, attr))
            for attr in ("cold_s", "warm_s"):
                if getattr(variant.load, attr) is not None:
                    setattr(mine.load, attr, getattr(variant.load, attr))
                    mine.load.timer = variant.load.timer
            judged = {(c.check, c.metric, c.op) for c in variant.checks}
            mine.checks = [c for c in mine.checks if (c.check, c.metric, c.op) not in judged] + list(variant.checks)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(SESSION_KEY, None)
    if state is None or not state.models or _is_xdist_worker(config) or config.get_verbosity() < -1:
        return
    if not any(v.size_bytes is not None or v.metrics or v.load.cold_s is not None for m in state.results.models.values() for v in m.variants.values()):
        return
    from pytest_coreml_quality.report.terminal import render_table

    terminalreporter.write_sep("=", "Core ML model quality")
    width = min(100, config.get_terminal_writer().fullwidth)
    for line in render_table(state.results, width=width):
        terminalreporter.write_line(line)
    for line in state.report_notes:
        terminalreporter.write_line(line)


def _write_reports(config: pytest.Config, state: QualitySession) -> None:
    settings = state.settings
    notes = state.report_notes
    try:
        if settings.report_json is not None:
            from pytest_coreml_quality.report.json_report import write_json

            write_json(settings.report_json, state.results)
            notes.append(f"coreml-quality: JSON report written to {settings.report_json}")
        if settings.report_html is not None:
            from pytest_coreml_quality.report.html import write_html

            write_html(settings.report_html, state.results, state.image_source())
            notes.append(f"coreml-quality: HTML report written to {settings.report_html}")
        if settings.save_baseline is not None:
            from pytest_coreml_quality.baseline import save_baseline

            save_baseline(settings.save_baseline, state.results)
            notes.append(f"coreml-quality: baseline saved to {settings.save_baseline}")
    except CoreMLQualityError as exc:
        warnings.warn(pytest.PytestWarning(f"coreml-quality: could not write a report: {exc}"), stacklevel=1)


def compare_variant_to_baseline(state: QualitySession, model_key: str, recipe: str) -> None:
    """The ``baseline[recipe]`` item: fail where a figure got worse than the saved baseline allows.

    It compares what this run measured for the variant (size always; quality when a
    golden set is given; load times when the load items ran before it).
    """
    from pytest_coreml_quality.baseline import Tolerances, compare_to_baseline
    from pytest_coreml_quality.results import ModelResults

    assert state.settings.baseline is not None
    try:
        state.variant(model_key, recipe)
        if state.dataset is not None:
            state.quality(model_key, recipe)
        whole = state.results.models[model_key]
        only = ModelResults(model=whole.model, path=whole.path, content_hash=whole.content_hash, kind=whole.kind,
                            backend=whole.backend, dataset=whole.dataset, variants={recipe: whole.variants[recipe]})
        comparison = compare_to_baseline(
            RunResults(models={model_key: only}, versions=state.results.versions),
            state.settings.baseline,
            Tolerances(**state.settings.baseline_tolerances),
        )
    except CoreMLQualityError as exc:
        pytest.fail(str(exc), pytrace=False)
    for note in comparison.warnings:
        if "different model file" in note or "tool versions" in note:
            if note not in state.report_notes:
                state.report_notes.append(f"coreml-quality: WARNING: {note}")
                warnings.warn(pytest.PytestWarning(f"coreml-quality: {note}"), stacklevel=1)
    failures = comparison.failures
    if failures:
        lines = [f"{model_key} [{recipe}]: worse than baseline {state.settings.baseline}"]
        lines += [f"  {d.describe()}" for d in failures]
        pytest.fail("\n".join(lines), pytrace=False)


__all__ = ["BASE", "SESSION_KEY", "merge_results"]
