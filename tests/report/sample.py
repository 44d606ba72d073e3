"""A small synthetic run and golden set for the report tests (no model is run)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from pytest_coreml_quality.results import CheckOutcome, LoadTimes, ModelResults, RunResults, VariantResult

LONG_RECIPE = "prune50+pal4-int8lut+another-very-long-step"
RECIPES = ("base", "q8", "prune50+pal4-int8lut", LONG_RECIPE)
# How far each variant's prediction drifts from the truth (image-dependent, see predicted_mask).
NOISE = {"base": 0.02, "q8": 0.03, "prune50+pal4-int8lut": 0.08, LONG_RECIPE: 0.15}


def truth_mask(i: int, size: tuple[int, int] = (48, 40)) -> np.ndarray:
    """A disc whose radius depends on the image index, floats in {0, 1}."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    r = 6 + 2 * (i % 5)
    return ((xx - w / 2) ** 2 + (yy - h / 2) ** 2 <= r * r).astype(np.float32)


def predicted_mask(i: int, recipe: str) -> np.ndarray:
    """The truth with a band of error whose strength grows with the variant and the index."""
    t = truth_mask(i)
    err = np.zeros_like(t)
    err[: 4 + i, :] = NOISE[recipe] * (1 + i)
    return np.clip(np.abs(t - err), 0, 1).astype(np.float32)


def photo(i: int) -> Image.Image:
    w, h = 48, 40
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)
    rgb = np.stack([x, np.full_like(x, 40 * (i % 6)), 255 - x], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def image_name(i: int) -> str:
    return f"scene_{i:02d}.jpg"


@dataclass
class MemoryImages:
    """An ImageSource over the synthetic set; ``missing`` recipes have no predictions."""

    count: int = 6
    missing: set[str] = field(default_factory=set)

    def names(self, model: str) -> list[str]:
        return [image_name(i) for i in range(self.count)]

    def _index(self, name: str) -> int:
        return int(name.split("_")[1].split(".")[0])

    def photo(self, model: str, name: str) -> Image.Image:
        return photo(self._index(name))

    def truth(self, model: str, name: str) -> np.ndarray:
        return truth_mask(self._index(name))

    def prediction(self, model: str, recipe: str, name: str) -> np.ndarray | None:
        if recipe in self.missing:
            return None
        return predicted_mask(self._index(name), recipe)


def make_run(count: int = 6, with_checks: bool = True) -> RunResults:
    """A run over one model with four variants whose per-image MAE matches MemoryImages."""
    model = ModelResults(
        model="TinySeg.mlmodel",
        path="/some/where/very/deep/inside/a/repository/Models/TinySeg.mlmodel",
        content_hash="0123456789abcdef" * 4,
        kind="neuralNetwork",
        backend="onnx",
        dataset="fixtures/golden",
    )
    base_size = 1_234_567
    for k, recipe in enumerate(RECIPES):
        per_image = {}
        for i in range(count):
            t, p = truth_mask(i), predicted_mask(i, recipe)
            per_image[image_name(i)] = {"mae": float(np.mean(np.abs(p - t))), "iou": 1.0 - 0.01 * (i + k)}
        size = int(base_size / (1 + 3 * k))
        v = VariantResult(
            recipe=recipe,
            path=f"/cache/{recipe}.mlmodel",
            kind="neuralNetwork",
            size_bytes=size,
            ratio=size / base_size,
            download_bytes=int(size * 0.9),
            build_s=None if recipe == "base" else 0.5 + k,
            params=1000,
            bits_per_weight=32 / (1 + 3 * k),
            content_hash=f"{k:x}" * 64,
            metrics={
                "mae": float(np.mean([d["mae"] for d in per_image.values()])),
                "loss255": 1.5 + k,
                "iou": 0.95 - 0.01 * k,
                "dice": 0.97 - 0.01 * k,
                "max_f": 0.96 - 0.01 * k,
                "s": 0.93 - 0.01 * k,
                "mean_e": 0.94 - 0.01 * k,
            },
            per_image=per_image,
            load=LoadTimes(cold_s=0.5 + k, warm_s=0.05 + 0.01 * k),
        )
        if recipe == "base":
            v.drift = {"mae": 0.0, "psnr": math.inf, "flip_share": 0.0}
        else:
            v.drift = {"mae": 0.001 * k, "psnr": 40.0 - k, "flip_share": 0.002 * k, "max_abs_diff": 0.1 * k}
        if with_checks and recipe != "base":
            bound = 0.05
            value = v.metrics["mae"]
            worst = sorted(((n, d["mae"]) for n, d in per_image.items()), key=lambda x: -x[1])
            v.checks.append(CheckOutcome("quality", "mae", value, bound, "<=", value <= bound, worst))
        model.variants[recipe] = v
    return RunResults(models={model.model: model}, versions={"coremltools": "9.0", "numpy": "2.0"})
