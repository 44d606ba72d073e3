"""ML Program runtime benchmark: translation, cold/warm load, throughput, weight decompression.

Usage (the directory made by shared/tools/build_isnet_coreml.py):

    python benchmarks/bench_mlprogram.py /path/to/isnet [--runs 3] [--compressed q8.mlpackage ...] [--only-decompress]

Prints, side by side in one run:
  * translate time of ISNet_1024_1024.mlpackage (MIL load + op translation + ModelProto);
  * cold load (translate + onnxruntime optimisation + session, fresh cache) and warm load
    (session from the cached optimised graph) through OnnxBackend, with the cold load's
    peak RSS (in a child process) against the package size;
  * inference time of the translated graph vs onnxruntime on isnet_fp32.onnx (the same
    network exported directly), interleaved runs, same thread count: ratio ref/ours;
  * for each --compressed package: our numpy decompression of every constexpr op vs
    coremltools' own ``materialized_val_inference`` (ops whose inputs are plain consts).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")


def _cold_load_peak(package: str, cache: str, queue: "mp.Queue[tuple[float, float]]") -> None:
    from pytest_coreml_quality.model import Model
    from pytest_coreml_quality.runtime.base import RuntimeOptions
    from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend

    def status(key: str) -> float:  # kB in /proc/self/status
        with open("/proc/self/status") as f:
            return float(next(int(line.split()[1]) for line in f if line.startswith(key)))

    # Peak growth over the loaded spec, as in bench_runtime.py. VmHWM starts afresh at exec;
    # ru_maxrss does not (it kept the parent's translate peak and reported 0 growth).
    t = time.perf_counter()
    model = Model.open(package)
    before = status("VmRSS:")
    OnnxBackend(intra_op_threads=2).load(model, RuntimeOptions(cache_dir=Path(cache)))
    elapsed = time.perf_counter() - t
    peak = status("VmHWM:")
    queue.put((elapsed, (peak - before) * 1024 / 1e6))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("isnet_dir", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compressed", type=Path, nargs="*", default=[])
    parser.add_argument("--only-decompress", action="store_true", help="skip load and inference timings")
    args = parser.parse_args()
    if args.only_decompress:
        for path in args.compressed:
            _bench_decompression(path)
        return

    import onnxruntime as ort

    from pytest_coreml_quality.model import Model
    from pytest_coreml_quality.runtime.base import RuntimeOptions
    from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend
    from pytest_coreml_quality.runtime.onnx.builder import GraphBuilder
    from pytest_coreml_quality.runtime.onnx.mlprogram import translate_mlprogram

    package = args.isnet_dir / "ISNet_1024_1024.mlpackage"
    model = Model.open(package)
    print(f"model: {model.summary()}")

    t = time.perf_counter()
    builder = GraphBuilder()
    translate_mlprogram(model, builder)
    builder.build()
    print(f"translate (MIL load + ops + ModelProto): {time.perf_counter() - t:6.2f} s")
    del builder

    with tempfile.TemporaryDirectory() as cache:
        ctx = mp.get_context("spawn")
        queue: mp.Queue = ctx.Queue()
        child = ctx.Process(target=_cold_load_peak, args=(str(package), cache, queue))
        child.start()
        cold, peak_mb = queue.get()
        child.join()
        t = time.perf_counter()
        predictor = OnnxBackend(intra_op_threads=2).load(model, RuntimeOptions(cache_dir=Path(cache)))
        warm = time.perf_counter() - t
        size_mb = model.size_bytes / 1e6
        print(f"cold load: {cold:6.2f} s   warm load: {warm:6.2f} s")
        ratio = peak_mb / size_mb
        print(f"cold load peak RSS growth: {peak_mb:7.1f} MB = {ratio:4.2f} x package size ({size_mb:.1f} MB)")

        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        reference = ort.InferenceSession(str(args.isnet_dir / "isnet_fp32.onnx"), so, providers=["CPUExecutionProvider"])
        ours = predictor.session
        pixels = (np.random.default_rng(0).random((1, 3, 1024, 1024)) * 255).astype(np.float32)
        ref_feed = {reference.get_inputs()[0].name: pixels / 255.0 - 0.5}
        our_feed = {ours.get_inputs()[0].name: pixels}
        ours.run(None, our_feed)  # warm-up both
        reference.run(None, ref_feed)
        t_ours, t_ref = [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            ours.run(None, our_feed)
            t_ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            reference.run(None, ref_feed)
            t_ref.append(time.perf_counter() - t)
        mo, mr = min(t_ours), min(t_ref)
        print(
            f"inference (best of {args.runs}): translated {mo:6.2f} s   direct ONNX {mr:6.2f} s   "
            f"throughput ratio {mr / mo:4.2f}"
        )

    for path in args.compressed:
        _bench_decompression(path)


def _bench_decompression(path: Path) -> None:
    from pytest_coreml_quality.model import Model
    from pytest_coreml_quality.runtime.onnx.mil_ops.registry import MilContext
    from pytest_coreml_quality.runtime.onnx.mil_weights import WEIGHT_OPS, decompress_op
    from pytest_coreml_quality.runtime.onnx.mlprogram import load_main_function

    func = load_main_function(Model.open(path))
    ops = [
        op for op in func.operations
        if op.op_type in WEIGHT_OPS and all(v.op is None or v.op.op_type == "const" for v in op.inputs.values())
    ]  # fmt: skip
    ctx = MilContext(builder=None)  # type: ignore[arg-type]
    t = time.perf_counter()
    for op in ops:
        decompress_op(op, ctx.value)
    ours = time.perf_counter() - t
    t = time.perf_counter()
    for op in ops:
        op.materialized_val_inference()
    theirs = time.perf_counter() - t
    kinds = sorted({op.op_type for op in ops})
    print(
        f"decompress {path.name} ({len(ops)} ops: {', '.join(kinds)}): ours {ours:6.2f} s   "
        f"coremltools {theirs:6.2f} s   speed-up {theirs / max(ours, 1e-9):5.1f} x"
    )


if __name__ == "__main__":
    main()
