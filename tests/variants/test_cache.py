"""The variant cache: hits, keys, killed builds, concurrent workers, damage, clearing."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_coreml_quality.cachefs import CacheRepairWarning, try_lock
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.variants import build_variant, cache_key, clear_cache, parse_recipe
from pytest_coreml_quality.variants import cache as cache_module
from tests.variants.cache_workers import build_in_worker, count_builds

REPO = Path(__file__).resolve().parents[2]


def builds(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """Counts real builds in this process (and in children that call count_builds)."""
    path = tmp_path / "builds.txt"
    from pytest_coreml_quality.variants import build as build_module

    original = build_module.build_recipe
    count_builds(path)
    yield path
    build_module.build_recipe = original


def entries(cache_dir: Path) -> list[Path]:
    root = cache_dir / "variants"
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.exists() else []


def test_second_build_is_a_cache_hit(nn_model: Model, cache_dir: Path, marker: Path) -> None:
    first = build_variant(nn_model, "q4", cache_dir)
    second = build_variant(nn_model, "q4", cache_dir)
    assert builds(marker) == 1
    assert (first.cached, second.cached) == (False, True)
    assert first.path == second.path and first.size_bytes == second.size_bytes
    assert first.weights == second.weights
    assert second.build_seconds == first.build_seconds  # recorded at build time, in the manifest
    # A spelling of the same recipe is the same entry.
    assert build_variant(nn_model, "Q4-linear", cache_dir).cached
    assert builds(marker) == 1


def test_base_is_the_model_itself(nn_model: Model, cache_dir: Path, marker: Path) -> None:
    base = build_variant(nn_model, "base", cache_dir)
    assert base.path == nn_model.path and base.ratio == 1.0 and base.bits_per_weight == 32.0
    assert builds(marker) == 0 and not cache_dir.exists()


def test_key_covers_model_content_recipe_and_coremltools_version(
    nn_model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    q8, q4 = parse_recipe("q8"), parse_recipe("q4")
    key = cache_key(nn_model, q8)
    assert key != cache_key(nn_model, q4)
    copy = tmp_path / "copy.mlmodel"
    shutil.copy(nn_model.path, copy)
    assert cache_key(Model.open(copy), q8) == key  # content-addressed, not path-addressed
    changed = tmp_path / "changed.mlmodel"
    spec = nn_model.spec.__deepcopy__()
    spec.description.metadata.author = "someone else"  # same network, different bytes
    import coremltools as ct

    ct.utils.save_spec(spec, str(changed))
    assert cache_key(Model.open(changed), q8) != key
    monkeypatch.setattr(cache_module, "coremltools_version", lambda: "99.0")
    assert cache_key(nn_model, q8) != key


def test_progress_gets_one_line_per_build_and_coremltools_stays_quiet(
    nn_model: Model, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[str] = []
    # fast_nn=False goes through quantize_weights, which print()s a line per layer.
    build_variant(nn_model, "q2", cache_dir, progress=lines.append, fast_nn=False)
    build_variant(nn_model, "q2", cache_dir, progress=lines.append, fast_nn=False)
    assert len(lines) == 1
    assert "q2" in lines[0] and nn_model.name in lines[0]
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_a_failed_build_leaves_no_entry(nn_model: Model, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_coreml_quality.variants import build as build_module

    def explode(model, recipe, out_path, **kwargs):  # type: ignore[no-untyped-def]
        out_path.write_bytes(b"half a model")
        raise RuntimeError("killed midway")

    monkeypatch.setattr(build_module, "build_recipe", explode)
    with pytest.raises(RuntimeError, match="killed midway"):
        build_variant(nn_model, "q4", cache_dir)
    assert entries(cache_dir) == []
    assert not any(p.name.endswith(".partial") for p in (cache_dir / "variants").iterdir())
    monkeypatch.undo()
    assert not build_variant(nn_model, "q4", cache_dir).cached


def test_a_failed_zip_releases_the_entry_and_its_scratch(nn_model: Model, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreadable(path: Path) -> int:
        raise OSError("disk went away")

    monkeypatch.setattr(cache_module, "zip_size", unreadable)
    with pytest.raises(OSError, match="disk went away") as failed:
        build_variant(nn_model, "q4", cache_dir)
    # While the failure (and its traceback) is still alive: nothing half-done is held or left.
    entry = cache_module.entry_dir(nn_model, parse_recipe("q4"), cache_dir)
    with try_lock(entry) as free:
        assert free
    assert not any(p.name.endswith(".partial") for p in (cache_dir / "variants").iterdir())
    assert entries(cache_dir) == [] and failed.value is not None
    monkeypatch.undo()
    assert not build_variant(nn_model, "q4", cache_dir).cached


def test_a_killed_build_leaves_no_entry_and_the_next_build_succeeds(
    nn_model: Model, cache_dir: Path, tmp_path: Path, marker: Path
) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child_marker = tmp_path / "child.txt"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "variants" / "cache_workers.py"), str(nn_model.path), "q4", str(cache_dir), str(child_marker)],
        env=env, capture_output=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 17, proc.stderr.decode()[-2000:]
    assert builds(child_marker) == 1  # it did build, then died before the rename
    assert entries(cache_dir) == []  # nothing a later run could trust
    debris = [p for p in (cache_dir / "variants").iterdir() if p.name.endswith(".partial")]
    assert debris  # the half-finished scratch directory is all that is left
    variant = build_variant(nn_model, "q4", cache_dir)
    assert not variant.cached and builds(marker) == 1
    assert Model.open(variant.path).kind == "neuralNetwork"
    assert not any(p.name.endswith(".partial") for p in (cache_dir / "variants").iterdir())  # debris cleared


def test_concurrent_workers_build_once(nn_model: Model, cache_dir: Path, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    workers = 3
    barrier = ctx.Barrier(workers)
    results = tmp_path / "results"
    results.mkdir()
    marker = tmp_path / "workers.txt"
    args = (str(nn_model.path), "q3", str(cache_dir), str(marker), barrier, str(results))
    procs = [ctx.Process(target=build_in_worker, args=args) for _ in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
        assert p.exitcode == 0
    outcomes = [f.read_text().split() for f in results.iterdir()]
    assert len(outcomes) == workers
    assert builds(marker) == 1
    assert len({digest for digest, _ in outcomes}) == 1  # everyone got the same variant
    assert sorted(cached for _, cached in outcomes) == ["0", "1", "1"]
    assert len(entries(cache_dir)) == 1


@pytest.mark.parametrize("recipe", ["q8", "pal4"])
def test_a_damaged_variant_is_detected_and_rebuilt(
    nn_model: Model, mlprogram_model: Model, cache_dir: Path, marker: Path, recipe: str
) -> None:
    model = nn_model if recipe == "q8" else mlprogram_model
    first = build_variant(model, recipe, cache_dir)
    damaged = first.path if first.path.is_file() else next((first.path / "Data").rglob("weight.bin"))
    good_bytes = damaged.read_bytes()
    with open(damaged, "r+b") as fh:
        fh.truncate(len(good_bytes) // 2)
    with pytest.warns(CacheRepairWarning, match=f"variant cache entry {recipe} .* does not match its digest"):
        again = build_variant(model, recipe, cache_dir)
    assert not again.cached and builds(marker) == 2
    # The rebuilt weights are the same bytes (an .mlpackage's manifest has fresh UUIDs, so
    # compare the weights rather than the whole package).
    assert damaged.read_bytes() == good_bytes
    assert build_variant(model, recipe, cache_dir).cached


def test_a_missing_or_garbled_manifest_means_rebuild(nn_model: Model, cache_dir: Path, marker: Path) -> None:
    variant = build_variant(nn_model, "q8", cache_dir)
    manifest = variant.path.parent / "manifest.json"
    manifest.write_text("{not json")
    with pytest.warns(CacheRepairWarning, match="does not match its digest"):
        assert not build_variant(nn_model, "q8", cache_dir).cached
    manifest.unlink()
    with pytest.warns(CacheRepairWarning, match="manifest.json is missing"):
        assert not build_variant(nn_model, "q8", cache_dir).cached
    assert builds(marker) == 3


def test_clear_cache(nn_model: Model, cache_dir: Path, marker: Path) -> None:
    assert clear_cache(cache_dir) == 0  # nothing there yet
    build_variant(nn_model, "q8", cache_dir)
    build_variant(nn_model, "fp16", cache_dir)
    assert len(entries(cache_dir)) == 2
    freed = clear_cache(cache_dir)
    assert freed > 0 and entries(cache_dir) == []
    assert not build_variant(nn_model, "q8", cache_dir).cached and builds(marker) == 3
