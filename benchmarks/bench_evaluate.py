"""Evaluation wall time against pure inference time, at 1-megapixel photos and at 400x300.

For one model and N photos of each size, measured side by side in one run, interleaved
(round after round, so the machine's load affects every column alike):

* ``inference``: ``predictor.predict`` alone on inputs prepared beforehand (the floor);
* ``evaluation``: what the plugin does for one variant, cache disabled: a fresh
  ``Evaluator``, its predictions (prepare, predict, mask, with preparation and scoring
  overlapped with the model) and its ground-truth metrics (``per_image`` and ``summary``);
* ``plain loop``: the same work one step after the other (the loop before the overlap),
  for comparison;
* ``further variant``: the evaluation of another variant by the same evaluator, as every
  variant after the first of a run runs (ground truths prepared and photos resized once per
  run, not per variant);
* ``load+inference`` vs ``load+evaluation``: a run's first variant as the plugin runs it,
  the model loaded from its cached translation on both sides; the plugin's evaluator
  loads the model itself and prepares the ground truths while it loads;
* the ratios evaluation / inference (goal <= 1.03) and plain loop / inference;
* how many cores the process keeps busy during pure inference (the room left for the rest).

The model is the real ISNet (``--model /work/isnet/ISNet_1024_1024.mlmodel``, the default
when it exists) or a 1024x1024 conv stand-in built here (cheaper than ISNet, so its
ratio is pessimistic). Photos are generated, or taken from ``--photos DIR`` (images/ and
masks/, resized to each size).

    python benchmarks/bench_evaluate.py --images 8 --runs 3
    python benchmarks/bench_evaluate.py --model standin --images 8 --runs 5
    python benchmarks/bench_evaluate.py --images 4 --profile   # CPU of each stage, then exit

``--profile`` runs one evaluation per size (a run's first variant, then a further one) and
prints the CPU time of each stage of the evaluation's own work, measured on the thread that
ran it (``time.thread_time``; nested stages are counted once, in the innermost stage).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore")

from pytest_coreml_quality.dataset import Dataset  # noqa: E402
from pytest_coreml_quality.evaluate import Evaluator  # noqa: E402
from pytest_coreml_quality.metrics.scores import score_mask, summarize  # noqa: E402
from pytest_coreml_quality.model import Model  # noqa: E402
from pytest_coreml_quality.preprocess import PreprocessSettings, Preprocessor  # noqa: E402
from pytest_coreml_quality.runtime import intra_op_threads  # noqa: E402
from pytest_coreml_quality.runtime.base import RuntimeOptions  # noqa: E402
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend  # noqa: E402

ISNET = Path("/work/isnet/ISNet_1024_1024.mlmodel")
SIDE = 1024


def stand_in_model(path: Path) -> Path:
    """A 1024x1024 image-input conv net 3 -> 32 -> 32 -> 1 (3x3, ReLU, sigmoid): a probability mask."""
    import coremltools as ct
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    rng = np.random.default_rng(0)
    builder = NeuralNetworkBuilder([("image", datatypes.Array(3, SIDE, SIDE))], [("mask", datatypes.Array(1, SIDE, SIDE))])
    builder.set_pre_processing_parameters(image_input_names=["image"], image_scale=1 / 255.0)
    channels, prev = [3, 32, 32, 1], "image"
    for i, (cin, cout) in enumerate(zip(channels, channels[1:])):
        w = (rng.standard_normal((3, 3, cin, cout)) / np.sqrt(cin * 9)).astype(np.float32)
        builder.add_convolution(f"conv{i}", cin, cout, 3, 3, 1, 1, "same", 1, w, np.zeros(cout, np.float32), True,
                                input_name=prev, output_name=f"c{i}")
        last = cout == 1
        builder.add_activation(f"act{i}", "SIGMOID" if last else "RELU", f"c{i}", "mask" if last else f"a{i}")
        prev = f"a{i}"
    ct.utils.save_spec(builder.spec, str(path))
    return path


def golden_set(root: Path, size: tuple[int, int], count: int, photos: Path | None) -> Dataset:
    """``count`` photo/mask pairs of ``size``: resized from ``photos`` or generated (smooth blobs)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    sources = sorted((photos / "images").iterdir())[:count] if photos else []
    rng = np.random.default_rng(1)
    for i in range(count):
        if sources:
            src = sources[i % len(sources)]
            image = Image.open(src).convert("RGB").resize(size, Image.Resampling.LANCZOS)
            mask_src = next((photos / "masks").glob(src.stem + ".*"))  # type: ignore[operator]
            mask = Image.open(mask_src).convert("L").resize(size, Image.Resampling.BILINEAR)
        else:
            w, h = size
            yy, xx = np.mgrid[0:h, 0:w]
            cx, cy, r = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h, rng.uniform(0.15, 0.3) * min(w, h)
            soft = np.clip(1.5 - np.hypot(xx - cx, yy - cy) / r, 0, 1)
            noise = rng.integers(0, 60, (h, w, 3))
            image = Image.fromarray(np.clip(soft[..., None] * 180 + noise, 0, 255).astype(np.uint8), "RGB")
            mask = Image.fromarray((soft * 255).astype(np.uint8), "L")
        image.save(root / "images" / f"p{i:03d}.png")
        mask.save(root / "masks" / f"p{i:03d}.png")
    return Dataset.open(root)


