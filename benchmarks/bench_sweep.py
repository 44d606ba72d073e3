"""How long ``--coreml-variants=sweep`` spends building variants, cold and cached.

Builds every recipe of the sweep for a model into a fresh cache directory (cold), then
asks for them all again from that cache (cached), as a second CI run would. Inference is
not included: this is the sweep's build cost only. Each variant's download size (the
deflate zip) is part of the cold figure. Two ways, interleaved, in fresh caches:

* ``baseline``: one ``build_variant`` per recipe, as before the sweep builder: no shared
  k-means sorts, each zip before the next build (8 KB zlib calls, as ``ZipFile.write``
  makes them), fp16 through coremltools' ``quantize_weights``;
* ``sweep``: ``variants.sweep_build.build_sweep``: shared sorts, zips in threads next to the
  next build, fp16 through the fast path.

Both must give the same variant bytes and download sizes (checked). coremltools is
imported before any timing.

    python benchmarks/bench_sweep.py                                  # the fixture NeuralNetwork model
    python benchmarks/bench_sweep.py --model fixtures/models/TinySeg18.mlpackage
    python benchmarks/bench_sweep.py --model /work/isnet/ISNet_1024_1024.mlmodel --rounds 1
    python benchmarks/bench_sweep.py --only sweep     # just the new way
    python benchmarks/bench_sweep.py --compare   # k-means tables: coremltools' scikit-learn vs kmeans1d
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_coreml_quality import download  # noqa: E402
from pytest_coreml_quality.model import Model, content_hash  # noqa: E402
from pytest_coreml_quality.variants import Recipe, Variant, build_variant  # noqa: E402
from pytest_coreml_quality.variants.sweep import sweep_recipes  # noqa: E402
from pytest_coreml_quality.variants.sweep_build import build_sweep  # noqa: E402

Timed = dict[str, tuple[float, Variant]]  # recipe -> (seconds attributed to it, variant)


def baseline(model: Model, recipes: list[Recipe], cache: Path) -> Timed:
    """One build_variant per recipe, as the session did before build_sweep."""
    chunk, download._ZIP_CHUNK = download._ZIP_CHUNK, 8 * 1024  # ZipFile.write's 8 KB calls
    try:
        out: Timed = {}
        for recipe in recipes:
            t0 = time.perf_counter()
            variant = build_variant(model, recipe, cache, fast_nn=recipe.name != "fp16")
            out[recipe.name] = (time.perf_counter() - t0, variant)
        return out
    finally:
        download._ZIP_CHUNK = chunk


def sweep(model: Model, recipes: list[Recipe], cache: Path) -> Timed:
    """build_sweep; per recipe, the build time its manifest records (zips overlap, so these do not add up)."""
    outcomes = build_sweep(model, recipes, cache)
    failed = {name: o for name, o in outcomes.items() if not isinstance(o, Variant)}
    if failed:
        raise SystemExit(f"sweep failed: {failed}")
    return {name: (o.build_seconds, o) for name, o in outcomes.items() if isinstance(o, Variant)}


WAYS: dict[str, Callable[[Model, list[Recipe], Path], Timed]] = {"baseline": baseline, "sweep": sweep}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "fixtures" / "models" / "TinySeg.mlmodel")
    parser.add_argument("--rounds", type=int, default=1, help="cold sweeps per way, interleaved")
    parser.add_argument("--only", choices=sorted(WAYS), help="time one way only")
    parser.add_argument("--compare", action="store_true",
                        help="also time the k-means tables of a NeuralNetwork model both ways, on the same layers")
    args = parser.parse_args()
    import coremltools  # noqa: F401  (its import takes seconds: not a build cost)

    model = Model.open(args.model)
    model.content_hash  # hashed once per process: not a build cost either
    if args.compare:
        compare_kmeans(model)
    recipes = sweep_recipes(model)
    ways = [args.only] if args.only else list(WAYS)
    print(f"{model.name}: {model.kind}, {model.size_bytes / 1e6:.1f} MB, sweep of {len(recipes)} recipes")
    colds: dict[str, list[float]] = {w: [] for w in ways}
    cpus: dict[str, list[tuple[float, float]]] = {w: [] for w in ways}  # (all threads, main thread) CPU seconds
    cached: dict[str, list[float]] = {w: [] for w in ways}
    loads: list[tuple[float, ...]] = []
    rows: dict[str, Timed] = {}
    for _ in range(args.rounds):
        for way in ways:
            with tempfile.TemporaryDirectory() as tmp:
                cache = Path(tmp)
                loads.append(os.getloadavg())
                started, cpu, main_cpu = time.perf_counter(), time.process_time(), time.thread_time()
                rows[way] = WAYS[way](model, recipes, cache)
                colds[way].append(time.perf_counter() - started)
                cpus[way].append((time.process_time() - cpu, time.thread_time() - main_cpu))
                started = time.perf_counter()
                assert all(build_variant(model, recipe, cache).cached for recipe in recipes)
                cached[way].append(time.perf_counter() - started)
                rows[way] = {name: (sec, _fingerprint(v)) for name, (sec, v) in rows[way].items()}  # type: ignore[misc]
    if len(ways) == 2:
        a, b = (rows[w] for w in ways)
        same = all(a[n][1] == b[n][1] for n in a)
        print(f"variant bytes and download sizes identical both ways: {same}")
        if not same:
            raise SystemExit("the two ways built different variants")
    header = f"{'recipe':14}" + "".join(f" {w + ' s':>12}" for w in ways) + f" {'size MB':>8} {'dl MB':>8}"
    print(header)
    for recipe in recipes:
        first = rows[ways[0]][recipe.name][1]
        times = "".join(f" {rows[w][recipe.name][0]:12.2f}" for w in ways)
        print(f"{recipe.name:14}{times} {first[1] / 1e6:8.3f} {first[2] / 1e6:8.3f}")  # type: ignore[index]
    print("(sweep: each recipe's own build; its zip runs next to the next build, so the column does not add up)")
    for way in ways:
        print(f"{way:9} cold sweep (every build): median {statistics.median(colds[way]):.2f} s "
              f"{[round(c, 2) for c in colds[way]]}; cached sweep: {statistics.median(cached[way]):.2f} s")
        # CPU seconds barely depend on the load: on 2 idle cores the cold sweep takes at least
        # max(all threads / 2, main thread) seconds.
        print(f"{'':9} CPU: all threads {statistics.median(c[0] for c in cpus[way]):.2f} s, "
              f"main thread {statistics.median(c[1] for c in cpus[way]):.2f} s")
    if len(ways) == 2:
        print(f"speed-up of the cold sweep: x{statistics.median(colds[ways[0]]) / statistics.median(colds[ways[1]]):.2f}")
    print(f"load average at the start of each cold sweep: {[tuple(round(x, 2) for x in load) for load in loads]}")


def _fingerprint(variant: Variant) -> tuple[str, int, int | None]:
    return content_hash(variant.path), variant.size_bytes, variant.download_bytes


def compare_kmeans(model: Model) -> None:
    """Time coremltools' k-means tables (scikit-learn) against kmeans1d's on every weight tensor."""
    import warnings

    import coremltools as ct
    import numpy as np
    from coremltools.models.neural_network.quantization_utils import _get_kmeans_lookup_table_and_weight

    from pytest_coreml_quality.variants.kmeans1d import kmeans_1d
    from pytest_coreml_quality.variants.nn_fast_quantize import _networks, _weight_fields

    spec = ct.utils.load_spec(str(model.path))
    layers = [np.array(wp.floatValue) for net in _networks(spec) for layer in net.layers
              for wp, _, _ in _weight_fields(layer) if len(wp.floatValue)]
    total = sum(v.size for v in layers)
    print(f"k-means tables of {len(layers)} weight tensors ({total} weights), same layers both ways")
    print(f"{'bits':>4} {'sklearn s':>10} {'kmeans1d s':>11} {'speed-up':>9} {'MSE sklearn':>12} {'MSE kmeans1d':>13} {'ratio':>6}")
    for nbits in range(8, 3, -1):
        timings, errors = [0.0, 0.0], [0.0, 0.0]
        for values in layers:
            for i, run in enumerate((lambda v: _get_kmeans_lookup_table_and_weight(nbits, v), lambda v: kmeans_1d(v, 1 << nbits))):
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    table, labels = run(values)
                timings[i] += time.perf_counter() - t0
                errors[i] += float(np.sum((values - np.asarray(table).reshape(-1)[np.asarray(labels).reshape(-1)]) ** 2))
        print(f"{nbits:4} {timings[0]:10.2f} {timings[1]:11.3f} {timings[0] / timings[1]:8.0f}x "
              f"{errors[0] / total:12.4e} {errors[1] / total:13.4e} {errors[1] / errors[0]:6.3f}")


if __name__ == "__main__":
    main()
