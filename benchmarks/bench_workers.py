"""Wall time of plugin runs on 1 and on 2 pytest-xdist workers, side by side.

Each configuration is a real ``pytest`` run of the plugin in a subprocess, interleaved
round after round. Variants and translated models are built once beforehand (cached);
every timed run starts with an empty prediction cache, so each one predicts every image
of its variants. Load items are deselected (they measure loads, not the evaluation).

One variant (the base model alone), the case where workers outnumber the variants:

* ``base, -n 1``: one worker, onnxruntime on every core;
* ``base, -n 2``: two workers, each onnxruntime on ``cores // 2``; the second worker runs
  the ``predict[base]`` helper item and claims chunks of the base's images (.sharing);
* ``base, -n 2, no helpers``: as before the helpers (``-k "not predict"``): one worker
  predicts every image on half the cores, the other has nothing to predict.

Two variants (base + q8), one per worker:

* ``-n 1``; ``-n 2`` (each onnxruntime on its share of the cores; the two variants run on
  different workers, and the q8 worker's drift item, which needs the base model's masks,
  computes the base chunks the other worker has not claimed yet);
* ``-n 2, all cores each``: two workers with ``--coreml-threads=<cores>``, as before the
  per-worker share (the cores oversubscribed).

    python benchmarks/bench_workers.py --images 16 --runs 3 [--cases one|two|both]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from bench_evaluate import golden_set, stand_in_model  # noqa: E402

from pytest_coreml_quality.runtime import available_cores  # noqa: E402


def pytest_run(work: Path, model: Path, dataset: Path, cache: Path, workers: int, variants: str, extra: list[str]) -> float:
    """Seconds of one plugin run with an empty prediction cache; raises if the run fails."""
    shutil.rmtree(cache / "predictions", ignore_errors=True)
    cmd = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", str(workers), "--dist", "loadgroup",
        f"--coreml-model={model}", f"--coreml-dataset={dataset}", f"--coreml-variants={variants}", f"--coreml-cache-dir={cache}",
        "-k", "not load", *extra,
    ]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode not in (0, 1):  # 1: a threshold failed, still a complete run
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="standin", help="a Core ML model with a 1024x1024 image input, or 'standin'")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", default="400x300", help="photo size WxH")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cases", choices=("one", "two", "both"), default="both",
                        help="one variant (helpers before/after), two variants (threads per worker), or both")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_workers_"))
    (work / "conftest.py").write_text("")
    model = stand_in_model(work / "StandIn1024.mlmodel") if args.model == "standin" else Path(args.model)
    size = tuple(int(v) for v in args.size.split("x"))
    golden_set(work / "golden", size, args.images, None)
    cache = work / "cache"
    cores = available_cores()
    # name -> (reference name, workers, variants, extra arguments)
    one = {
        "base, -n 1": ("base, -n 1", 1, "", []),
        "base, -n 2": ("base, -n 1", 2, "", []),
        "base, -n 2, no helpers": ("base, -n 1", 2, "", ["-k", "not load and not predict"]),
    }
    two = {
        "-n 1": ("-n 1", 1, "q8", []),
        "-n 2": ("-n 1", 2, "q8", []),
        "-n 2, all cores each": ("-n 1", 2, "q8", [f"--coreml-threads={cores}"]),
    }
    configs = {**(one if args.cases in ("one", "both") else {}), **(two if args.cases in ("two", "both") else {})}
    pytest_run(work, model, work / "golden", cache, 1, "q8", [])  # builds q8 and the translated models once
    loads = [os.getloadavg()[0]]
    times: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.runs):
        for name, (_, workers, variants, extra) in configs.items():
            times[name].append(pytest_run(work, model, work / "golden", cache, workers, variants, extra))
            print(f"  {name}: {times[name][-1]:.2f} s (load average {os.getloadavg()[0]:.2f})", flush=True)
        loads.append(os.getloadavg()[0])
    print(f"model: {model.name}, {args.images} photos of {args.size}, {cores} cores, {args.runs} interleaved runs, "
          f"load average (1 min) before and after each round: {', '.join(f'{v:.2f}' for v in loads)}")
    print(f"{'configuration':>24} {'median s':>9} {'speed-up':>9}   runs")
    for name, values in times.items():
        median = statistics.median(values)
        reference = statistics.median(times[configs[name][0]])
        print(f"{name:>24} {median:9.2f} {reference / median:9.2f}   {', '.join(f'{v:.2f}' for v in values)}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
