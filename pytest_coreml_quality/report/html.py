"""``--coreml-report-html``: one self-contained HTML page (inline CSS, images as data: URIs).

Per model: the figures table, failed checks with their worst images, for a side-by-side
run (``--coreml-backend=A,B``) whose drift between backends breaks its bound the images
where the two backends differ most, then the images worst first, each with thumbnails of
the photo, the ground truth, and every variant's prediction above a difference heat map.
Models that are not segmenters show their outputs instead (:mod:`.html_outputs`):
classifiers their top-5 classes, other outputs difference heat maps against the base
model. The page needs no JavaScript and loads nothing
from the network, so it can be attached to a CI run and opened anywhere.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from pytest_coreml_quality.report.figures import (
    MISSING,
    fmt_fixed,
    fmt_size_mb,
    lookup,
    ordered_variants,
    verdict,
)
from pytest_coreml_quality.cachefs import atomic_write_text
from pytest_coreml_quality.report.terminal import model_header
from pytest_coreml_quality import catalogue
from pytest_coreml_quality.images import DatasetImageSource, ImageSource  # noqa: F401  (re-exported)
from pytest_coreml_quality.lanes import on_same_lane, split_key
from pytest_coreml_quality.results import BASE_VARIANT, ModelResults, RunResults, VariantResult

THUMB_SIDE = 160
MAX_IMAGES = 50
RANK_METRIC = "mae"
#: Checks on these figures compare two backends; a failed one gets a section of its worst images.
BACKEND_CHECKS = ("backend_mae", "backend_flip_share")
BACKEND_RANK = "backend_mae"  # per-image figure the backend section ranks by
BACKEND_IMAGES = 5
# PNG encoding dominates the report's cost; zlib level 3 is markedly faster than Pillow's
# default 6 for a few percent more bytes, and optimize=True is slower still for ~2 % less
# (benchmarks/bench_reports.py).
PNG_OPTIONS: dict[str, Any] = {"compress_level": 3}

# Colour ramp of the heat maps (dark -> purple -> red -> orange -> pale yellow), sampled at
# even steps; perceptually ordered so a larger difference always reads as brighter.
_RAMP = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]],
    dtype=np.float64,
)


# --- pixels -------------------------------------------------------------------------------


def heat_colours(diff: NDArray[Any]) -> NDArray[np.uint8]:
    """RGB heat map of absolute differences in [0, 1] on a square-root scale.

    The square root makes the small differences compression causes (a few hundredths)
    visible while keeping 0 black and 1 the top of the ramp.
    """
    t = np.sqrt(np.clip(np.abs(np.asarray(diff, dtype=np.float64)), 0.0, 1.0))
    stops = np.linspace(0.0, 1.0, len(_RAMP))
    rgb = np.stack([np.interp(t, stops, _RAMP[:, c]) for c in range(3)], axis=-1)
    return np.round(rgb).astype(np.uint8)


def _as_mask(arr: NDArray[Any]) -> NDArray[np.float32]:
    a = np.squeeze(np.asarray(arr, dtype=np.float32))
    if a.ndim != 2:
        raise ValueError(f"a mask must be 2-D after squeezing, got shape {np.shape(arr)}")
    return np.nan_to_num(a, nan=0.0) if np.isnan(a).any() else a


def _resized(mask: NDArray[np.float32], shape: tuple[int, ...]) -> NDArray[np.float32]:
    """``mask`` resampled to ``shape`` (height, width) when the two differ."""
    if mask.shape == shape:
        return mask
    im = Image.fromarray(np.ascontiguousarray(mask, dtype=np.float32)).resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.float32)


def _thumb_size(size: tuple[int, int]) -> tuple[int, int]:
    scale = THUMB_SIDE / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _shrink(im: Image.Image, photo: bool = False) -> Image.Image:
    """``im`` scaled to THUMB_SIDE on its longer side.

    Down: masks and differences are area-averaged (BOX), so a thin band of error keeps
    its share of the thumbnail; photos use LANCZOS. ``reducing_gap`` first shrinks by an
    integer factor, which keeps a 1024 px image cheap. Up (tiny sets): NEAREST, so that
    single pixels stay crisp squares.
    """
    size = _thumb_size(im.size)
    if size[0] >= im.width:
        return im.resize(size, Image.Resampling.NEAREST)
    resample = Image.Resampling.LANCZOS if photo else Image.Resampling.BOX
    return im.resize(size, resample, reducing_gap=2.0)


def _png_uri(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **PNG_OPTIONS)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _small(values: NDArray[np.float32]) -> NDArray[np.float32]:
    """A float array shrunk (area average) or enlarged to thumbnail size."""
    return np.asarray(_shrink(Image.fromarray(np.ascontiguousarray(values, dtype=np.float32))), dtype=np.float32)


def _photo_uri(im: Image.Image) -> str:
    return _png_uri(_shrink(im.convert("RGB"), photo=True))


def _mask_uri(mask: NDArray[np.float32]) -> str:
    small = _small(mask)
    return _png_uri(Image.fromarray(np.round(np.clip(small, 0.0, 1.0) * 255).astype(np.uint8)))


def _heat_uri(diff: NDArray[np.float32]) -> str:
    # Colour after shrinking: the ramp is applied to 160 px, not to megapixels.
    return _png_uri(Image.fromarray(heat_colours(_small(diff))))


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


# --- ranking ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankedImage:
    """An image with the error of its worst variant, the key of the page's order."""

    name: str
    recipe: str | None
    error: float | None


