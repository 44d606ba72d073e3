"""Speed and faithfulness of the onnx runtime on an ISNet-sized NeuralNetwork model.

Prints, side by side in one run:

* inference time of the translated graph (``predict``: feeds, session, 8-bit image output)
  vs onnxruntime on the reference ONNX exported from PyTorch (``session.run`` on prepared
  feeds), alternating runs, both sessions with the same options and the same intra-op
  thread count (printed), and their ratio;
* cold and warm load of the ``.mlmodel`` (and of the ``.mlpackage`` with ``--package``), each
  measured twice: through the plugin's own path (``loadtime.time_plainly``, what the
  ``load-cold`` / ``load-warm`` items and ``LoadTimes`` record) and step by step here (read +
  parse, hash, translate + optimise + write, session), so the two can be compared; the
  zero-input probe a cold load runs after the clock is timed on its own line;
* peak memory during a cold load from the file (in a fresh subprocess), as a multiple of the
  model size;
* with ``--profile``: onnxruntime's profiler on both graphs, time per op type side by side and
  the node counts of both optimised graphs (saved next to the cache);
* with ``--verify``: max abs difference of the mask (0..1) against the reference ONNX, for
  the model and for its 8-bit / 4-bit ``quantize_weights`` variants (built once, cached).

usage: python benchmarks/bench_runtime.py [--isnet DIR] [--runs N] [--threads N] [--profile]
                                          [--package] [--cold-rounds N] [--also GRAPH ...] [--no-loads]
                                          [--verify]

DIR holds ``ISNet_1024_1024.mlmodel`` and ``isnet_fp32.onnx`` as written by
``build_isnet_coreml.py`` (default: /work/isnet).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
warnings.filterwarnings("ignore")

from pytest_coreml_quality.loadtime import time_plainly  # noqa: E402
from pytest_coreml_quality.model import Model, forget_content_hash  # noqa: E402
from pytest_coreml_quality.runtime.base import RuntimeOptions  # noqa: E402
from pytest_coreml_quality.runtime.onnx import backend as onnx_backend  # noqa: E402
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend  # noqa: E402


def _session(path: Path, threads: int, profile_prefix: str | None = None, optimised: Path | None = None) -> Any:
    """A session with exactly the options the onnx backend gives its own (same threads)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    if optimised is not None:
        so.optimized_model_filepath = str(optimised)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _photo(size: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)


