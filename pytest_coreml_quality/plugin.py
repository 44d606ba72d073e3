"""pytest glue: options, ini keys, markers, fixtures, generated items, summary and reports.

Everything of substance lives in the core modules; this file only translates pytest's
world (config, items, fixtures, xdist workers) into calls of the core and user errors
into ``pytest.UsageError`` or a failed item with a plain message.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Generator
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
    coreml_recommendation,
    coreml_session,
    coreml_variant,
    variant_id,
    variant_params,
)
from pytest_coreml_quality.fixtures import VariantHandle
from pytest_coreml_quality.items import CoreMLCheckItem, fail_on_user_error, failure_message, make_collectors, measure_load
from pytest_coreml_quality.lanes import split_key
from pytest_coreml_quality.markers import MARKERS, MarkerError, marker_bounds, marker_help
from pytest_coreml_quality.quiet import silence_coremltools_import_notices
from pytest_coreml_quality.results import RunResults, merge_results
from pytest_coreml_quality.session import QualitySession
from pytest_coreml_quality.settings import Settings, all_options, resolve
from pytest_coreml_quality.stash import SESSION_KEY
from pytest_coreml_quality.thresholds import Bound
from pytest_coreml_quality.xdist_groups import GroupKeeper

silence_coremltools_import_notices()

CACHE_USE_KEY = pytest.StashKey[Any]()  # the run's cacheuse.CacheUse, released at unconfigure
MARKER_BOUNDS_KEY = pytest.StashKey[list[tuple[list[Bound], "list[str] | None"]]]()
WORKER_OUTPUT_KEY = "coreml_quality_results"


# --- options and configuration ---------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("coreml-quality", "Core ML model quality (pytest-coreml-quality)")
    for spec in all_options():
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
    for name in MARKERS:
        config.addinivalue_line("markers", marker_help(name))
    if _is_xdist_worker(config):
        config.pluginmanager.register(GroupKeeper(CoreMLCheckItem), "coreml-quality-xdist-groups")
    try:
        settings = resolve(
            config.getoption,
            config.getini,
            invocation_dir=Path(config.invocation_params.dir),
            rootdir=config.rootpath,
            table=_project_table(config),
        )
        # Only touch the disk (pytest's cache dir) when there is a model to work on or a cache
        # to clear. Never the rootdir: clearing it once deleted the whole project.
        uses_cache = settings.active or settings.cache_clear
        default_cache = _default_cache_dir(config) if uses_cache else config.rootpath
        # Held (and cleared, if asked) before the session starts: starting may already run
        # the model (to decide --coreml-mask=auto) and cache what it translated.
        cleared = _hold_cache(config, settings, settings.cache_dir or default_cache) if uses_cache else False
        session = QualitySession.start(settings, default_cache_dir=default_cache)
    except CoreMLQualityError as exc:
        raise pytest.UsageError(str(exc)) from None
    session.progress = _progress_writer(config)
    session.cache_cleared = cleared  # said in the report header: no terminal exists yet
    config.stash[SESSION_KEY] = session


def _project_table(config: pytest.Config) -> Any:
    """The ``[tool.coreml-quality]`` table of the rootdir's ``pyproject.toml``, or None."""
    from pytest_coreml_quality.projecttable import find_pyproject, read_project_table

    file = find_pyproject(config.rootpath, config.inipath)
    if file is None:
        return None
    return read_project_table(file, tuple(spec.dest for spec in all_options()))


def _hold_cache(config: pytest.Config, settings: Settings, cache_dir: Path) -> bool:
    """Hold the cache directory for this run, clearing it first if asked (see ``cacheuse``); True if cleared."""
    from pytest_coreml_quality.cachecheck import check_cache_dir
    from pytest_coreml_quality.cacheuse import CacheUse

    if check_cache_dir(cache_dir) is not None:
        return False  # the session's start says what is wrong with it, as a usage error
    use = CacheUse(cache_dir)
    cleared = False
    try:
        if settings.cache_clear and not _is_xdist_worker(config):
            def waiting() -> None:
                # No terminal reporter yet at configure time: say it on stderr, once.
                sys.stderr.write(f"coreml-quality: waiting for another run using {cache_dir} to finish before clearing it\n")

            use.clear(waiting=waiting)
            cleared = True
        elif settings.active:
            use.hold()
    except OSError:
        # An unusable cache directory is reported where it is first used, with its own message.
        use.release()
        return cleared
    config.stash[CACHE_USE_KEY] = use
    return cleared