def rank_images(model: ModelResults, images: ImageSource, metric: str = RANK_METRIC) -> list[RankedImage]:
    """Images worst first, by the largest per-image ``metric`` (an error) over the variants.

    The base model counts only when it is the only variant, so the order shows where
    compression hurts. Where ``per_image`` lacks the metric, MAE is computed from the
    masks the source provides.
    """
    variants = ordered_variants(model.variants)
    judged = [v for v in variants if split_key(v.recipe)[0] != "base"] or variants
    ranked = []
    for name in images.names(model.model):
        worst: tuple[float, str] | None = None
        for v in judged:
            err = _image_error(model.model, v, name, images, metric)
            if err is not None and not math.isnan(err) and (worst is None or err > worst[0]):
                worst = (err, v.recipe)
        ranked.append(RankedImage(name, worst[1] if worst else None, worst[0] if worst else None))
    ranked.sort(key=lambda r: (r.error is None, -(r.error or 0.0), r.name))
    return ranked


def _image_error(model: str, v: VariantResult, name: str, images: ImageSource, metric: str) -> float | None:
    value = lookup(v.per_image.get(name, {}), metric)
    if value is not None or metric != "mae":
        return value
    pred = images.prediction(model, v.recipe, name)
    if pred is None:
        return None
    truth = _as_mask(images.truth(model, name))
    return float(np.mean(np.abs(_resized(_as_mask(pred), truth.shape) - truth)))