def _peak_cold_load(model_path: Path, cache: Path, threads: int) -> dict[str, float]:
    """A cold load from the file in a fresh process: resident memory after the imports and at peak (MB)."""
    code = f"""
import sys, json, types, warnings
from pathlib import Path
warnings.filterwarnings("ignore")
sys.path.insert(0, {str(REPO)!r})
import coremltools, onnx, onnxruntime
from pytest_coreml_quality.runtime.base import RuntimeOptions
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend
def status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key)) / 1024
before = status("VmRSS:")
# load_cold uses only the path: nothing is opened before the measured load (empty cache dir).
OnnxBackend(intra_op_threads={threads}).load_cold(types.SimpleNamespace(path=Path({str(model_path)!r})),
                                                 RuntimeOptions(cache_dir=Path({str(cache)!r})))
print(json.dumps({{"before_mb": before, "peak_mb": status("VmHWM:")}}))  # VmHWM starts afresh at exec
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cold_steps(backend: OnnxBackend, path: Path, opts: RuntimeOptions) -> dict[str, float]:
    """One cold load from the file, step by step (what ``OnnxBackend.load_cold`` does), then the probe."""
    steps: dict[str, float] = {}

    def timed(name: str, step: Any) -> Any:
        t = time.perf_counter()
        value = step()
        steps[name] = time.perf_counter() - t
        return value

    backend.evict(Model.open(path), opts)
    forget_content_hash(path)
    model = timed("read + parse spec (Model.open)", lambda: Model.open(path))
    entry = timed("hash (cache key)", lambda: backend.cache_path(model, opts))
    timed("translate + optimise + write", lambda: backend._build(model, opts, entry))
    session = timed("session", lambda: backend._session(entry / onnx_backend.GRAPH_FILE))
    steps["total"] = sum(steps.values())
    timed("probe", lambda: onnx_backend.probe(model, session))
    return steps


def _cold_and_warm(backend: OnnxBackend, path: Path, opts: RuntimeOptions, rounds: int) -> None:
    """The plugin's cold/warm figures (loadtime.time_plainly) beside this script's step-by-step ones."""
    model = Model.open(path)
    plugin_cold = time_plainly(backend, model, opts, "cold", rounds)
    plugin_warm = time_plainly(backend, model, opts, "warm", rounds)
    runs = [_cold_steps(backend, path, opts) for _ in range(rounds)]
    own = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    warm = []
    for _ in range(max(rounds, 3)):
        t = time.perf_counter()
        backend.load(model, opts)
        warm.append(time.perf_counter() - t)
    print(f"{model.name} ({model.kind}, {model.size_mb:.0f} MB), median of {rounds} round(s):")
    print(f"  {'cold load':<34}{'plugin path':>12}{'step by step':>14}")
    print(f"  {'  total (from the file)':<34}{plugin_cold:>12.2f}{own['total']:>14.2f} s")
    for name in ("read + parse spec (Model.open)", "hash (cache key)", "translate + optimise + write", "session"):
        print(f"  {'    ' + name:<34}{'':>12}{own[name]:>14.2f} s")
    print(f"  {'  probe after the clock (1 run)':<34}{'':>12}{own['probe']:>14.2f} s   (not in the cold figure)")
    print(f"  {'warm load (cached graph)':<34}{plugin_warm:>12.2f}{statistics.median(warm):>14.2f} s")


def _op_times(profile: str) -> tuple[dict[str, float], Counter[str], int]:
    """Kernel milliseconds and kernel calls per op type in an onnxruntime profile, and the
    number of runs counted: the first run (arena growth, first-touch pages) is left out."""
    with open(profile) as f:
        events = json.load(f)
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    first_end = runs[0][1] if runs else -1
    ms: dict[str, float] = defaultdict(float)
    calls: Counter[str] = Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] > first_end:
            ms[e["args"]["op_name"]] += e["dur"] / 1e3
            calls[e["args"]["op_name"]] += 1
    return ms, calls, max(len(runs) - 1, 1)


def _graph_ops(path: Path) -> Counter[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return Counter(f"{n.domain.rsplit('.', 1)[-1]}:{n.op_type}" if n.domain else n.op_type for n in graph.node)


def _profile(graph: Path, reference: Path, feeds: dict[str, np.ndarray], feeds_ref: dict[str, np.ndarray],
             threads: int, workdir: Path, runs: int) -> None:
    """Per-op-type kernel time of both graphs (onnxruntime's profiler), side by side, and node counts."""
    tables, counts = [], []
    for tag, path, f in (("ours", graph, feeds), ("ref", reference, feeds_ref)):
        optimised = workdir / f"optimised_{tag}.onnx"
        session = _session(path, threads, str(workdir / f"profile_{tag}"), optimised)
        for _ in range(runs + 1):
            session.run(None, f)
        ms, calls, n = _op_times(session.end_profiling())
        tables.append(({k: v / n for k, v in ms.items()}, {k: v // n for k, v in calls.items()}))
        counts.append(_graph_ops(optimised))
    (ours_ms, ours_n), (ref_ms, ref_n) = tables
    print(f"profile: kernel time per op type (ms per run, mean of {runs} runs after a first one; n = kernels "
          f"per run), {threads} intra-op threads in both sessions:")
    print(f"  {'op type':<22}{'ours ms':>10}{'n':>5}{'ref ms':>10}{'n':>5}")
    for op in sorted(set(ours_ms) | set(ref_ms), key=lambda k: -(ours_ms.get(k, 0.0) + ref_ms.get(k, 0.0))):
        print(f"  {op:<22}{ours_ms.get(op, 0.0):>10.1f}{ours_n.get(op, 0):>5}{ref_ms.get(op, 0.0):>10.1f}"
              f"{ref_n.get(op, 0):>5}")
    print(f"  {'total':<22}{sum(ours_ms.values()):>10.1f}{'':>5}{sum(ref_ms.values()):>10.1f}")
    print(f"  nodes after optimisation ({workdir}/optimised_ours.onnx, optimised_ref.onnx):")
    for op in sorted(set(counts[0]) | set(counts[1])):
        print(f"    {op:<28}{counts[0].get(op, 0):>5}{counts[1].get(op, 0):>5}")


def _mask(predictor, photo: np.ndarray) -> np.ndarray:
    """The model's raw float mask (before the PIL rounding) scaled to 0..1."""
    from PIL import Image

    from pytest_coreml_quality.runtime.onnx.io import to_feeds

    feeds = to_feeds({predictor.model.inputs[0].name: Image.fromarray(photo)}, predictor.model, predictor._inputs)
    out = predictor.session.run(None, feeds)[0]
    return out.reshape(out.shape[-2:]) / 255.0


def _reference_mask(session, photo: np.ndarray) -> np.ndarray:
    x = photo.astype(np.float32).transpose(2, 0, 1)[None] * np.float32(1 / 255.0) - np.float32(0.5)
    out = session.run(None, {session.get_inputs()[0].name: x})[0]
    return out.reshape(out.shape[-2:])


def _quantized(path: Path, nbits: int, workdir: Path) -> Path:
    target = workdir / f"{path.stem}_q{nbits}.mlmodel"
    if not target.exists():
        import coremltools as ct
        from coremltools.models.neural_network import quantization_utils as qu

        t = time.perf_counter()
        spec = qu.quantize_weights(ct.models.MLModel(str(path), skip_model_load=True), nbits, "linear")
        spec = spec.get_spec() if hasattr(spec, "get_spec") else spec
        ct.utils.save_spec(spec, str(target))
        print(f"  (built {target.name} with coremltools in {time.perf_counter() - t:.0f} s)")
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--isnet", type=Path, default=Path("/work/isnet"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None,
                    help="intra-op threads of both sessions (default: the number of cores)")
    ap.add_argument("--profile", action="store_true", help="per-op-type time of both graphs, side by side")
    ap.add_argument("--profile-runs", type=int, default=2)
    ap.add_argument("--package", action="store_true", help="also the cold/warm loads of ISNet_1024_1024.mlpackage")
    ap.add_argument("--cold-rounds", type=int, default=2)
    ap.add_argument("--no-loads", action="store_true", help="inference only: no load times, no memory")
    ap.add_argument("--also", type=Path, nargs="*", default=[],
                    help="more ONNX graphs taking the translated graph's inputs (e.g. an older translator's cache "
                         "entry model.onnx), timed in the same interleaved loop")
    ap.add_argument("--verify", action="store_true")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bench-runtime")
    args = ap.parse_args()
    mlmodel = args.isnet / "ISNet_1024_1024.mlmodel"
    reference = args.isnet / "isnet_fp32.onnx"
    if not (mlmodel.exists() and reference.exists()):
        sys.exit(f"{args.isnet} lacks ISNet_1024_1024.mlmodel / isnet_fp32.onnx: run build_isnet_coreml.py first")
    args.workdir.mkdir(parents=True, exist_ok=True)
    cache = args.workdir / "cache"
    # One explicit count for both sessions: onnxruntime's default differs between builds and
    # machines, and a comparison is only fair when both graphs get the same cores.
    threads = args.threads or os.cpu_count() or 1
    backend = OnnxBackend(intra_op_threads=threads)
    opts = RuntimeOptions(cache_dir=cache)

    import coremltools  # noqa: F401  - its import (seconds, it pulls in torch) is not part of a load
    import onnxruntime  # noqa: F401

    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    model = Model.open(mlmodel)
    print(f"model: {model.summary()}")
    print(f"cores: {os.cpu_count()}, intra-op threads: {threads} in both sessions, runs: {args.runs}")
    predictor = backend.load(model, opts)
    ref_session = _session(reference, threads)
    photo = _photo(1024)
    from PIL import Image

    image = Image.fromarray(photo)
    feeds_ref = {ref_session.get_inputs()[0].name: photo.astype(np.float32).transpose(2, 0, 1)[None] / 255 - 0.5}
    from pytest_coreml_quality.runtime.onnx.io import to_feeds

    feeds = to_feeds({model.inputs[0].name: image}, model, predictor._inputs)
    others = [(path, _session(path, threads)) for path in args.also]
    predictor.predict({model.inputs[0].name: image})  # warm-up all
    ref_session.run(None, feeds_ref)
    for _, session in others:
        session.run(None, feeds)
    # Each sample: (wall seconds, CPU seconds of this process). On a loaded machine the CPU time
    # is the steadier figure: with one intra-op thread it is the work itself, whatever the
    # share of the cores the process got (with more threads it includes their spin-waiting).
    runs: dict[str, list[tuple[float, float]]] = {"ours": [], "ref": []}
    runs.update({str(path): [] for path, _ in others})

    def timed(key: str, step: Any) -> None:
        t, c = time.perf_counter(), time.process_time()
        step()
        runs[key].append((time.perf_counter() - t, time.process_time() - c))

    for _ in range(args.runs):  # alternate so machine load affects all alike
        timed("ours", lambda: predictor.predict({model.inputs[0].name: image}))
        timed("ref", lambda: ref_session.run(None, feeds_ref))
        for path, session in others:
            timed(str(path), lambda: session.run(None, feeds))  # noqa: B023 - called at once

    def med(key: str, i: int) -> float:
        return statistics.median(r[i] for r in runs[key])

    def best(key: str, i: int) -> float:
        return min(r[i] for r in runs[key])

    print(f"{'inference (s/image)':<34}{'translated':>12}{'reference':>12}{'ratio ref/ours':>16}")
    for label, f, i, goal in (("  median", med, 0, "   (goal >= 1.0)"), ("  best of runs", best, 0, ""),
                              ("  CPU time, median", med, 1, ""), ("  CPU time, best", best, 1, "")):
        print(f"{label:<34}{f('ours', i):>12.2f}{f('ref', i):>12.2f}{f('ref', i) / f('ours', i):>16.2f}{goal}")
    print("  (translated: predict() with feeds and 8-bit output; reference: session.run on prepared feeds)")
    for path, _ in others:
        key = str(path)
        print(f"  --also {path}: median {med(key, 0):.2f} s (CPU {med(key, 1):.2f} s), ratio it/translated "
              f"{med(key, 0) / med('ours', 0):.2f} (CPU {med(key, 1) / med('ours', 1):.2f}; session.run on the "
              f"translated graph's feeds)")
    if args.profile:
        _profile(predictor.graph_path, reference, feeds, feeds_ref, threads, args.workdir, args.profile_runs)
    del predictor

    if args.no_loads:
        return
    for path in [mlmodel] + ([args.isnet / "ISNet_1024_1024.mlpackage"] if args.package else []):
        _cold_and_warm(backend, path, opts, args.cold_rounds)
    with tempfile.TemporaryDirectory(dir=args.workdir) as empty_cache:
        mem = _peak_cold_load(mlmodel, Path(empty_cache), threads)
    size_mb = model.size_bytes / 1e6
    extra = mem["peak_mb"] - mem["before_mb"]
    print(f"{'cold load peak RSS (from the file)':<34}{mem['peak_mb']:>12.0f} MB (after imports: "
          f"{mem['before_mb']:.0f} MB, +{extra:.0f} MB = {extra / size_mb:.2f}x model size {size_mb:.0f} MB)")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    if args.verify:
        print("faithfulness (max abs diff of the 0..1 mask vs isnet_fp32.onnx, 2 photos):")
        variants = [("fp32 .mlmodel", mlmodel)]
        variants += [(f"q{n} linear .mlmodel", _quantized(mlmodel, n, args.workdir)) for n in (8, 4)]
        package = args.isnet / "ISNet_1024_1024.mlpackage"
        if package.exists():
            variants.append(("fp32 .mlpackage", package))
        for label, path in variants:
            try:
                m = model if path == mlmodel else Model.open(path)
                p = backend.load(m, opts)
                diffs = [float(np.abs(_mask(p, _photo(1024, s)) - _reference_mask(ref_session, _photo(1024, s))).max())
                         for s in (1, 2)]
                print(f"  {label:<28}{max(diffs):.2e}")
            except Exception as exc:  # report and go on: one variant must not hide the others
                print(f"  {label:<28}not run: {type(exc).__name__}: {str(exc)[:160]}")


if __name__ == "__main__":
    main()
