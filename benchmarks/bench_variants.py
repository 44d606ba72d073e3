"""Variant builds on an ISNet-sized NeuralNetwork: first build vs cached build, fast q4 vs coremltools.

    python benchmarks/bench_variants.py [--model PATH] [--recipes fp16,q8,q4,q2] [--skip-coremltools]

Uses /work/isnet/ISNet_1024_1024.mlmodel (made by ../shared/tools/build_isnet_coreml.py)
when it exists, else builds an ISNet-sized conv model (about 44M fp32 weights, 176 MB)
with random weights. Prints, measured side by side in this one run:

* per recipe: the first build (empty cache), a cached build in this process, and a
  cached build in a fresh process (what a later run or another xdist worker pays);
* q4 through the fast path vs ``quantization_utils.quantize_weights(nbits=4)``, and
  whether the two saved files are byte-identical.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ISNET = Path("/work/isnet/ISNet_1024_1024.mlmodel")


def isnet_sized_model(path: Path) -> Path:
    """A conv stack with about as many fp32 weights as ISNet (44M)."""
    import coremltools as ct
    import numpy as np
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    rng = np.random.default_rng(0)
    channels = [3, 64, 128, 256, 512, 1024, 1024, 1024, 1024, 1024, 64, 1]
    builder = NeuralNetworkBuilder([("input", datatypes.Array(3, 64, 64))], [("mask", datatypes.Array(1, 64, 64))])
    prev = "input"
    for i, (cin, cout) in enumerate(zip(channels[:-1], channels[1:])):
        out = "mask" if i == len(channels) - 2 else f"c{i}"
        w = (rng.standard_normal((3, 3, cin, cout), dtype=np.float32) * 0.02).astype(np.float32)
        builder.add_convolution(f"conv{i}", cin, cout, 3, 3, 1, 1, "same", 1, w, np.zeros(cout, np.float32), True, input_name=prev, output_name=out)
        prev = out
    ct.utils.save_spec(builder.spec, str(path))
    return path


def cached_in_fresh_process(model_path: Path, recipes: list[str], cache_dir: Path) -> dict[str, float]:
    """Time cached builds in a new interpreter (after its imports and the model's hash)."""
    code = f"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.variants import build_variant
t = time.perf_counter(); model = Model.open({str(model_path)!r}); opened = time.perf_counter() - t
t = time.perf_counter(); model.content_hash; hashed = time.perf_counter() - t
out = {{"open": opened, "hash": hashed}}
for r in {recipes!r}:
    t = time.perf_counter(); v = build_variant(model, r, Path({str(cache_dir)!r})); out[r] = time.perf_counter() - t
    assert v.cached, r
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--recipes", default="fp16,q8,q4,q2,q1,q4-lut")
    parser.add_argument("--skip-coremltools", action="store_true", help="skip the ~90 s quantize_weights(nbits=4) run")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    work = Path(tempfile.mkdtemp(prefix="bench-variants-"))
    try:
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # about 230 MB of built variants


def run(args: argparse.Namespace, work: Path) -> None:
    from pytest_coreml_quality.model import Model
    from pytest_coreml_quality.variants import build_variant
    from pytest_coreml_quality.quiet import quiet_coremltools

    model_path = args.model or (ISNET if ISNET.exists() else isnet_sized_model(work / "ISNetSized.mlmodel"))
    model = Model.open(model_path)
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    cache_dir = work / "cache"
    print(f"model: {model.summary()}")

    rows = []
    for recipe in recipes:
        started = time.perf_counter()
        first = build_variant(model, recipe, cache_dir)
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        again = build_variant(model, recipe, cache_dir)
        cached_s = time.perf_counter() - started
        assert again.cached and not first.cached
        rows.append((recipe, first_s, cached_s, first.size_bytes, first.bits_per_weight))
    fresh = cached_in_fresh_process(model_path, recipes, cache_dir)

    print(f"\nfresh process: Model.open {fresh['open']:.2f}s, model content hash {fresh['hash']:.2f}s (once per model)")
    print(f"{'recipe':8} {'first build':>12} {'cached':>9} {'cached, new process':>20} {'size MB':>9} {'bits/weight':>12} {'first/cached':>13}")
    for recipe, first_s, cached_s, size, bits in rows:
        print(f"{recipe:8} {first_s:11.2f}s {cached_s:8.3f}s {fresh[recipe]:19.3f}s {size / 1e6:9.1f} {bits:12.2f} {first_s / max(cached_s, 1e-6):12.0f}x")

    print("\nq4, first build without cache:")
    fast_out = work / "fast_q4.mlmodel"
    started = time.perf_counter()
    import coremltools as ct

    from pytest_coreml_quality.variants.nn_fast_quantize import quantize_spec

    with quiet_coremltools():
        spec = ct.utils.load_spec(str(model_path))
        quantize_spec(spec, 4, "linear")
        ct.utils.save_spec(spec, str(fast_out))
    fast_s = time.perf_counter() - started
    print(f"  fast path (load + quantize + save):            {fast_s:7.2f}s")
    if args.skip_coremltools:
        return
    from coremltools.models.neural_network import quantization_utils

    ct_out = work / "ct_q4.mlmodel"
    started = time.perf_counter()
    with quiet_coremltools():
        mlmodel = ct.models.MLModel(str(model_path), skip_model_load=True)
        quantization_utils.quantize_weights(mlmodel, nbits=4, quantization_mode="linear").save(str(ct_out))
    ct_s = time.perf_counter() - started
    same = fast_out.read_bytes() == ct_out.read_bytes()
    # protobuf writes map entries (metadata.userDefined) in an order that depends on the
    # process's history, so also compare with map entries sorted.
    same_sorted = ct.utils.load_spec(str(fast_out)).SerializeToString(deterministic=True) == ct.utils.load_spec(
        str(ct_out)
    ).SerializeToString(deterministic=True)
    print(f"  coremltools quantize_weights(nbits=4) + save:  {ct_s:7.2f}s")
    print(f"  speed-up {ct_s / fast_s:.1f}x; saved files byte-identical: {same}; identical with map entries sorted: {same_sorted}")


if __name__ == "__main__":
    main()
