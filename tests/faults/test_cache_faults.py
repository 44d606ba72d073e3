"""Cache faults (issue 10, bugs 2 and 8): damaged, swapped, half-written or concurrently cleared
entries of every cache kind are never trusted; the run gives the clean run's figures, says
which entry it rebuilt, and leaves the user's model and golden set untouched."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pytest_coreml_quality.cachefs import DIGEST_FILE, seal
from pytest_coreml_quality.cacheuse import LOCK_NAME, CacheUse
from pytest_coreml_quality.dataset import Dataset
from pytest_coreml_quality.runtime.onnx.backend import GRAPH_FILE, WEIGHTS_FILE
from pytest_coreml_quality.variants.cache import MANIFEST

from ._cache_helpers import (
    Run,
    UserFiles,
    compiled_entry,
    flip_bytes,
    garbage,
    make_user_files,
    prediction_entries,
    run_killed_before_rename,
    run_once,
    swap,
    truncate,
    variant_entry,
)

@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> UserFiles:
    return make_user_files(tmp_path_factory.mktemp("user"))


@pytest.fixture(scope="module")
def dataset(user: UserFiles) -> Dataset:
    return Dataset.open(user.dataset_dir)


@pytest.fixture(scope="module")
def clean(user: UserFiles, dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Run]:
    """A cache filled by one clean run, and that run's figures (every case compares with them)."""
    cache = tmp_path_factory.mktemp("clean") / "cache"
    first = run_once(user, cache, dataset)
    assert first.notes == [] and first.images_run == len(dataset.ids) * 3
    return cache, first


@pytest.fixture
def cache(clean: tuple[Path, Run], tmp_path: Path) -> Path:
    """A private copy of the clean cache, for one case to damage."""
    copy = tmp_path / "cache"
    shutil.copytree(clean[0], copy)
    return copy


@pytest.fixture
def expect_clean(clean: tuple[Path, Run], user: UserFiles, dataset: Dataset) -> Callable[..., Run]:
    """Run over a damaged cache and check the figures equal the clean run's and the user's files are untouched."""
    before = user.fingerprint()

    def check(cache: Path) -> Run:
        run = run_once(user, cache, dataset)
        for recipe, figures in clean[1].figures.items():
            for name, value in figures.items():
                assert run.figures[recipe][name] == pytest.approx(value, rel=1e-9, abs=1e-12), (recipe, name)
        assert user.fingerprint() == before
        return run

    return check


def _one_note(run: Run, *parts: str) -> str:
    assert len(run.notes) == 1, run.notes
    for part in parts:
        assert part in run.notes[0], run.notes[0]
    return run.notes[0]


def _without_predictions(cache: Path) -> Path:
    """Drop the prediction cache so the run must load (and so verify) the compiled models."""
    shutil.rmtree(cache / "predictions")
    return cache


# --- compiled models (onnx graph + weights) -----------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda e: truncate(e / WEIGHTS_FILE), "does not match its digest"),
        (lambda e: flip_bytes(e / WEIGHTS_FILE), "does not match its digest"),
        (lambda e: garbage(e / WEIGHTS_FILE), "does not match its digest"),
        (lambda e: truncate(e / GRAPH_FILE), "does not match its digest"),
        (lambda e: flip_bytes(e / GRAPH_FILE, every=4096), "does not match its digest"),
        (lambda e: (e / WEIGHTS_FILE).unlink(), "weights.bin is missing"),
        (lambda e: (e / DIGEST_FILE).unlink(), "digest.json is missing"),
        (lambda e: garbage(e / DIGEST_FILE, 64), "digest.json is unreadable"),
    ],
    ids=["truncate-weights", "flip-weights", "garbage-weights", "truncate-graph", "flip-graph",
         "delete-weights", "delete-digest", "garbage-digest"],
)
def test_damaged_compiled_entry_is_rebuilt_with_a_note(
    cache: Path, user: UserFiles, expect_clean: Callable[..., Run], damage: Callable[[Path], None], problem: str
) -> None:
    entry = compiled_entry(cache, "q8", user)
    damage(entry)
    run = expect_clean(_without_predictions(cache))
    _one_note(run, "compiled cache entry of TinySeg-q8.mlmodel", entry.name, "ignored and rebuilt", problem)
    assert run.images_run == 3 * 3


def test_compiled_weights_swapped_between_variants_of_the_same_size_are_caught(
    cache: Path, user: UserFiles, expect_clean: Callable[..., Run]
) -> None:
    base, q4 = compiled_entry(cache, "base", user), compiled_entry(cache, "q4", user)
    assert (base / WEIGHTS_FILE).stat().st_size == (q4 / WEIGHTS_FILE).stat().st_size
    swap(base / WEIGHTS_FILE, q4 / WEIGHTS_FILE)
    run = expect_clean(_without_predictions(cache))
    assert len(run.notes) == 2 and all("does not match its digest" in n for n in run.notes)


