"""Metric computation time against the inference time of a 1024x1024 model, over a golden set.

Both are measured side by side in one run, image by image, so the machine's load
affects both alike; the figure that matters is the ratio. The inference is an ONNX
graph with a 1x3x1024x1024 input run by onnxruntime: the real ISNet export if given
(``--onnx isnet_fp32.onnx``, see ../shared/tools), else a random-weight conv net
stand-in (cheaper than ISNet, so the ratio it gives is pessimistic).

    python benchmarks/bench_metrics.py --dataset fixtures/golden --onnx /path/to/isnet_fp32.onnx --images 8

Measured per image, as the evaluator does it:

* ``inference``: preprocessing (LANCZOS resize to 1024x1024) + ``session.run`` +
  postprocessing (bilinear resize back to the photo's size);
* ``prepare``: the one-off preparation (distance transform, ...) of the ground truth and
  of the base model's masks, reused by every variant of a run;
* ``metrics``: every metric against the ground truth, per variant;
* ``drift``: the metrics against the base model's masks plus the drift values, per variant;
* ``hce``: human correction efforts (optional, opt-in), shown separately;
* the last line: what the metrics add to the inference time of a run of the base
  model and two compressed variants.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_coreml_quality.dataset import Dataset  # noqa: E402
from pytest_coreml_quality.metrics import Reference, hce_available, score_mask  # noqa: E402
from pytest_coreml_quality.preprocess import resize_mask  # noqa: E402

SIDE = 1024


def stand_in_model(path: Path) -> Path:
    """A random-weight conv net 3 -> 32 -> 32 -> 32 -> 1 (3x3 convs, ReLU, sigmoid) at 1024x1024."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], []
    channels = [3, 32, 32, 32, 1]
    x = "input"
    for i, (cin, cout) in enumerate(zip(channels, channels[1:])):
        w = (rng.normal(0, 1, (cout, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        act = "Sigmoid" if cout == 1 else "Relu"
        out = "output" if cout == 1 else f"a{i}"
        nodes.append(helper.make_node(act, [f"c{i}"], [out]))
        x = out
    graph = helper.make_graph(
        nodes,
        "standin",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIDE, SIDE])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, SIDE, SIDE])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(ROOT / "fixtures" / "golden"))
    parser.add_argument("--onnx", default=None, help="ONNX graph with a 1x3x1024x1024 input (default: a stand-in)")
    parser.add_argument("--images", type=int, default=8, help="how many images of the set to use")
    parser.add_argument("--photo-side", type=int, default=None, help="resize photos and masks to NxN first (bigger photos)")
    parser.add_argument("--hce", action="store_true", help="also time HCE (needs pysodmetrics)")
    args = parser.parse_args()

    import onnxruntime as ort
    from PIL import Image

    onnx_path = Path(args.onnx) if args.onnx else stand_in_model(Path("/tmp/bench_metrics_standin.onnx"))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name
    dataset = Dataset.open(args.dataset)
    samples = list(dataset)[: args.images]

    # Warm up lazy imports (SciPy, PySODMetrics) outside the timed loop.
    warm = np.eye(8, dtype=np.float32)
    score_mask(warm, warm, with_hce=args.hce)

    rows: dict[str, list[float]] = {k: [] for k in ("inference", "prepare", "metrics", "drift", "hce")}
    pixels = []
    for sample in samples:
        image, mask, size = sample.image, sample.mask, sample.size
        if args.photo_side:
            size = (args.photo_side, args.photo_side)
            image, mask = image.resize(size, Image.Resampling.LANCZOS), resize_mask(mask, size)
        t0 = time.perf_counter()
        x = np.asarray(image.resize((SIDE, SIDE), Image.Resampling.LANCZOS), dtype=np.float32)
        x = (x / 255.0 - 0.5).transpose(2, 0, 1)[None]
        (y,) = session.run([output_name], {input_name: x})
        pred = resize_mask(np.clip(y[0, 0], 0, 1), size)
        t1 = time.perf_counter()
        # Once per run: the ground truth and the base model's masks, prepared as references.
        reference, base = Reference(mask), Reference(np.clip(pred + 0.01, 0, 1))
        reference.nearest_fg, base.nearest_fg, reference.importance, base.importance  # noqa: B018 - distance transforms
        t2 = time.perf_counter()
        score_mask(pred, reference)
        t3 = time.perf_counter()
        score_mask(pred, base, with_drift=True)
        t4 = time.perf_counter()
        rows["inference"].append(t1 - t0)
        rows["prepare"].append(t2 - t1)
        rows["metrics"].append(t3 - t2)
        rows["drift"].append(t4 - t3)
        if args.hce and hce_available():
            t5 = time.perf_counter()
            score_mask(pred, reference, with_hce=True)
            rows["hce"].append(time.perf_counter() - t5 - (t3 - t2))
        pixels.append(size[0] * size[1])

    infer = sum(rows["inference"])
    print(f"model: {onnx_path.name} ({'real' if args.onnx else 'stand-in'}), dataset: {args.dataset}")
    print(f"images: {len(samples)}, photo size: median {statistics.median(pixels) / 1e6:.2f} MP, max {max(pixels) / 1e6:.2f} MP")
    print(f"{'phase':38} {'total s':>9} {'per image s':>12} {'vs inference':>13}")
    labels = {
        "inference": "inference (pre + run + post)",
        "prepare": "prepare references (once per run)",
        "metrics": "metrics vs ground truth (per variant)",
        "drift": "drift vs base (per variant)",
        "hce": "HCE (opt-in, per variant)",
    }
    for key, label in labels.items():
        if not rows[key]:
            continue
        total = sum(rows[key])
        print(f"{label:38} {total:9.3f} {total / len(rows[key]):12.4f} {100 * total / infer:12.2f}%")
    # A typical run: the base model and two compressed variants (q8, q4).
    extra = sum(rows["prepare"]) + 3 * sum(rows["metrics"]) + 2 * sum(rows["drift"])
    print(f"run of base + 2 variants: metrics add {100 * extra / (3 * infer):.2f}% to the inference time")


if __name__ == "__main__":
    main()