def pytest_unconfigure(config: pytest.Config) -> None:
    use = config.stash.get(CACHE_USE_KEY, None)
    if use is not None:
        use.release()


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
    if not state.has_work:
        return
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
        params = [p for p in params if split_key(p[1])[0] in wanted]
    metafunc.parametrize("coreml_variant", params, indirect=True, ids=[variant_id(state, p) for p in params])


def _validate_markers(config: pytest.Config, state: QualitySession, items: list[pytest.Item]) -> None:
    """Check every coreml marker's keywords at collection; report all bad ones at once."""
    problems = []
    for item in items:
        collected = []
        for name in MARKERS:
            for mark in item.iter_markers(name):
                try:
                    bounds, variants = marker_bounds(name, mark.args, dict(mark.kwargs), item.nodeid)
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
    """Add a marker's recipes to the models they can compress; one that fits no model is an error.

    Models of different kinds (an .mlmodel and an ML Program) take different recipes, so
    a marker's ``variants=["q4"]`` applies to the models q4 fits.
    """
    from pytest_coreml_quality.errors import RecipeError
    from pytest_coreml_quality.variants import parse_recipes

    for name in variants:
        fitting = []
        refusal: RecipeError | None = None
        for model in state.models:
            try:
                fitting += [(model, str(r)) for r in parse_recipes([name], model, include_base=False)]
            except RecipeError as exc:
                refusal = refusal or exc
        if not fitting and refusal is not None:
            raise refusal
        for model, recipe in fitting:
            if recipe not in state.recipes[state.key(model)]:
                state.recipes[state.key(model)].append(recipe)
                state.results.models[state.key(model)].variant(recipe)


def _marker_variants(definition: pytest.Item) -> set[str] | None:
    """The union of ``variants=`` over the item's coreml markers, or None when any marker takes all."""
    wanted: set[str] = set()
    for name in MARKERS:
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
    # A shard's figures cover part of the golden set: nothing is judged on them, markers included.
    if marks and item.config.stash[SESSION_KEY].settings.shard is None:
        _assert_markers(item, marks)
    return result


def _assert_markers(item: pytest.Item, marks: list[tuple[list[Bound], list[str] | None]]) -> None:
    state = item.config.stash[SESSION_KEY]
    if not state.models:
        pytest.skip("no Core ML model given: coreml markers need --coreml-model=PATH")
    funcargs = getattr(item, "funcargs", {})
    handle = funcargs.get("coreml_variant")
    messages = []
    for bounds, variants in marks:
        if isinstance(handle, VariantHandle):
            targets = [(handle.model_key, handle.key)]
        else:
            # One target per lane (compute unit, backend): a marker bounds every one of them.
            targets = [
                (k, key) for k, rs in state.recipes.items() for r in rs if variants is None or r in variants for key in state.run_keys(r)
            ]
        for model_key, recipe in targets:
            checks = {b.check for b in bounds}
            if "quality" in checks and state.dataset is None:
                pytest.fail("@pytest.mark.coreml_quality needs a golden set: pass --coreml-dataset=DIR", pytrace=False)
            fail_on_user_error(lambda: _measure_for_markers(state, model_key, recipe, checks))
            failed = [o for check in checks for o in state.check(model_key, recipe, check, bounds) if not o.passed]
            if failed:
                messages.append(failure_message(model_key, recipe, failed))
    if messages:
        pytest.fail("\n".join(messages), pytrace=False)


def _measure_for_markers(state: QualitySession, model_key: str, recipe: str, checks: set[str]) -> None:
    """Measure what the markers' checks need and this run has not measured yet."""
    if "size" in checks:
        state.variant(model_key, recipe)
    if "quality" in checks:
        state.quality(model_key, recipe)
    if "load" in checks:
        load = state.results.models[model_key].variant(recipe).load
        for temperature in ("cold", "warm"):
            if getattr(load, f"{temperature}_s") is None:
                measure_load(state, model_key, recipe, temperature, None)