def test_a_whole_compiled_entry_copied_under_another_key_is_caught(
    cache: Path, user: UserFiles, expect_clean: Callable[..., Run]
) -> None:
    base, q8 = compiled_entry(cache, "base", user), compiled_entry(cache, "q8", user)
    shutil.rmtree(q8)
    shutil.copytree(base, q8)
    run = expect_clean(_without_predictions(cache))
    _one_note(run, "TinySeg-q8.mlmodel", "copied from another entry")


# --- predictions ---------------------------------------------------------------------------------


def _sealed(path: Path, array: np.ndarray) -> None:
    """Write a well-sealed entry holding ``array``: only the value checks can reject it."""
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    path.write_bytes(seal(path.stem, buf.getvalue()))


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (truncate, "does not match its digest"),
        (flip_bytes, "does not match its digest"),
        (garbage, "does not match its digest"),
        (lambda p: _sealed(p, np.full((240, 320), np.nan, np.float32)), "NaN or outside [0, 1]"),
        (lambda p: _sealed(p, np.full((240, 320), 1.5, np.float32)), "NaN or outside [0, 1]"),
        (lambda p: _sealed(p, np.zeros((240, 320), np.float64)), "expected float32[240, 320]"),
        (lambda p: _sealed(p, np.zeros((10, 10), np.float32)), "expected float32[240, 320]"),
    ],
    ids=["truncate", "flip", "garbage", "nan", "above-one", "float64", "wrong-shape"],
)
def test_damaged_prediction_is_recomputed_with_a_note(
    cache: Path, dataset: Dataset, expect_clean: Callable[..., Run], damage: Callable[[Path], None], problem: str
) -> None:
    victim = _prediction_of(cache, dataset, "scene_000")
    damage(victim)
    run = expect_clean(cache)
    _one_note(run, "prediction cache of TinySeg", "1 damaged entry ignored and recomputed", "'scene_000'", problem)
    assert run.images_run == 1


def test_predictions_swapped_between_entries_are_caught(
    cache: Path, dataset: Dataset, expect_clean: Callable[..., Run]
) -> None:
    # Two masks of the same image size from different variants: same length, other content.
    entries = [p for p in prediction_entries(cache) if p.stat().st_size == _prediction_of(cache, dataset, "scene_000").stat().st_size]
    assert len(entries) >= 2
    swap(entries[0], entries[1])
    run = expect_clean(cache)
    assert run.images_run == 2 and all("does not match its digest" in n for n in run.notes)


def test_a_deleted_prediction_is_a_plain_miss(cache: Path, dataset: Dataset, expect_clean: Callable[..., Run]) -> None:
    _prediction_of(cache, dataset, "scene_001").unlink()
    run = expect_clean(cache)
    assert run.notes == [] and run.images_run == 1


def _prediction_of(cache: Path, dataset: Dataset, image: str) -> Path:
    """The base model's prediction entry for ``image``."""
    from pytest_coreml_quality.evaluate import Evaluator
    from pytest_coreml_quality.model import Model
    from pytest_coreml_quality.runtime.base import RuntimeOptions
    from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend

    user_model = Path(str(dataset.root)).parent / "Models" / "TinySeg.mlmodel"
    ev = Evaluator(dataset, cache_dir=cache).evaluate(
        backend=OnnxBackend(), model=Model.open(user_model), options=RuntimeOptions(cache_dir=cache / "compiled")
    )
    sample = next(s for s in dataset if s.id == image)
    path = ev.evaluator.cache.path(ev.key.for_image(sample.image_hash))  # type: ignore[union-attr]
    assert path.is_file()
    return path


# --- built variants ---------------------------------------------------------------------------------


def _variant_file(entry: Path) -> Path:
    return entry / json.loads((entry / MANIFEST).read_text())["file"]


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda e: truncate(_variant_file(e)), "does not match its digest"),
        (lambda e: flip_bytes(_variant_file(e)), "does not match its digest"),
        (lambda e: garbage(e / MANIFEST, 200), "does not match its digest"),
        (lambda e: _variant_file(e).unlink(), ".mlmodel is missing"),
        (lambda e: (e / MANIFEST).unlink(), "manifest.json is missing"),
    ],
    ids=["truncate-model", "flip-model", "garbage-manifest", "delete-model", "delete-manifest"],
)
def test_damaged_variant_is_rebuilt_with_a_note(
    cache: Path, user: UserFiles, expect_clean: Callable[..., Run], damage: Callable[[Path], None], problem: str
) -> None:
    damage(variant_entry(cache, "q4", user))
    run = expect_clean(_without_predictions(cache))
    _one_note(run, "variant cache entry q4 of TinySeg.mlmodel ignored and rebuilt", problem)


