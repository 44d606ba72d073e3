"""Wall time of a 2-variant run (base + q8) on 1 and on 2 pytest-xdist workers, side by side.

Each configuration is a real ``pytest`` run of the plugin in a subprocess, interleaved
round after round. Variants and translated models are built once beforehand (cached);
every timed run starts with an empty prediction cache, so each one predicts every image
of both variants. Load items are deselected (they measure loads, not the evaluation).

* ``-n 1``: one worker, onnxruntime on every core;
* ``-n 2``: two workers, each onnxruntime on its share of the cores (``cores // 2``);
  the two variants run on different workers, and the q8 worker's drift item, which needs
  the base model's masks, computes the base chunks the other worker has not claimed yet;
* ``-n 2, all cores each``: two workers with ``--coreml-threads=<cores>``, as before the
  per-worker share (the cores oversubscribed).

    python benchmarks/bench_workers.py --images 16 --runs 3
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


def pytest_run(work: Path, model: Path, dataset: Path, cache: Path, workers: int, extra: list[str]) -> float:
    """Seconds of one plugin run with an empty prediction cache; raises if the run fails."""
    shutil.rmtree(cache / "predictions", ignore_errors=True)
    cmd = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", str(workers), "--dist", "loadgroup",
        f"--coreml-model={model}", f"--coreml-dataset={dataset}", "--coreml-variants=q8", f"--coreml-cache-dir={cache}",
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
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_workers_"))
    (work / "conftest.py").write_text("")
    model = stand_in_model(work / "StandIn1024.mlmodel") if args.model == "standin" else Path(args.model)
    size = tuple(int(v) for v in args.size.split("x"))
    golden_set(work / "golden", size, args.images, None)
    cache = work / "cache"
    cores = available_cores()
    configs = {
        "-n 1": (1, []),
        "-n 2": (2, []),
        "-n 2, all cores each": (2, [f"--coreml-threads={cores}"]),
    }
    pytest_run(work, model, work / "golden", cache, 1, [])  # builds q8 and the translated models once
    times: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.runs):
        for name, (workers, extra) in configs.items():
            times[name].append(pytest_run(work, model, work / "golden", cache, workers, extra))
    print(f"model: {model.name}, {args.images} photos of {args.size}, variants base + q8, {cores} cores, "
          f"{args.runs} interleaved runs, load average {os.getloadavg()[0]:.2f}")
    reference = statistics.median(times["-n 1"])
    print(f"{'configuration':>24} {'median s':>9} {'speed-up':>9}   runs")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:>24} {median:9.2f} {reference / median:9.2f}   {', '.join(f'{v:.2f}' for v in values)}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