def pure_inference(predictor, inputs: list) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the whole process) of the model alone on prepared inputs."""
    t0, c0 = time.perf_counter(), time.process_time()
    for x in inputs:
        predictor.predict(x)
    return time.perf_counter() - t0, time.process_time() - c0


def evaluation(dataset: Dataset, predictor) -> tuple[float, float]:
    """One variant's evaluation as the plugin runs it (cache disabled): predictions and metrics."""
    t0, c0 = time.perf_counter(), time.process_time()
    result = Evaluator(dataset, PreprocessSettings(), cache_dir=None).evaluate(predictor)
    result.per_image  # noqa: B018
    result.summary  # noqa: B018
    return time.perf_counter() - t0, time.process_time() - c0


def warm_evaluator(dataset: Dataset, predictor) -> Evaluator:
    """An evaluator that has evaluated one variant: its ground truths are prepared and its
    photos resized, as every variant after the first of a run finds them."""
    evaluator = Evaluator(dataset, PreprocessSettings(), cache_dir=None)
    evaluator.evaluate(predictor, backend_id="first").summary  # noqa: B018
    return evaluator


_further = iter(range(1_000_000))


def further_variant(evaluator: Evaluator, predictor) -> tuple[float, float]:
    """One variant's evaluation after the run's first (same evaluator, a new variant key): the
    plugin prepares each ground truth, and resizes each photo, once per run, not per variant."""
    t0, c0 = time.perf_counter(), time.process_time()
    result = evaluator.evaluate(predictor, backend_id=f"further-{next(_further)}")
    result.per_image  # noqa: B018
    result.summary  # noqa: B018
    return time.perf_counter() - t0, time.process_time() - c0


def load_and_infer(backend: OnnxBackend, model: Model, options: RuntimeOptions, inputs: list) -> tuple[float, float]:
    """A run's first variant without the evaluation: load the model (translation cached), then infer."""
    t0, c0 = time.perf_counter(), time.process_time()
    predictor = backend.load(model, options)
    for x in inputs:
        predictor.predict(x)
    return time.perf_counter() - t0, time.process_time() - c0


def load_and_evaluate(dataset: Dataset, backend: OnnxBackend, model: Model, options: RuntimeOptions) -> tuple[float, float]:
    """A run's first variant as the plugin evaluates it: a fresh evaluator loads the model itself
    (preparing the ground truths meanwhile), then predicts and scores."""
    t0, c0 = time.perf_counter(), time.process_time()
    result = Evaluator(dataset, PreprocessSettings(), cache_dir=None).evaluate(backend=backend, model=model, options=options)
    result.per_image  # noqa: B018
    result.summary  # noqa: B018
    return time.perf_counter() - t0, time.process_time() - c0


def plain_loop(dataset: Dataset, predictor) -> tuple[float, float]:
    """The same work, one step after the other (the evaluation loop before the overlap)."""
    t0, c0 = time.perf_counter(), time.process_time()
    evaluator = Evaluator(dataset, PreprocessSettings(), cache_dir=None)
    pre = Preprocessor(predictor.model, evaluator.settings)
    masks = {s.id: pre.mask_from(predictor.predict(pre.prepare(s.image)), s.size, image=s.id) for s in dataset}
    scores = [score_mask(masks[s.id], evaluator.reference(s), threshold=evaluator.threshold) for s in dataset]
    summarize(scores, [e.weight for e in dataset.entries])
    return time.perf_counter() - t0, time.process_time() - c0