def test_variant_files_swapped_between_entries_are_caught(
    cache: Path, user: UserFiles, expect_clean: Callable[..., Run]
) -> None:
    q8, q4 = variant_entry(cache, "q8", user), variant_entry(cache, "q4", user)
    shutil.copy(_variant_file(q8), _variant_file(q4))  # q8's model under q4's name
    shutil.copy(q8 / MANIFEST, q4 / MANIFEST)
    run = expect_clean(_without_predictions(cache))
    _one_note(run, "variant cache entry q4", "does not match its digest")


# --- writers killed before their entry is renamed into place ------------------------------------


@pytest.fixture(scope="module")
def killed(clean: tuple[Path, Run], user: UserFiles, dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, int]]:
    """Per cache kind: (cache, entry, signal) after a writer was killed just before renaming the entry into place."""
    root = tmp_path_factory.mktemp("killed")
    user_args = f"h.UserFiles(h.Path({str(user.model_path)!r}), h.Path({str(user.dataset_dir)!r}))"
    prepared: dict[str, tuple[Path, Path]] = {}
    jobs: dict[str, tuple[str, str]] = {}
    for kind in ("compiled", "prediction", "variant"):
        cache = root / kind
        shutil.copytree(clean[0], cache)
        if kind == "compiled":
            entry = compiled_entry(cache, "base", user)
        elif kind == "prediction":
            entry = _prediction_of(cache, dataset, "scene_000")
        else:
            entry = variant_entry(cache, "q8", user)
        if kind != "prediction":
            shutil.rmtree(cache / "predictions")  # the run must reach the entry being rebuilt
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        prepared[kind] = (cache, entry)
        jobs[kind] = (f"h.run_once({user_args}, h.Path({str(cache)!r}))", re.escape(entry.name) + "$")
    signals = run_killed_before_rename(jobs)
    return {kind: (cache, entry, signals[kind]) for kind, (cache, entry) in prepared.items()}


@pytest.mark.parametrize("kind", ["compiled", "prediction", "variant"])
def test_an_entry_killed_before_its_rename_is_never_used(
    killed: dict[str, tuple[Path, Path, int]], expect_clean: Callable[..., Run], kind: str
) -> None:
    cache, entry, signal = killed[kind]
    assert signal == 9
    assert not entry.exists()
    assert [p for p in entry.parent.iterdir() if p.name.startswith(f".{entry.name}.")]  # only debris was left
    run = expect_clean(cache)
    assert run.notes == []  # a killed write is a plain miss: nothing to report
    if kind == "prediction":
        assert run.images_run == 1


# --- concurrent clear (bug 8) --------------------------------------------------------------------

_HOLDER = """
import sys
from pytest_coreml_quality.cacheuse import CacheUse
use = CacheUse(sys.argv[1])
use.hold()
print("held", flush=True)
sys.stdin.readline()
use.release()
"""


