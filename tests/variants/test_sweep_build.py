"""build_sweep: a sweep's builds in one pass (zips in threads, shared k-means sorts), same bytes."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pytest_coreml_quality.errors import RecipeError
from pytest_coreml_quality.model import Model, content_hash
from pytest_coreml_quality.variants import Variant, build_variant, parse_recipe
from pytest_coreml_quality.variants import build as build_module
from pytest_coreml_quality.variants import sweep_build
from pytest_coreml_quality.variants.cache import is_cached
from pytest_coreml_quality.variants.kmeans1d import DistinctMemo
from pytest_coreml_quality.variants.sweep import SweepBudget, SweepSkipped

RECIPES = ("fp16", "q8", "q4", "q3-lut", "q4-kmeans", "q5-kmeans")


def fingerprint(variant: Variant) -> tuple[str, int, int | None, str]:
    return content_hash(variant.path), variant.size_bytes, variant.download_bytes, variant.note


@pytest.mark.parametrize("overlap", [True, False])
def test_same_files_and_download_sizes_as_one_build_at_a_time(nn_model: Model, tmp_path: Path, overlap: bool) -> None:
    alone = {name: fingerprint(build_variant(nn_model, name, tmp_path / "alone")) for name in RECIPES}
    outcomes = sweep_build.build_sweep(nn_model, RECIPES, tmp_path / "sweep", overlap=overlap)
    assert list(outcomes) == list(RECIPES)
    assert {name: fingerprint(v) for name, v in outcomes.items()} == alone  # type: ignore[arg-type]
    again = sweep_build.build_sweep(nn_model, RECIPES, tmp_path / "sweep")
    assert all(isinstance(v, Variant) and v.cached for v in again.values())


def test_zips_run_in_threads_and_kmeans_sorts_are_shared(nn_model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    threads = []
    original = sweep_build.zip_size

    def spy(path: Path) -> int:
        threads.append(threading.current_thread().name)
        return original(path)

    monkeypatch.setattr(sweep_build, "zip_size", spy)
    memo = DistinctMemo()
    sweep_build.build_sweep(nn_model, RECIPES, tmp_path, memo=memo)
    assert len(threads) == len(RECIPES) and all(name.startswith("sweep-zip") for name in threads)
    assert memo.misses > 0 and memo.hits == memo.misses  # q5-kmeans reused every sort of q4-kmeans


def test_a_failing_recipe_is_reported_for_itself_and_the_others_are_built(
    nn_model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = build_module.build_recipe

    def fails_at_q4(model, recipe, out_path, **kwargs):  # type: ignore[no-untyped-def]
        if recipe.name == "q4":
            raise RecipeError("coremltools could not build recipe 'q4': boom", path=model.path, field="recipe")
        return original(model, recipe, out_path, **kwargs)

    monkeypatch.setattr(build_module, "build_recipe", fails_at_q4)
    outcomes = sweep_build.build_sweep(nn_model, RECIPES, tmp_path)
    assert isinstance(outcomes["q4"], RecipeError) and "boom" in str(outcomes["q4"])
    assert all(isinstance(outcomes[n], Variant) for n in RECIPES if n != "q4")
    monkeypatch.setattr(build_module, "build_recipe", original)
    assert not is_cached(nn_model, parse_recipe("q4"), tmp_path)
    assert not build_variant(nn_model, "q4", tmp_path).cached  # nothing left locked or half-written


def test_a_malformed_recipe_name_is_reported_for_itself_and_the_others_are_built(nn_model: Model, tmp_path: Path) -> None:
    outcomes = sweep_build.build_sweep(nn_model, ("fp16", "q99-bogus", "q8"), tmp_path)
    assert sorted(outcomes) == ["fp16", "q8", "q99-bogus"]
    assert isinstance(outcomes["q99-bogus"], RecipeError) and "q99-bogus" in str(outcomes["q99-bogus"])
    assert isinstance(outcomes["fp16"], Variant) and isinstance(outcomes["q8"], Variant)


def test_a_failing_zip_is_reported_for_its_recipe_and_leaves_no_entry(
    nn_model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = sweep_build.zip_size

    def fails_for_q8(path: Path) -> int:
        if "-q8." in path.name:
            raise OSError("disk went away")
        return original(path)

    monkeypatch.setattr(sweep_build, "zip_size", fails_for_q8)
    outcomes = sweep_build.build_sweep(nn_model, ("fp16", "q8", "q4"), tmp_path)
    assert isinstance(outcomes["q8"], OSError)
    assert isinstance(outcomes["fp16"], Variant) and isinstance(outcomes["q4"], Variant)
    assert not is_cached(nn_model, parse_recipe("q8"), tmp_path)
    assert [p.name for p in (tmp_path / "variants").iterdir() if p.name.endswith(".partial")] == []
    assert not build_variant(nn_model, "q8", tmp_path).cached


def test_the_budget_is_charged_each_build_and_stops_new_ones(nn_model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    original = sweep_build.start_build

    def three_seconds(*args, **kwargs):  # type: ignore[no-untyped-def]
        built = original(*args, **kwargs)
        if not isinstance(built, Variant):
            now[0] += 3.0
        return built

    monkeypatch.setattr(sweep_build, "start_build", three_seconds)
    build_variant(nn_model, "q2", tmp_path)  # cached beforehand: used whatever the budget says
    budget = SweepBudget(10.0, clock=lambda: now[0])
    names = ("q8", "q7", "q6", "q2", "q5", "q4")
    outcomes = sweep_build.build_sweep(nn_model, names, tmp_path, budget=budget)
    # 3 s, then 6 s, then 9 s spent; a fourth build would end at 12 s > 10 s.
    assert [n for n in names if isinstance(outcomes[n], Variant)] == ["q8", "q7", "q6", "q2"]
    assert all(isinstance(outcomes[n], SweepSkipped) for n in ("q5", "q4"))
    assert (budget.builds, budget.spent) == (3, 9.0)
    assert budget.skipped == [f"{nn_model.name} [q5]", f"{nn_model.name} [q4]"]


def test_no_lock_is_awaited_while_pending_variants_hold_theirs(nn_model: Model, tmp_path: Path) -> None:
    # Two workers sweeping in different orders (each starts with the variant its item asked
    # for) would deadlock if either waited for a lock while holding its pending entries' locks.
    from filelock import FileLock

    from pytest_coreml_quality.variants.cache import entry_dir

    busy = FileLock(str(entry_dir(nn_model, parse_recipe("q4"), tmp_path)) + ".lock")
    busy.acquire()  # another worker is building q4
    outcomes: dict = {}
    sweeper = threading.Thread(target=lambda: outcomes.update(sweep_build.build_sweep(nn_model, ("q8", "q6", "q4"), tmp_path)))
    sweeper.start()
    try:
        for _ in range(600):  # q8 and q6 are committed (their locks released) before the sweep waits for q4
            if is_cached(nn_model, parse_recipe("q8"), tmp_path) and is_cached(nn_model, parse_recipe("q6"), tmp_path):
                break
            sweeper.join(0.05)
        assert is_cached(nn_model, parse_recipe("q6"), tmp_path) and sweeper.is_alive() and not outcomes
    finally:
        busy.release()
    sweeper.join(60)
    assert [isinstance(outcomes[n], Variant) for n in ("q8", "q6", "q4")] == [True, True, True]


def test_an_interrupted_sweep_leaves_no_pending_entry_behind(nn_model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = sweep_build.start_build

    def interrupted_at_q4(model, recipe, *args, **kwargs):  # type: ignore[no-untyped-def]
        if recipe.name == "q4":
            raise KeyboardInterrupt
        return original(model, recipe, *args, **kwargs)

    monkeypatch.setattr(sweep_build, "start_build", interrupted_at_q4)
    with pytest.raises(KeyboardInterrupt):
        sweep_build.build_sweep(nn_model, ("q8", "q6", "q4"), tmp_path)  # q8 and q6 still pending (deep queue)
    assert not is_cached(nn_model, parse_recipe("q8"), tmp_path)
    assert [p.name for p in (tmp_path / "variants").iterdir() if not p.name.endswith(".lock")] == []
    assert not build_variant(nn_model, "q8", tmp_path).cached  # its lock was released
