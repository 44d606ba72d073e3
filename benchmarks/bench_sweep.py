"""How long ``--coreml-variants=sweep`` spends building variants, cold and cached.

Builds every recipe of the sweep for a model into a fresh cache directory (cold), then
asks for them all again from that cache (cached), as a second CI run would. Inference is
not included: this is the sweep's build cost only. Each variant's download size (the
deflate zip, measured while building) is part of the cold figure.

    python benchmarks/bench_sweep.py                                  # the fixture NeuralNetwork model
    python benchmarks/bench_sweep.py --model fixtures/models/TinySeg18.mlpackage
    python benchmarks/bench_sweep.py --model /work/isnet/ISNet.mlmodel  # the real ISNet, if built
    python benchmarks/bench_sweep.py --compare   # k-means tables: coremltools' scikit-learn vs kmeans1d
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_coreml_quality.model import Model  # noqa: E402
from pytest_coreml_quality.variants import build_variant  # noqa: E402
from pytest_coreml_quality.variants.sweep import sweep_recipes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "fixtures" / "models" / "TinySeg.mlmodel")
    parser.add_argument("--compare", action="store_true",
                        help="also time the k-means tables of a NeuralNetwork model both ways, on the same layers")
    args = parser.parse_args()
    model = Model.open(args.model)
    if args.compare:
        compare_kmeans(model)
    recipes = sweep_recipes(model)
    print(f"{model.name}: {model.kind}, {model.size_bytes / 1e6:.1f} MB, sweep of {len(recipes)} recipes")
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        rows = []
        for recipe in recipes:
            t0 = time.perf_counter()
            variant = build_variant(model, recipe, Path(cache))
            rows.append((recipe.name, time.perf_counter() - t0, variant.size_bytes, variant.download_bytes or 0))
        cold = time.perf_counter() - started
        started = time.perf_counter()
        assert all(build_variant(model, recipe, Path(cache)).cached for recipe in recipes)
        cached = time.perf_counter() - started
    print(f"{'recipe':16} {'build s':>8} {'size MB':>8} {'dl MB':>8}")
    for name, seconds, size, download in rows:
        print(f"{name:16} {seconds:8.2f} {size / 1e6:8.3f} {download / 1e6:8.3f}")
    print(f"cold sweep (every build): {cold:.2f} s; cached sweep: {cached:.2f} s")


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