# --- results across xdist workers, summary, reports ------------------------------------------


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    state = config.stash.get(SESSION_KEY, None)
    if state is None or not state.has_work:
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


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(SESSION_KEY, None)
    if state is None or not state.has_work or _is_xdist_worker(config) or config.get_verbosity() < -1:
        return
    if not any(v.size_bytes is not None or v.metrics or v.load.cold_s is not None for m in state.results.models.values() for v in m.variants.values()):
        return
    from pytest_coreml_quality.report.terminal import render_table

    terminalreporter.write_sep("=", "Core ML model quality")
    width = min(100, config.get_terminal_writer().fullwidth)
    for line in render_table(state.results, width=width):
        terminalreporter.write_line(line)
    from pytest_coreml_quality.report.terminal import recommendation_lines

    several = len(state.results.models) > 1
    if state.settings.shard is None:  # a shard's partial figures recommend nothing
        for line in recommendation_lines(state.recommendations(), state.is_swept, width, name_models=several):
            terminalreporter.write_line(line)
    else:
        from pytest_coreml_quality.shard import shard_note

        terminalreporter.write_line(shard_note(state))
    for line in state.report_notes:
        terminalreporter.write_line(line)


def _recommendation_dicts(state: QualitySession) -> dict[str, Any]:
    return {key: rec.to_dict() for key, rec in state.recommendations().items()}


def _write_reports(config: pytest.Config, state: QualitySession) -> None:
    """Write every requested report; one that fails is named, and the others are still written."""
    settings = state.settings
    writers: list[tuple[str, Any, Callable[[Path], object]]] = []
    if settings.report_json is not None and settings.shard is not None:
        from pytest_coreml_quality.report.json_report import write_json
        from pytest_coreml_quality.shard import shard_section

        # A partial report: no recommendation (partial figures), the shard section for --coreml-merge.
        writers.append(("partial JSON report", settings.report_json, lambda p: write_json(p, state.results, extra={"shard": shard_section(state)})))
    elif settings.report_json is not None:
        from pytest_coreml_quality.report.json_report import write_json

        writers.append(("JSON report", settings.report_json, lambda p: write_json(p, state.results, _recommendation_dicts(state))))
    recommendations = state.recommendations() if settings.shard is None else {}
    plot: dict[str, bytes] = {}
    if settings.plot is not None:
        from pytest_coreml_quality.cachefs import atomic_write_bytes
        from pytest_coreml_quality.report.plot import render_png

        def write_plot(path: Path) -> None:
            plot["png"] = render_png(state.results, recommendations, state.configured_bounds())
            atomic_write_bytes(path, plot["png"])

        writers.append(("plot", settings.plot, write_plot))
    if settings.report_html is not None:
        from pytest_coreml_quality.report.html import write_html

        def html_report(path: Path) -> None:
            lines = {key: rec.line for key, rec in recommendations.items()}
            if state.merged is not None:
                note = (
                    f"Merged from {len(state.merged.partials)} shard reports (--coreml-merge): the photos and predicted "
                    "masks stay on the shard jobs, so this page shows no images."
                )
                write_html(path, state.results, None, recommendations=lines, plot_png=plot.get("png"), note=note)
                return
            write_html(path, state.results, state.image_source(), recommendations=lines, plot_png=plot.get("png"))

        writers.append(("HTML report", settings.report_html, html_report))
    if settings.save_baseline is not None:
        from pytest_coreml_quality.baseline import save_baseline

        writers.append(("baseline", settings.save_baseline, lambda p: save_baseline(p, state.results)))
    for what, path, write in writers:
        try:
            write(path)
        except (CoreMLQualityError, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            line = f"coreml-quality: ERROR: could not write the {what} to {path}: {reason}"
            state.report_notes.append(line)
            warnings.warn(pytest.PytestWarning(line), stacklevel=1)
        else:
            verb = "saved" if what == "baseline" else "written"  # the plot is written before the HTML embeds it
            state.report_notes.append(f"coreml-quality: {what} {verb} to {path}")


__all__ = ["SESSION_KEY", "merge_results"]