class StageProfile:
    """CPU seconds per stage, per thread, exclusive of nested stages (see ``--profile``)."""

    def __init__(self) -> None:
        self.cpu: dict[tuple[str, str], float] = defaultdict(float)
        self.calls: dict[tuple[str, str], int] = defaultdict(int)
        self._local = threading.local()
        self._patches: list[tuple[object, str, object]] = []

    def wrap(self, owner: object, attr: str, stage: str) -> None:
        """Time every call of ``owner.attr`` as ``stage`` (until :meth:`undo`)."""
        original = getattr(owner, attr)
        profile = self

        def timed(*args, **kwargs):
            stack = profile._local.__dict__.setdefault("stack", [])
            stack.append(0.0)  # CPU of nested stages, subtracted from this one
            t0 = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                spent = time.thread_time() - t0
                nested = stack.pop()
                key = (threading.current_thread().name.split("_")[0], stage)
                profile.cpu[key] += spent - nested
                profile.calls[key] += 1
                if stack:
                    stack[-1] += spent

        self._patches.append((owner, attr, original))
        setattr(owner, attr, timed)

    def undo(self) -> None:
        for owner, attr, original in reversed(self._patches):
            setattr(owner, attr, original)
        self._patches.clear()

    def report(self, title: str, images: int, wall: float, cpu: float) -> None:
        print(f"{title}: wall {wall:.3f} s, process CPU {cpu:.3f} s; per image, CPU ms of each stage (thread):")
        for (thread, stage), seconds in sorted(self.cpu.items(), key=lambda kv: -kv[1]):
            print(f"  {seconds / images * 1000:9.1f}  {stage:<44} {thread} ({self.calls[(thread, stage)]} calls)")


def profile_stages(sets: dict, predictor) -> None:
    """One first-variant and one further-variant evaluation per size, with the CPU of each stage."""
    from pytest_coreml_quality import evaluate as evaluate_module
    from pytest_coreml_quality.metrics import reference, scores, structure
    from pytest_coreml_quality.preprocess import Preprocessor as Pre

    stages: list[tuple[object, str, str]] = [
        (predictor, "predict", "inference (calling thread only)"),
        (Pre, "prepare", "prepare input (convert)"),
        (evaluate_module.Evaluator, "resized", "resize photo to the input (kept per run)"),
        (Pre, "mask_from", "post-process (mask, resize to photo)"),
        (evaluate_module, "score_mask", "score_mask: other metrics"),
        (reference.Reference, "_distance_transforms", "ground truth: distance transforms"),
        (reference.Reference, "__init__", "ground truth: float/binary copies"),
        (structure, "weighted_fmeasure", "weighted F-measure (per prediction)"),
        (structure, "s_measure", "S-measure"),
        (scores.core, "counts_at_levels", "F/E curves: level counts"),
    ]
    for size, ds in sets.items():
        warm = warm_evaluator(ds, predictor)
        for title, run in (("first variant", lambda: evaluation(ds, predictor)),
                           ("further variant", lambda: further_variant(warm, predictor))):
            profile = StageProfile()
            for owner, attr, stage in stages:
                profile.wrap(owner, attr, stage)
            try:
                wall, cpu = run()
            finally:
                profile.undo()
            profile.report(f"{size[0]}x{size[1]}, {title}", len(ds), wall, cpu)


_CPU = {"inference": "cpu_inf", "further": "cpu_further", "load_inf": "cpu_load_inf", "load_eval": "cpu_load_eval"}