def _start_holder(cache: Path) -> subprocess.Popen[str]:
    """Another process holding the cache, as a run in progress does."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(cache)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_clearing_waits_for_a_run_that_uses_the_cache(
    cache: Path, user: UserFiles, expect_clean: Callable[..., Run]
) -> None:
    holder = _start_holder(cache)
    try:
        assert CacheUse(cache).clear(blocking=False) is None  # would pull entries from under the run
        waiting = threading.Event()
        clearer = CacheUse(cache)
        freed: list[int | None] = []
        thread = threading.Thread(target=lambda: freed.append(clearer.clear(waiting=waiting.set)))
        thread.start()
        assert waiting.wait(60)
        run = expect_clean(cache)  # the run in progress still finds every entry
        assert run.notes == [] and run.images_run == 0
    finally:
        holder.communicate("go\n", timeout=60)
    thread.join(60)
    clearer.release()
    assert freed and freed[0] and freed[0] > 0
    assert sorted(p.name for p in cache.iterdir()) == [LOCK_NAME]
    assert expect_clean(cache).images_run == 3 * 3  # and the next run rebuilds everything


def test_cache_clear_option_waits_for_another_run(cache: Path, user: UserFiles, tmp_path: Path) -> None:
    before = user.fingerprint()
    holder = _start_holder(cache)
    clearing = subprocess.Popen(
        [sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
         f"--coreml-model={user.model_path}", f"--coreml-cache-dir={cache}", "--coreml-cache-clear"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert clearing.stderr is not None
        expected = f"waiting for another run using {cache} to finish before clearing it"
        seen = []
        while not seen or (seen[-1] and expected not in seen[-1]):  # until the line, or EOF
            seen.append(clearing.stderr.readline())
        assert expected in seen[-1], seen  # today's plugin cleared at once and never waited
        assert (cache / "predictions").is_dir() and (cache / "compiled").is_dir()
    finally:
        holder.communicate("go\n", timeout=60)
    out, err = clearing.communicate(timeout=120)
    assert clearing.returncode == 0, out + err
    assert sorted(p.name for p in cache.iterdir()) == [LOCK_NAME]
    assert user.fingerprint() == before


def test_cache_clear_without_a_model_removes_only_the_cache(pytester: pytest.Pytester) -> None:
    # It used to remove the rootdir: the whole project.
    pytester.makepyfile(test_app="def test_app():\n    pass\n")
    cache = pytester.path / "shared-cache"
    (cache / "variants").mkdir(parents=True)
    (cache / "notes.txt").write_text("the user's own file")
    result = pytester.runpytest(f"--coreml-cache-dir={cache}", "--coreml-cache-clear")
    result.assert_outcomes(passed=1)
    assert (pytester.path / "test_app.py").is_file()
    assert sorted(p.name for p in cache.iterdir()) == [LOCK_NAME, "notes.txt"]


# --- end to end: the note reaches the user ----------------------------------------------------------


def test_a_run_over_damaged_compiled_weights_reports_the_clean_figures_and_says_so(
    pytester: pytest.Pytester, user: UserFiles, tmp_path: Path
) -> None:
    from pytest_coreml_quality.report.json_report import read_json

    cache = tmp_path / "cache"
    before = user.fingerprint()

    def run(report: Path) -> pytest.RunResult:
        result = pytester.runpytest(
            f"--coreml-model={user.model_path}", f"--coreml-dataset={user.dataset_dir}", "--coreml-variants=q8",
            f"--coreml-cache-dir={cache}", f"--coreml-report-json={report}", "-k", "quality", "-p", "no:randomly",
        )
        result.assert_outcomes(passed=2)
        return result

    run(tmp_path / "clean.json")
    flip_bytes(compiled_entry(cache, "q8", user) / WEIGHTS_FILE)
    shutil.rmtree(cache / "predictions")
    damaged = run(tmp_path / "again.json")
    damaged.stdout.fnmatch_lines(
        ["coreml-quality: NOTE: compiled cache entry of TinySeg-q8.mlmodel (*) ignored and rebuilt: "
         "its content does not match its digest"]
    )
    clean_run, again = read_json(tmp_path / "clean.json"), read_json(tmp_path / "again.json")
    for recipe in ("base", "q8"):
        assert again.models["TinySeg.mlmodel"].variants[recipe].metrics == pytest.approx(
            clean_run.models["TinySeg.mlmodel"].variants[recipe].metrics, rel=1e-9
        )
    assert user.fingerprint() == before


# --- the per-process digest memo never hides a rewrite ---------------------------------------------


def test_a_file_rewritten_in_place_after_its_digest_was_memoised_is_hashed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_coreml_quality import cachefs

    monkeypatch.setattr(cachefs, "_RACY_SECONDS", -1.0)  # memoise even a file written just now
    monkeypatch.setattr(cachefs, "_RACY_SECONDS_COARSE", -1.0)
    (tmp_path / WEIGHTS_FILE).write_bytes(b"\x00" * 4096)
    os.utime(tmp_path / WEIGHTS_FILE, ns=(10**18, 10**18))  # an old file (the rewrite below gets a new mtime)
    cachefs.write_entry_digest(tmp_path, "key", [WEIGHTS_FILE])
    assert cachefs.entry_problem(tmp_path, "key") is None
    with open(tmp_path / WEIGHTS_FILE, "r+b") as fh:  # same inode, same size, new content
        fh.write(b"\x01")
    assert cachefs.entry_problem(tmp_path, "key") == "its content does not match its digest"


def test_a_file_changed_within_one_timestamp_tick_is_not_memoised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_coreml_quality import cachefs

    monkeypatch.setattr(cachefs, "_RACY_SECONDS", 3600.0)
    monkeypatch.setattr(cachefs, "_FILE_DIGESTS", {})
    (tmp_path / WEIGHTS_FILE).write_bytes(b"\x00" * 4096)
    cachefs.write_entry_digest(tmp_path, "key", [WEIGHTS_FILE])
    assert cachefs.entry_problem(tmp_path, "key") is None
    assert cachefs._FILE_DIGESTS == {}  # a rewrite in the same tick would keep every stamp: hash again next time
