"""How long ``--coreml-variants=sweep`` spends building variants, cold and cached.

Builds every recipe of the sweep for a model into a fresh cache directory (cold), then
asks for them all again from that cache (cached), as a second CI run would. Inference is
not included: this is the sweep's build cost only. Each variant's download size (the
deflate zip, measured while building) is part of the cold figure.

    python benchmarks/bench_sweep.py                                  # the fixture NeuralNetwork model
    python benchmarks/bench_sweep.py --model fixtures/models/TinySeg18.mlpackage
    python benchmarks/bench_sweep.py --model /work/isnet/ISNet.mlmodel  # the real ISNet, if built
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
    args = parser.parse_args()
    model = Model.open(args.model)
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


if __name__ == "__main__":
    main()