# --- page ---------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d1d1f;background:#fff}
h1{font-size:22px}h2{font-size:18px;margin-top:32px}h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #d2d2d7;padding:3px 8px}
td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f5f5f7}
.pass{color:#137333;font-weight:600}.fail{color:#b3261e;font-weight:600}
.row{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
figure{margin:0;display:flex;flex-direction:column;align-items:center;max-width:170px}
figure img{display:block;margin-bottom:3px;image-rendering:pixelated;border:1px solid #d2d2d7}
figcaption{font-size:12px;text-align:center;overflow-wrap:anywhere}
.wide{overflow-x:auto}table.figures{font-size:13px}
.recommendation{font-size:16px;font-weight:600}img.plot{max-width:100%;height:auto}
table.classes td{font-size:12px;white-space:nowrap}
.note{color:#6e6e73}.ramp{height:12px;width:200px;vertical-align:middle}
"""


def render_html(
    run: RunResults,
    images: ImageSource | None,
    max_images: int = MAX_IMAGES,
    title: str | None = None,
    recommendations: Mapping[str, str] | None = None,
    plot_png: bytes | None = None,
    note: str | None = None,
) -> str:
    """The whole page as a string (see :func:`write_html`); ``note`` is said under the title."""
    title = title or "Core ML model quality report"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if run.versions:
        versions = ", ".join(f"{k} {v}" for k, v in sorted(run.versions.items()))
        parts.append(f'<p class="note">{html.escape(versions)}</p>')
    if note:
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    parts += _decision(run, recommendations or {}, plot_png)
    for model in run.models.values():
        parts += _model_section(model, images, max_images)
    if not run.models:
        parts.append("<p>No model was measured in this run.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(path: str | os.PathLike[str], run: RunResults, images: ImageSource | None, **options: Any) -> Path:
    """Write the self-contained HTML report to ``path`` atomically; return the path.

    ``images`` may be None (no golden-set pixels at hand): the page then has the tables
    only. ``options`` are :func:`render_html`'s (``max_images``, ``title``,
    ``recommendations``, ``plot_png``, ``note``): at most ``max_images`` images are shown, the worst
    ones, and the page says so.
    """
    return atomic_write_text(path, render_html(run, images, **options))


def _decision(run: RunResults, recommendations: Mapping[str, str], plot_png: bytes | None) -> list[str]:
    """The answer first: each model's recommendation line (model key -> line) and the trade-off plot."""
    parts = []
    for key, line in recommendations.items():
        prefix = f"{key}: " if len(run.models) > 1 else ""
        parts.append(f'<p class="recommendation">{html.escape(prefix + line)}</p>')
    if plot_png is not None:
        uri = "data:image/png;base64," + base64.b64encode(plot_png).decode("ascii")
        parts.append(f'<img class="plot" src="{uri}" alt="size against quality of every variant">')
    return parts


def _model_section(model: ModelResults, images: ImageSource | None, max_images: int) -> list[str]:
    parts = [f"<h2>{html.escape(model_header(model))}</h2>"]
    parts += _figures_table(model)
    parts += _failed_checks(model)
    if images is None:
        return parts
    from pytest_coreml_quality.report import html_outputs  # imports this module: loaded on use

    kind = html_outputs.source_kind(images, model.model)
    if kind != "mask":
        return parts + html_outputs.output_section(model, images, kind, max_images)
    parts += _backend_sections(model, images)
    ranked = rank_images(model, images)
    shown = ranked[: max(0, max_images)]
    parts.append("<h3>Images, worst first</h3>")
    parts.append(
        f'<p class="note">Showing {len(shown)} of {len(ranked)} images, ranked by the largest per-image '
        f"{RANK_METRIC.upper()} against the ground truth over the compressed variants"
        + (f" (capped at {max_images})" if len(ranked) > len(shown) else "")
        + ". Under each prediction, a heat map of |variant &minus; base| (for base: |base &minus; ground truth|), "
        f'0 <img class="ramp" src="{_ramp_uri()}" alt="colour ramp"> 1 on a square-root scale.</p>'
    )
    variants = ordered_variants(model.variants)
    for item in shown:
        parts += _image_row(model, item, variants, images)
    return parts


def _ramp_uri() -> str:
    ramp = heat_colours(np.tile(np.linspace(0.0, 1.0, 200) ** 2, (12, 1)))
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figures_table(model: ModelResults) -> list[str]:
    """Every catalogue figure any variant measured, one column each, headed by its key."""
    variants = ordered_variants(model.variants)
    shown = [f for f in catalogue.figures() if any(f.value(v) is not None for v in variants)]
    # The verdict comes right after the name: wide tables scroll, and it is what one looks for.
    head = ["variant", "result"] + [f.key for f in shown]
    rows = ['<div class="wide"><table class="figures">', "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for v in variants:
        cells = [_cell(f, v) for f in shown]
        result = verdict(v)
        css = {"PASS": "pass", "FAIL": "fail"}.get(result, "")
        row = f'<tr class="variant"><td>{html.escape(v.recipe)}</td><td class="{css}">{html.escape(result)}</td>'
        row += "".join(f'<td class="num">{html.escape(c)}</td>' for c in cells) + "</tr>"
        rows.append(row)
        if v.note:
            # Right under its row, across the table: a ratio of 1.000 must not read as silent.
            rows.append(f'<tr class="variant-note"><td></td><td class="note" colspan="{len(head) - 1}">{html.escape(v.note)}</td></tr>')
    rows.append("</table></div>")
    return rows


def _cell(figure: catalogue.Figure, v: VariantResult) -> str:
    value = figure.value(v)
    if figure.key == "size_mb":
        return fmt_size_mb(value, 12)
    text = fmt_fixed(value, 12, figure.column.decimals if figure.column else 4)
    if figure.family == "load" and value is not None and v.load.timer != "pytest-benchmark":
        text += f" ({v.load.timer})"  # plain-timer figures are marked, as in the terminal table
    return text


def _failed_checks(model: ModelResults) -> list[str]:
    items = []
    for v in ordered_variants(model.variants):
        for check in v.checks:
            if check.passed:
                continue
            worst = ", ".join(f"{name} {fmt_fixed(value, 12, 4)}" for name, value in check.worst[:5])
            text = f"{v.recipe}: {check.check} {check.describe()}" + (f"; worst images: {worst}" if worst else "")
            items.append(f"<li>{html.escape(text)}</li>")
    return ["<h3>Failed checks</h3><ul>", *items, "</ul>"] if items else []


def _backend_sections(model: ModelResults, images: ImageSource) -> list[str]:
    """Per row whose drift between backends breaks its bound: the images where the backends differ most."""
    parts: list[str] = []
    for v in ordered_variants(model.variants):
        broken = [c for c in v.checks if not c.passed and c.metric in BACKEND_CHECKS]
        # Sources written before side-by-side runs have no partner look-up: no section then.
        find_partner = getattr(images, "partner", None)
        other = find_partner(model.model, v.recipe) if broken and find_partner is not None else None
        if other is None:
            continue
        scored = [(name, lookup(values, BACKEND_RANK)) for name, values in v.per_image.items()]
        ranked = sorted(((n, e) for n, e in scored if e is not None and not math.isnan(e)), key=lambda ne: -ne[1])
        shown = ranked[:BACKEND_IMAGES]
        parts.append(f"<h3>{html.escape(v.recipe)} against {html.escape(other)}: where the backends differ most</h3>")
        why = "; ".join(c.describe() for c in broken)
        parts.append(
            f'<p class="note">{html.escape(why)}. Showing {len(shown)} of {len(ranked)} images by per-image '
            f"{html.escape(BACKEND_RANK)}: the photo, each backend's mask and a heat map of their difference.</p>"
        )
        for name, error in shown:
            parts += _backend_row(model.model, v.recipe, other, name, error, images)
    return parts


def _backend_row(model: str, key: str, other: str, name: str, error: float, images: ImageSource) -> list[str]:
    first, second = images.prediction(model, key, name), images.prediction(model, other, name)
    cells = [_figure([_img(_photo_uri(images.photo(model, name)), f"photo {name}")], "photo")]
    for label, mask in ((key, first), (other, second)):
        content = [f'<p class="note">{MISSING} no prediction</p>'] if mask is None else [_img(_mask_uri(_as_mask(mask)), f"{label} {name}")]
        cells.append(_figure(content, label))
    if first is not None and second is not None:
        a, b = _as_mask(first), _as_mask(second)
        diff = np.abs(_resized(a, b.shape) - b)
        cells.append(_figure([_img(_heat_uri(diff), f"{key} vs {other} {name}")], "difference", f"{BACKEND_RANK} {fmt_fixed(error, 12, 4)}"))
    heading = f"{name} ({BACKEND_RANK} {fmt_fixed(error, 12, 4)})"
    return [f'<section class="sample backend"><h4>{html.escape(heading)}</h4><div class="row">', *cells, "</div></section>"]


def _image_row(model: ModelResults, item: RankedImage, variants: Sequence[VariantResult], images: ImageSource) -> list[str]:
    name = model.model
    truth = _as_mask(images.truth(name, item.name))
    heading = item.name
    if item.error is not None:
        heading += f" (worst: {item.recipe}, {RANK_METRIC.upper()} {fmt_fixed(item.error, 12, 4)})"
    cells = [
        _figure([_img(_photo_uri(images.photo(name, item.name)), f"photo {item.name}")], "photo"),
        _figure([_img(_mask_uri(truth), f"ground truth {item.name}")], "ground truth"),
    ]
    for v in variants:
        # Each lane (compute unit, backend) compares with the base model on the same lane.
        recipe = split_key(v.recipe)[0]
        base_pred = images.prediction(name, on_same_lane(v.recipe, BASE_VARIANT), item.name)
        base = None if base_pred is None else _as_mask(base_pred)
        pred_raw = base_pred if recipe == BASE_VARIANT else images.prediction(name, v.recipe, item.name)
        err = lookup(v.per_image.get(item.name, {}), RANK_METRIC)
        detail = f"{RANK_METRIC.upper()} {fmt_fixed(err, 12, 4)}" if err is not None else ""
        if pred_raw is None:
            cells.append(_figure([f'<p class="note">{MISSING} no prediction</p>'], v.recipe, detail))
            continue
        pred = _as_mask(pred_raw)
        reference = truth if recipe == "base" or base is None else base
        against = "ground truth" if reference is truth else "base"
        diff = np.abs(_resized(pred, reference.shape) - reference)
        content = [
            _img(_mask_uri(pred), f"{v.recipe} prediction {item.name}"),
            _img(_heat_uri(diff), f"{v.recipe} vs {against} {item.name}"),
        ]
        cells.append(_figure(content, v.recipe, " · ".join(x for x in (detail, f"Δ vs {against}") if x)))
    return [f'<section class="sample"><h3>{html.escape(heading)}</h3><div class="row">', *cells, "</div></section>"]


def _figure(content: list[str], caption: str, detail: str = "") -> str:
    text = html.escape(caption) + (f"<br>{html.escape(detail)}" if detail else "")
    return "<figure>" + "".join(content) + f"<figcaption>{text}</figcaption></figure>"
