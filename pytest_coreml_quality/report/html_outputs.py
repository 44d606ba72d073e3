"""HTML report sections for models that are not segmenters (``--coreml-output-kind``).

Classifiers: per image, the photo and the top-5 classes with probabilities of the base
model and of each variant side by side. Tensors, heat maps and colour images: per image,
the photo and, per variant and output, a heat map of |variant - base| (channels reduced
by their maximum, scaled by the base output's range); colour image outputs are also shown
as pictures. Images come worst first, by the per-image drift the run recorded.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from pytest_coreml_quality.lanes import on_same_lane, split_key
from pytest_coreml_quality.metrics.classifier_drift import TOP_K
from pytest_coreml_quality.report import html as page
from pytest_coreml_quality.report.figures import MISSING, fmt_fixed, lookup, ordered_variants
from pytest_coreml_quality.results import BASE_VARIANT, ModelResults, VariantResult


def source_kind(images: Any, model: str) -> str:
    """The model's output kind as the source tells it; sources without ``kind`` hold masks only."""
    kind = getattr(images, "kind", None)
    return "mask" if kind is None else str(kind(model))


def _badness(v: VariantResult, name: str, kind: str) -> tuple[float, float] | None:
    """How far a variant's output moved for one image, larger is worse (None when not measured).

    Classifiers: a changed top-1 class first, then the KL divergence; tensors: the MAE.
    """
    values = v.per_image.get(name, {})
    if kind == "classifier":
        agree, kl = lookup(values, "drift_top1_agreement"), lookup(values, "drift_kl")
        if agree is None and kl is None:
            return None
        return (1.0 - (agree if agree is not None else 1.0), kl or 0.0)
    mae = lookup(values, "drift_tensor_mae")
    return None if mae is None else (mae, 0.0)


def rank_outputs(model: ModelResults, images: Any, kind: str) -> list[page.RankedImage]:
    """Images worst first by the largest drift from the base model over the variants; ``error`` is the KL or MAE."""
    judged = [v for v in ordered_variants(model.variants) if split_key(v.recipe)[0] != "base"]
    keyed = []
    for name in images.names(model.model):
        worst: tuple[tuple[float, float], str] | None = None
        for v in judged:
            bad = _badness(v, name, kind)
            if bad is not None and (worst is None or bad > worst[0]):
                worst = (bad, v.recipe)
        keyed.append((worst, name))
    keyed.sort(key=lambda item: (item[0] is None, tuple(-x for x in item[0][0]) if item[0] else (), item[1]))
    ranked = []
    for worst, name in keyed:
        error = None if worst is None else (worst[0][1] if kind == "classifier" else worst[0][0])
        ranked.append(page.RankedImage(name, worst[1] if worst else None, error))
    return ranked


def output_section(model: ModelResults, images: Any, kind: str, max_images: int) -> list[str]:
    """The images part of a model's section, for a classifier or tensor outputs."""
    ranked = rank_outputs(model, images, kind)
    shown = ranked[: max(0, max_images)]
    capped = f" (capped at {max_images})" if len(ranked) > len(shown) else ""
    if kind == "classifier":
        what = (f"Each table lists the top-{TOP_K} classes with their probabilities, of the base model and of each "
                "variant side by side; images are ranked by a changed top-1 class, then by KL(base || variant)")
    else:
        what = (f'Under each variant, a heat map of |variant &minus; base| per output, the maximum over channels as a '
                f'share of the base output&#39;s range, 0 <img class="ramp" src="{page._ramp_uri()}" alt="colour ramp"> 1 '
                "on a square-root scale; images are ranked by the largest tensor MAE against the base")
    parts = ["<h3>Images, worst first</h3>",
             f'<p class="note">Showing {len(shown)} of {len(ranked)} images{capped}. {what}.</p>']
    variants = ordered_variants(model.variants)
    for item in shown:
        heading = item.name
        if item.error is not None:
            label = "KL" if kind == "classifier" else "tensor MAE"
            heading += f" (worst: {item.recipe}, {label} {fmt_fixed(item.error, 12, 4)})"
        photo = page._figure([page._img(page._photo_uri(images.photo(model.model, item.name)), f"photo {item.name}")], "photo")
        body = _top_classes(model.model, item.name, variants, images) if kind == "classifier" else _differences(
            model.model, item.name, variants, images
        )
        parts += [f'<section class="sample"><h3>{html.escape(heading)}</h3><div class="row">', photo, *body, "</div></section>"]
    return parts


# --- classifiers ---------------------------------------------------------------------------


def top_classes(probabilities: dict[str, float], k: int = TOP_K) -> list[tuple[str, float]]:
    """The ``k`` most probable classes, most probable first (ties: the model's class order)."""
    return sorted(probabilities.items(), key=lambda kv: -kv[1])[:k]


