"""How long the reports take on a realistic golden set, and what PNG optimisation buys.

Synthetic data, no model run: N photos of SIDE x SIDE pixels with soft-edged masks and
4 compressed variants besides the base. Prints, side by side in one run:

* the HTML report with thumbnails encoded at zlib level 3 (the default), at Pillow's
  default level 6, and with optimize=True: time, file size and their ratios;
* the HTML page ranked from per-image figures (the normal case) vs from the masks
  (fallback when per-image values are missing);
* the JSON report and a baseline save, for scale.

    python benchmarks/bench_reports.py --images 50 --side 1024
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_coreml_quality.baseline import save_baseline  # noqa: E402
from pytest_coreml_quality.report import html as html_report  # noqa: E402
from pytest_coreml_quality.report.json_report import write_json  # noqa: E402
from pytest_coreml_quality.results import LoadTimes, ModelResults, RunResults, VariantResult  # noqa: E402

RECIPES = ("base", "q8", "q4", "pal4", "prune50+pal4-int8lut")


class SyntheticSet:
    """Photos, truths and predictions generated once and kept in memory."""

    def __init__(self, count: int, side: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:side, 0:side] / side
        self.ids = [f"scene_{i:03d}.jpg" for i in range(count)]
        self.photos, self.truths, self.preds = {}, {}, {}
        for i, name in enumerate(self.ids):
            cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
            dist = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
            truth = np.clip((r - dist) * side / 6 + 0.5, 0, 1).astype(np.float32)
            texture = rng.normal(0, 18, (side // 8, side // 8, 3))
            texture = np.kron(texture, np.ones((8, 8, 1)))
            rgb = np.stack([200 * xx, 120 + 60 * yy, 80 + 100 * truth], axis=-1) + texture
            self.photos[name] = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
            self.truths[name] = truth
            for k, recipe in enumerate(RECIPES):
                noise = rng.normal(0, 0.01 * (k + 1), (side // 16, side // 16)).astype(np.float32)
                self.preds[(recipe, name)] = np.clip(truth + np.kron(noise, np.ones((16, 16), np.float32)), 0, 1)

    # ImageSource protocol
    def names(self, model: str) -> list[str]:
        return list(self.ids)

    def photo(self, model: str, name: str) -> Image.Image:
        return self.photos[name]

    def truth(self, model: str, name: str) -> np.ndarray:
        return self.truths[name]

    def prediction(self, model: str, recipe: str, name: str) -> np.ndarray | None:
        return self.preds[(recipe, name)]


def make_run(data: SyntheticSet, per_image: bool) -> RunResults:
    model = ModelResults(model="ISNet.mlmodel", content_hash="ab" * 32, kind="neuralNetwork", backend="onnx")
    for k, recipe in enumerate(RECIPES):
        v = VariantResult(recipe=recipe, size_bytes=176_000_000 // (k + 1), ratio=1 / (k + 1))
        if per_image:
            v.per_image = {
                n: {"mae": float(np.mean(np.abs(data.preds[(recipe, n)] - data.truths[n]))), "iou": 0.9} for n in data.ids
            }
        v.metrics = {"mae": 0.01 * (k + 1), "iou": 0.95 - 0.01 * k}
        v.load = LoadTimes(cold_s=3.0, warm_s=0.3)
        model.variants[recipe] = v
    return RunResults(models={model.model: model}, versions={"numpy": np.__version__})


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--side", type=int, default=1024)
    args = parser.parse_args()

    t0 = time.perf_counter()
    data = SyntheticSet(args.images, args.side)
    print(f"synthetic set: {args.images} images of {args.side}x{args.side}, {len(RECIPES)} variants "
          f"(made in {time.perf_counter() - t0:.1f} s)", flush=True)
    run = make_run(data, per_image=True)
    run_no_per_image = make_run(data, per_image=False)

    encodings = {
        "PNG zlib level 3 (default)": {"compress_level": 3},
        "PNG zlib level 6 (Pillow's)": {"compress_level": 6},
        "PNG optimize=True": {"optimize": True},
    }
    default = dict(html_report.PNG_OPTIONS)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        figures = {}
        for label, options in encodings.items():
            html_report.PNG_OPTIONS = options
            path = out / "report.html"
            seconds = timed(lambda: html_report.write_html(path, run, data))
            figures[label] = (seconds, path.stat().st_size)
        html_report.PNG_OPTIONS = default
        t_fallback = timed(lambda: html_report.write_html(out / "fallback.html", run_no_per_image, data))
        t_json = timed(lambda: write_json(out / "r.json", run))
        t_base = timed(lambda: save_baseline(out / "b.json", run))
        s_json, s_base = (out / "r.json").stat().st_size, (out / "b.json").stat().st_size

    t_ref, s_ref = next(iter(figures.values()))
    print(f"{'HTML report':34}{'time s':>9}{'size MB':>10}{'time ratio':>12}{'size ratio':>12}")
    for label, (seconds, size) in figures.items():
        print(f"{'  ' + label:34}{seconds:9.2f}{size / 1e6:10.2f}{seconds / t_ref:12.2f}{size / s_ref:12.2f}")
    print(f"{'  ranked from masks, no per-image':34}{t_fallback:9.2f}{'':10}{t_fallback / t_ref:12.2f}")
    print(f"{'JSON report (with per-image)':34}{t_json:9.3f}{s_json / 1e6:10.3f}")
    print(f"{'baseline save':34}{t_base:9.3f}{s_base / 1e6:10.3f}")

if __name__ == "__main__":
    main()
