"""ML Program runtime benchmark: cold/warm load and memory, old reader vs new, side by side.

Usage (the ISNet directory made by shared/tools/build_isnet_coreml.py):

    python benchmarks/bench_mlprogram.py /path/to/isnet [--runs 3] [--fixture PKG] [--inference]
        [--compressed q8.mlpackage ...] [--only-decompress]

For the ISNet ``.mlpackage`` and the fixture package (``fixtures/models/TinySeg.mlpackage``)
it prints, side by side and interleaved (old, new, old, new, ...), medians over ``--runs``:

* **cold load from the model file**: ``Model.open`` (read + parse the spec) and
  ``OnnxBackend.load`` on an empty cache (translate, onnxruntime optimisation and cache
  write, session, the one-prediction probe), each in a fresh ``spawn`` child process;
* **warm load**: ``Model.open`` + ``OnnxBackend.load`` again in that child (cache hit);
* **peak RSS growth** of the cold load (VmHWM at the end minus VmRSS before
  ``Model.open``, after the runtime's own imports), over the package size.

The cold load ends with the backend's probe, one prediction on zeros (a full inference on a
1024x1024 network, whose activations dominate the peak); the time and the peak up to the
probe are printed too.

"old" is the previous reader: ``coremltools.utils.load_spec`` (which imports coremltools),
coremltools' Python MIL loader (``reader="coremltools"``) and a builder holding every
initializer in memory. "new" is what the backend does now: the spec parsed with
coremltools' generated protobuf module alone, the program read from the protobuf view,
weights decoded from a memory map of weight.bin and streamed to the scratch weights file.

``--nn`` adds the NeuralNetwork ``ISNet_1024_1024.mlmodel`` (old: coremltools' spec
loader; new: the generated protobuf module alone; its weights are not streamed, which did
not lower its peak). ``--sides old,new,nostream`` adds the new reader without streaming.
``--sides new,dynheap`` compares with the backend before ``heap.py`` (glibc's malloc
left to its dynamic mmap threshold while the session is created; no trim after the build);
``trimonly`` keeps the dynamic threshold and only trims the heap after the session.
``--inference`` adds the inference time of the translated ISNet vs onnxruntime on
``isnet_fp32.onnx``; ``--compressed`` the numpy decompression of every constexpr op vs
coremltools' ``materialized_val_inference``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore")


def _status(key: str) -> float:
    """MB of a /proc/self/status line (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024


def _use_old_reader() -> None:
    """Patch the runtime back to the previous reader (in the child process only)."""
    from pytest_coreml_quality import model as model_module
    from pytest_coreml_quality.runtime.onnx import backend, mlprogram
    from pytest_coreml_quality.runtime.onnx.builder import GraphBuilder

    def old_load_spec(p: Path, root: Path | None = None) -> Any:
        import coremltools as ct

        return ct.utils.load_spec(str(p))

    def old_translate(model: Any, options: Any, weights: Path | None = None) -> Any:
        builder = GraphBuilder(name=backend._graph_name(model))
        if model.kind == "mlProgram":
            mlprogram.translate_mlprogram(model, builder, reader="coremltools")
        else:
            backend.translator_for(model)(model, builder)
        return builder.build(emulate_fp16=options.precision == "fp16", doc="", release=True)

    model_module._load_spec = old_load_spec
    backend.translate = old_translate


def _child(side: str, package: str, cache: str, queue: "mp.Queue[dict[str, float]]") -> None:
    warnings.filterwarnings("ignore")
    import onnxruntime  # noqa: F401  (the runtime's own import, not part of a load)

    from pytest_coreml_quality.model import Model
    from pytest_coreml_quality.runtime.base import RuntimeOptions
    from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend

    from pytest_coreml_quality.runtime.onnx import backend

    if side == "old":
        _use_old_reader()
    elif side == "nostream":  # the new reader, but every initializer held in memory
        real_translate = backend.translate
        backend.translate = lambda model, options, weights=None: real_translate(model, options)
    elif side == "dynheap":  # the new reader, glibc's malloc left alone (before heap.py)
        import contextlib

        backend.large_blocks_mapped = contextlib.nullcontext
        backend.release_free_memory = lambda: None
    elif side == "trimonly":  # malloc's dynamic threshold kept; only trimmed after the session
        import contextlib

        from pytest_coreml_quality.runtime.onnx.heap import release_free_memory

        @contextlib.contextmanager
        def trimmed() -> Any:
            try:
                yield
            finally:
                release_free_memory()

        backend.large_blocks_mapped = trimmed
    # The probe (one prediction on zeros after a cold build) is timed apart: on a
    # 1024x1024 network it is a full inference, whose activations dominate the peak.
    at_probe: dict[str, float] = {}
    real_probe = backend.probe

    def timed_probe(model: Any, session: Any) -> None:
        at_probe.update(time=time.perf_counter(), hwm=_status("VmHWM:"))
        real_probe(model, session)

    backend.probe = timed_probe
    options = RuntimeOptions(cache_dir=Path(cache))
    before = _status("VmRSS:")
    t = t0 = time.perf_counter()
    model = Model.open(package)
    opened = time.perf_counter() - t
    spec_rss = _status("VmRSS:")
    OnnxBackend(intra_op_threads=2).load(model, options)
    cold = time.perf_counter() - t
    peak = _status("VmHWM:")
    t = time.perf_counter()
    OnnxBackend(intra_op_threads=2).load(Model.open(package), options)
    warm = time.perf_counter() - t
    queue.put({"open": opened, "cold": cold, "cold_no_probe": at_probe["time"] - t0, "warm": warm,
               "growth": peak - before, "growth_no_probe": at_probe["hwm"] - before,
               "growth_after_open": at_probe["hwm"] - spec_rss})


def _measure(side: str, package: Path) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as cache:
        queue: mp.Queue = ctx.Queue()
        child = ctx.Process(target=_child, args=(side, str(package), cache, queue))
        child.start()
        result = queue.get()
        child.join()
    return result


def _package_mb(package: Path) -> float:
    if package.is_file():
        return package.stat().st_size / 1e6
    return sum(f.stat().st_size for f in package.rglob("*") if f.is_file()) / 1e6


def bench_loads(package: Path, runs: int, sides: tuple[str, ...] = ("old", "new")) -> None:
    size = _package_mb(package)
    results: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    loads = []
    for _ in range(runs):
        for side in sides:
            loads.append(os.getloadavg()[0])
            results[side].append(_measure(side, package))
    print(f"\n{package.name} ({size:.1f} MB), {runs} runs each, interleaved; load average {min(loads):.1f}-{max(loads):.1f}")
    # The ratio column: the first side over the second (old/new by default).
    pair = f"{sides[0]}/{sides[1]}" if len(sides) > 1 else ""
    print(f"{'median':34s}" + "".join(f"{side:>10s}" for side in sides) + f"{pair:>16s}")
    rows = [
        ("Model.open (read + parse spec) s", "open"),
        ("cold load from the file s", "cold"),
        ("  of which before the probe s", "cold_no_probe"),
        ("warm load s", "warm"),
        ("peak RSS growth MB", "growth"),
        ("  before the probe MB", "growth_no_probe"),
        ("  before the probe, after open MB", "growth_after_open"),
    ]
    for label, key in rows:
        medians = {side: statistics.median(r[key] for r in results[side]) for side in sides}
        ratio = medians[sides[0]] / max(medians[sides[1]], 1e-9) if pair else float("nan")
        print(f"{label:34s}" + "".join(f"{medians[side]:10.2f}" for side in sides) + f"{ratio:16.2f}")
    for side in sides:
        growth = statistics.median(r["growth"] for r in results[side]) * 1.048576 / size
        loading = statistics.median(r["growth_no_probe"] for r in results[side]) * 1.048576 / size
        print(f"peak RSS growth / package size, {side}: {growth:5.2f} x ({loading:5.2f} x before the probe)")
    print("all runs (cold s, warm s, growth MB): " + "; ".join(
        f"{side} " + ", ".join(f"{r['cold']:.2f}/{r['warm']:.2f}/{r['growth']:.0f}" for r in results[side])
        for side in sides))


def bench_inference(isnet_dir: Path, runs: int) -> None:
    import onnxruntime as ort

    from pytest_coreml_quality.model import Model
    from pytest_coreml_quality.runtime.base import RuntimeOptions
    from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend

    with tempfile.TemporaryDirectory() as cache:
        model = Model.open(isnet_dir / "ISNet_1024_1024.mlpackage")
        ours = OnnxBackend(intra_op_threads=2).load(model, RuntimeOptions(cache_dir=Path(cache))).session
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        reference = ort.InferenceSession(str(isnet_dir / "isnet_fp32.onnx"), so, providers=["CPUExecutionProvider"])
        pixels = (np.random.default_rng(0).random((1, 3, 1024, 1024)) * 255).astype(np.float32)
        ref_feed = {reference.get_inputs()[0].name: pixels / 255.0 - 0.5}
        our_feed = {ours.get_inputs()[0].name: pixels}
        ours.run(None, our_feed)
        reference.run(None, ref_feed)
        t_ours, t_ref = [], []
        for _ in range(runs):
            t = time.perf_counter()
            ours.run(None, our_feed)
            t_ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            reference.run(None, ref_feed)
            t_ref.append(time.perf_counter() - t)
        mo, mr = statistics.median(t_ours), statistics.median(t_ref)
        print(f"\ninference (median of {runs}): translated {mo:6.2f} s   direct ONNX {mr:6.2f} s   ratio {mr / mo:4.2f}")


def _bench_decompression(path: Path) -> None:
    from pytest_coreml_quality.model import Model
    from pytest_coreml_quality.runtime.onnx.mil_ops.registry import MilContext
    from pytest_coreml_quality.runtime.onnx.mil_weights import WEIGHT_OPS, decompress_op
    from pytest_coreml_quality.runtime.onnx.mlprogram import load_main_function_coremltools

    func = load_main_function_coremltools(Model.open(path))
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("isnet_dir", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fixture", type=Path, default=ROOT / "fixtures" / "models" / "TinySeg.mlpackage")
    parser.add_argument("--inference", action="store_true", help="also time inference against isnet_fp32.onnx")
    parser.add_argument("--sides", default="old,new",
                        help="comma-separated: old, new, nostream (new reader, weights held in memory), "
                             "dynheap (new reader, malloc's dynamic threshold kept, no trim)")
    parser.add_argument("--nn", action="store_true",
                        help="also the NeuralNetwork ISNet .mlmodel (old: coremltools load_spec, weights in memory)")
    parser.add_argument("--compressed", type=Path, nargs="*", default=[])
    parser.add_argument("--only-decompress", action="store_true", help="skip load and inference timings")
    args = parser.parse_args()
    if not args.only_decompress:
        print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()}")
        packages = [args.isnet_dir / "ISNet_1024_1024.mlpackage", args.fixture]
        if args.nn:
            packages.append(args.isnet_dir / "ISNet_1024_1024.mlmodel")
        for package in packages:
            bench_loads(package, args.runs, tuple(args.sides.split(",")))
        if args.inference:
            bench_inference(args.isnet_dir, args.runs)
        print(f"load average at end: {os.getloadavg()}")
    for path in args.compressed:
        _bench_decompression(path)


if __name__ == "__main__":
    main()