def print_ratios(rows: dict, base: str, measured: str, note: str) -> None:
    """Per photo size: medians of ``base`` and ``measured`` (wall seconds), their ratio and the CPU ratio."""
    print(f"{'photo size':>12} {base + ' s':>17} {measured + ' s':>17} {'/':>6} {'CPU /':>6}   {note}")
    for size, r in rows.items():
        b, m = statistics.median(r[base]), statistics.median(r[measured])
        cb, cm = statistics.median(r[_CPU[base]]), statistics.median(r[_CPU[measured]])
        print(f"{size[0]:>6}x{size[1]:<5} {b:17.3f} {m:17.3f} {m / b:6.3f} {cm / cb:6.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ISNET) if ISNET.exists() else "standin",
                        help="a Core ML model with a 1024x1024 image input, or 'standin' (default: ISNet if present)")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="1155x866,400x300", help="photo sizes WxH (1155x866 is 1.0 MP)")
    parser.add_argument("--photos", default=None, help="a golden set (images/, masks/) to resize instead of generated photos")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: the plugin's)")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "bench_evaluate_cache"),
                        help="where the translated model is kept between runs")
    parser.add_argument("--profile", action="store_true", help="print the CPU of each evaluation stage per image, then exit")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_evaluate_"))
    model_path = stand_in_model(work / "StandIn1024.mlmodel") if args.model == "standin" else Path(args.model)
    threads = intra_op_threads(args.threads)
    backend, options = OnnxBackend(intra_op_threads=threads), RuntimeOptions(cache_dir=Path(args.cache))
    predictor = backend.load(Model.open(model_path), options)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    sets = {size: golden_set(work / f"{size[0]}x{size[1]}", size, args.images, Path(args.photos) if args.photos else None)
            for size in sizes}
    pre = Preprocessor(predictor.model, PreprocessSettings())
    inputs = {size: [pre.prepare(s.image) for s in ds] for size, ds in sets.items()}
    for size, ds in sets.items():  # warm up: lazy imports, onnxruntime's first-run allocations
        evaluation(ds, predictor)
    if args.profile:
        print(f"load average {os.getloadavg()[0]:.2f}, intra-op threads {threads}")
        profile_stages(sets, predictor)
        return
    warm = {size: warm_evaluator(ds, predictor) for size, ds in sets.items()}

    rows: dict[tuple[int, int], dict[str, list[float]]] = {
        s: {k: [] for k in ("inference", "evaluation", "plain", "further", "busy", "cpu_inf", "cpu_eval", "cpu_plain", "cpu_further",
                            "load_inf", "load_eval", "cpu_load_inf", "cpu_load_eval")} for s in sizes
    }
    for _ in range(args.runs):
        for size in sizes:
            r = rows[size]
            for key, measure in (("inference", lambda: pure_inference(predictor, inputs[size])),
                                 ("evaluation", lambda: evaluation(sets[size], predictor)),
                                 ("plain", lambda: plain_loop(sets[size], predictor)),
                                 ("further", lambda: further_variant(warm[size], predictor)),
                                 ("load_inf", lambda: load_and_infer(backend, predictor.model, options, inputs[size])),
                                 ("load_eval", lambda: load_and_evaluate(sets[size], backend, predictor.model, options))):
                wall, cpu = measure()
                r[key].append(wall)
                r[{**_CPU, "evaluation": "cpu_eval", "plain": "cpu_plain"}[key]].append(cpu)
            r["busy"].append(r["cpu_inf"][-1] / r["inference"][-1])

    print(f"model: {model_path.name}, {args.images} images per size, {args.runs} interleaved runs, "
          f"intra-op threads {threads}, cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    print(f"{'photo size':>12} {'inference s':>12} {'evaluation s':>13} {'plain loop s':>13} "
          f"{'eval/inf':>9} {'plain/inf':>10} {'busy cores':>11}   (medians; eval/inf per run)")
    for size in sizes:
        r = rows[size]
        inf, ev, pl = (statistics.median(r[k]) for k in ("inference", "evaluation", "plain"))
        per_run = ", ".join(f"{e / i:.3f}" for e, i in zip(r["evaluation"], r["inference"]))
        busy = statistics.median(r["busy"])
        print(f"{size[0]:>6}x{size[1]:<5} {inf:12.3f} {ev:13.3f} {pl:13.3f} {ev / inf:9.3f} {pl / inf:10.3f} "
              f"{busy:11.2f}   [{per_run}]")
    print(f"{'photo size':>12} {'CPU s: inference':>17} {'evaluation':>11} {'plain loop':>11} {'eval/inf':>9} {'plain/inf':>10}")
    for size in sizes:
        r = rows[size]
        ci, ce, cp = (statistics.median(r[k]) for k in ("cpu_inf", "cpu_eval", "cpu_plain"))
        print(f"{size[0]:>6}x{size[1]:<5} {ci:17.3f} {ce:11.3f} {cp:11.3f} {ce / ci:9.3f} {cp / ci:10.3f}")
    print_ratios(rows, "inference", "further", "(same evaluator: ground truths prepared, photos resized, "
                 "as for every variant after a run's first)")
    print_ratios(rows, "load_inf", "load_eval", "(a run's first variant as the plugin runs it: the model loaded from "
                 "its cached translation, the ground truths prepared during the load)")
    print("CPU s: the work itself (all threads), which the load of the machine does not inflate as it does wall time.")
    print("busy cores: CPU seconds / wall seconds of the process during pure inference; the overlap can only hide\n"
          "work in what is left of the cores it may use (intra-op threads) and what the machine leaves idle.")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