def _top_classes(model: str, name: str, variants: Sequence[VariantResult], images: Any) -> list[str]:
    columns = []
    for v in variants:
        probs = images.probabilities(model, v.recipe, name)
        columns.append((v.recipe, None if probs is None else top_classes(probs)))
    base = next((top for recipe, top in columns if split_key(recipe)[0] == "base" and top), None)
    base_top1 = base[0][0] if base else None
    head = "<tr><th>#</th>" + "".join(f"<th>{html.escape(recipe)}</th>" for recipe, _ in columns) + "</tr>"
    rows = [head]
    for rank in range(TOP_K):
        cells = []
        for _, top in columns:
            if top is None:
                cells.append(f'<td class="note">{MISSING if rank else MISSING + " not computed"}</td>')
            elif rank < len(top):
                label, p = top[rank]
                # A top-1 class other than the base model's is the change that matters: mark it.
                css = ' class="fail"' if rank == 0 and base_top1 is not None and label != base_top1 else ""
                cells.append(f'<td{css}>{html.escape(label)} <span class="num">{p:.3f}</span></td>')
            else:
                cells.append("<td></td>")
        rows.append(f"<tr><td>{rank + 1}</td>" + "".join(cells) + "</tr>")
    return ['<div class="wide"><table class="classes">', *rows, "</table></div>"]


# --- tensors, heat maps, colour images ------------------------------------------------------


def spatial(arr: NDArray[Any], image: bool) -> NDArray[np.float32] | None:
    """A 2-D map of an output: channels reduced by their maximum; None when it has no 2-D layout.

    Image outputs are H x W (x C) pixels (channels last); multiarrays are (..., C, H, W).
    """
    a = np.asarray(arr, dtype=np.float32)
    if image and a.ndim == 3:
        return a.max(axis=-1)
    a = np.squeeze(a)
    if a.ndim < 2:
        return None
    return a.reshape(-1, *a.shape[-2:]).max(axis=0)


def _picture_uri(arr: NDArray[Any]) -> str | None:
    """A colour (or grey) image output as a thumbnail, its pixel values clipped to 0..255."""
    a = np.squeeze(np.asarray(arr, dtype=np.float32))
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        im = Image.fromarray(np.clip(np.round(a[..., :3]), 0, 255).astype(np.uint8), "RGB")
    elif a.ndim == 2:
        im = Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "L")
    else:
        return None
    return page._photo_uri(im)


def difference_map(pred: NDArray[Any], base: NDArray[Any], image: bool) -> NDArray[np.float32] | None:
    """|pred - base| per pixel, maximum over channels, as a share of the base output's value range."""
    if np.shape(pred) != np.shape(base):
        return None
    b = np.asarray(base, dtype=np.float32)
    span = float(b.max() - b.min()) if b.size else 0.0
    span = span if span > 0 else 1.0  # a constant base: differences in the output's own units
    return spatial(np.abs(np.asarray(pred, dtype=np.float32) - b) / span, image)


def _differences(model: str, name: str, variants: Sequence[VariantResult], images: Any) -> list[str]:
    pictures = images.image_outputs(model)
    cells = []
    for v in variants:
        outs = images.outputs(model, v.recipe, name)
        if outs is None:
            cells.append(page._figure([f'<p class="note">{MISSING} no output</p>'], v.recipe))
            continue
        is_base = split_key(v.recipe)[0] == "base"
        base = outs if is_base else images.outputs(model, on_same_lane(v.recipe, BASE_VARIANT), name)  # each lane vs its own base
        content, details, order = [], [], []
        for out, arr in outs.items():
            label = f"{v.recipe} {out}" if len(outs) > 1 else v.recipe
            if out in pictures and (uri := _picture_uri(arr)) is not None:
                content.append(page._img(uri, f"{label} output {name}"))
                order.append(out)
            if is_base or base is None or out not in base:
                continue
            diff = difference_map(arr, base[out], out in pictures)
            if diff is None:
                gap = float(np.max(np.abs(np.asarray(arr, dtype=np.float32) - np.asarray(base[out], dtype=np.float32))))
                details.append(f"{out}: max |Δ| {fmt_fixed(gap, 12, 4)}" if np.shape(arr) == np.shape(base[out]) else f"{out}: shape differs")
                continue
            content.append(page._img(page._heat_uri(diff), f"{label} vs base {name}"))
            order.append(f"{out} Δ")
        mae = lookup(v.per_image.get(name, {}), "drift_tensor_mae")
        # With several outputs the caption says which picture is which, top to bottom.
        shown = [", ".join(order)] if len(outs) > 1 and order else ([] if is_base else ["Δ vs base"])
        detail = " · ".join(([f"t-MAE {fmt_fixed(mae, 12, 4)}"] if mae is not None else []) + details + shown)
        cells.append(page._figure(content or [f'<p class="note">{MISSING}</p>'], v.recipe, detail))
    return cells
