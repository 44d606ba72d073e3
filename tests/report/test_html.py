"""HTML report: content and escaping, ranking and cap, and rendering in headless Chromium."""

from __future__ import annotations

import base64
import io
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pytest_coreml_quality.report.html import THUMB_SIDE, heat_colours, rank_images, render_html, write_html
from pytest_coreml_quality.results import ModelResults, RunResults, VariantResult
from tests.chromium import CHROMIUM, SKIP_REASON, chromium_command, dump_dom
from tests.report.sample import LONG_RECIPE, RECIPES, MemoryImages, image_name, make_run, predicted_mask, truth_mask

MODEL = "TinySeg.mlmodel"


class _Page(HTMLParser):
    """Collects the img sources, table rows, section headings and any external reference."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.rows: list[list[str]] = []
        self.headings: list[str] = []
        self.external: list[str] = []
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a)
        for key in ("src", "href"):
            if a.get(key) and not str(a[key]).startswith("data:"):
                self.external.append(str(a[key]))
        if tag == "tr" and a.get("class") == "variant":
            self.rows.append([])
        if tag == "td" and self.rows:
            self._cell = []
        if tag == "h3":
            self._heading = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None
        if tag == "h3" and self._heading is not None:
            self.headings.append("".join(self._heading))
            self._heading = None

    def handle_data(self, data: str) -> None:
        for buf in (self._cell, self._heading):
            if buf is not None:
                buf.append(data)


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def _decode(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_page_holds_table_and_thumbnails_worst_first() -> None:
    run, images = make_run(count=6), MemoryImages(count=6)
    page = _parse(render_html(run, images))
    assert page.external == []
    assert [row[0] for row in page.rows] == list(RECIPES)
    assert [row[1] for row in page.rows] == ["-", "PASS", "FAIL", "FAIL"]
    # per image: photo + truth + (prediction + heat map) per variant
    assert len(page.images) == 1 + 6 * (2 + 2 * len(RECIPES))  # + the colour ramp of the legend
    sample_headings = [h for h in page.headings if h.startswith("scene_")]
    # the synthetic errors grow with the index: worst first means descending names
    assert [h.split()[0] for h in sample_headings] == [image_name(i) for i in reversed(range(6))]
    assert f"(worst: {LONG_RECIPE}, MAE 0.2025)" in sample_headings[0]
    for img in page.images[1:]:
        thumb = _decode(str(img["src"]))
        assert max(thumb.size) == THUMB_SIDE


def test_cap_keeps_the_worst_and_says_so() -> None:
    page_text = render_html(make_run(count=6), MemoryImages(count=6), max_images=2)
    page = _parse(page_text)
    assert [h.split()[0] for h in page.headings if h.startswith("scene_")] == ["scene_05.jpg", "scene_04.jpg"]
    assert "Showing 2 of 6 images" in page_text and "capped at 2" in page_text


def test_heat_map_compares_variants_with_base_and_base_with_truth() -> None:
    run, images = make_run(count=1), MemoryImages(count=1)
    page = _parse(render_html(run, images))
    alts = [str(img["alt"]) for img in page.images]
    assert "base vs ground truth scene_00.jpg" in alts
    assert "q8 vs base scene_00.jpg" in alts
    # q8 differs from base in the top band only: the heat map is dark below it, bright in it
    heat = np.asarray(_decode(str(next(i["src"] for i in page.images if i["alt"] == "q8 vs base scene_00.jpg"))))
    band = heat[: heat.shape[0] // 20].reshape(-1, 3).mean(0)
    rest = heat[heat.shape[0] // 2 :].reshape(-1, 3).mean(0)
    assert band.sum() > rest.sum() + 60
    assert tuple(heat_colours(np.zeros(1))[0]) == (0, 0, 4)


def test_text_is_escaped() -> None:
    model = ModelResults(model="<b>Evil</b>&.mlmodel", backend='on"nx')
    model.variants["base"] = VariantResult(recipe="<script>alert(1)</script>")
    text = render_html(RunResults(models={model.model: model}), None, title="A & B")
    assert "<script>" not in text and "<b>Evil" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "&lt;b&gt;Evil&lt;/b&gt;&amp;.mlmodel" in text
    assert "<title>A &amp; B</title>" in text


def test_missing_predictions_and_no_image_source() -> None:
    run = make_run(count=2)
    page = _parse(render_html(run, MemoryImages(count=2, missing={"q8"})))
    assert len(page.images) == 1 + 2 * (2 + 2 * (len(RECIPES) - 1))
    tables_only = _parse(render_html(run, None))
    assert tables_only.images == [] and len(tables_only.rows) == len(RECIPES)


def test_ranking_falls_back_to_masks_without_per_image_values() -> None:
    run = make_run(count=4)
    for v in run.models[MODEL].variants.values():
        v.per_image = {}
    ranked = rank_images(run.models[MODEL], MemoryImages(count=4))
    assert [r.name for r in ranked] == [image_name(i) for i in (3, 2, 1, 0)]
    assert {r.recipe for r in ranked} == {LONG_RECIPE}
    expected = float(np.mean(np.abs(predicted_mask(3, LONG_RECIPE) - truth_mask(3))))
    assert ranked[0].error == pytest.approx(expected)


def test_write_html_is_atomic_and_utf8(tmp_path: Path) -> None:
    path = write_html(tmp_path / "sub" / "report.html", make_run(count=1), MemoryImages(count=1), title="Δ report")
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]


# --- headless Chromium -------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The report written once, its DOM as Chromium builds it and a screenshot."""
    if CHROMIUM is None:
        pytest.skip(SKIP_REASON)
    tmp = tmp_path_factory.mktemp("html")
    path = write_html(tmp / "report.html", make_run(count=3), MemoryImages(count=3))
    flags = chromium_command(tmp / "profile")
    dom = dump_dom(path, tmp / "profile")
    shot = tmp / "shot.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1200,1400", "--hide-scrollbars", path.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return {"dom": dom, "shot": shot, "html": path.read_text()}


def test_chromium_builds_the_table_and_the_images(rendered: dict[str, object]) -> None:
    dom = str(rendered["dom"])
    page = _parse(dom)
    assert [row[0] for row in page.rows] == list(RECIPES)
    assert len(page.rows[0]) == len(page.rows[-1]) > 10
    data_imgs = re.findall(r'<img[^>]+src="data:image/png;base64,', dom)
    assert len(data_imgs) == 1 + 3 * (2 + 2 * len(RECIPES))
    assert page.external == []


def test_chromium_screenshot_shows_decoded_images(rendered: dict[str, object]) -> None:
    shot = np.asarray(Image.open(str(rendered["shot"])).convert("RGB")).astype(np.int16)
    assert shot.shape[0] > 100 and shot.shape[1] > 100
    assert shot.std() > 10, "the screenshot is uniform: nothing rendered"
    # Colours that exist only inside the embedded PNGs prove they were decoded and drawn:
    # the photos' cyan-to-orange gradient ends and the heat maps' purple/orange ramp.
    def present(rgb: tuple[int, int, int], tol: int = 12) -> bool:
        return bool(np.any(np.all(np.abs(shot - np.array(rgb)) <= tol, axis=-1)))

    assert present((0, 40, 255)) or present((0, 0, 255)), "photo thumbnails not drawn"
    assert present((249, 142, 9), 40) or present((188, 55, 84), 40), "heat maps not drawn"
    assert present((255, 255, 255)) and present((0, 0, 0)), "masks not drawn"


def test_dataset_image_source_over_a_real_golden_set(tmp_path: Path) -> None:
    from pytest_coreml_quality.dataset import Dataset
    from pytest_coreml_quality.report.html import DatasetImageSource
    from tests.report.sample import photo

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(3):
        photo(i).save(tmp_path / "images" / f"s{i}.png")
        Image.fromarray((truth_mask(i) * 255).astype(np.uint8)).save(tmp_path / "masks" / f"s{i}.png")
    dataset = Dataset.open(tmp_path)
    preds = {"base": {sid: truth_mask(int(sid[-1])) * 0.5 for sid in dataset.ids}}
    source = DatasetImageSource({MODEL: dataset}, lambda model, recipe: preds.get(recipe))
    names = source.names(MODEL)
    assert len(names) == 3 and source.names("Other.mlmodel") == []
    assert source.photo(MODEL, names[0]).size == (48, 40)
    np.testing.assert_allclose(source.truth(MODEL, names[1]), truth_mask(int(names[1][-1])))
    assert source.prediction(MODEL, "q8", names[0]) is None
    assert source.prediction(MODEL, "base", names[0]).max() == pytest.approx(0.5)
    assert source.partner(MODEL, "base@coreml") is None  # not a side-by-side run
    paired = DatasetImageSource({MODEL: dataset}, lambda model, recipe: None, partners=lambda model, key: key.replace("coreml", "onnx"))
    assert paired.partner(MODEL, "q8@coreml") == "q8@onnx"


class _SideBySideImages:
    """Two backends' masks: the second backend's mask moves a band that grows with the image index."""

    def names(self, model: str) -> list[str]:
        return [image_name(i) for i in range(4)]

    def photo(self, model: str, name: str) -> Image.Image:
        from tests.report.sample import photo

        return photo(int(name[6:8]))

    def truth(self, model: str, name: str) -> np.ndarray:
        return truth_mask(int(name[6:8]))

    def prediction(self, model: str, recipe: str, name: str) -> np.ndarray | None:
        i = int(name[6:8])
        mask = truth_mask(i).copy()
        if recipe.endswith("@onnx"):
            mask[: 2 + 3 * i, :] = 0.5  # the backends differ most on the last image
        return mask

    def partner(self, model: str, key: str) -> str | None:
        recipe, _, label = key.partition("@")
        return f"{recipe}@onnx" if label.startswith("coreml") else None


def _side_by_side_run(bound: float) -> RunResults:
    from pytest_coreml_quality.results import CheckOutcome

    model = ModelResults(model=MODEL, path=f"/m/{MODEL}", content_hash="0" * 64, kind="neuralNetwork", backend="coreml")
    images = _SideBySideImages()
    for key in ("q8@coreml:ALL", "q8@onnx"):
        per_image = {}
        for name in images.names(MODEL):
            values = {"mae": 0.01}
            if key != "q8@onnx":
                values["backend_mae"] = float(np.mean(np.abs(images.prediction(MODEL, key, name) - images.prediction(MODEL, "q8@onnx", name))))
            per_image[name] = values
        v = VariantResult(recipe=key, metrics={"mae": 0.01}, per_image=per_image)
        if key != "q8@onnx":
            mean = float(np.mean([d["backend_mae"] for d in per_image.values()]))
            v.backend_drift = {"mae": mean}
            v.checks.append(CheckOutcome("quality", "backend_mae", mean, bound, "<=", mean <= bound))
        model.variants[key] = v
    return RunResults(models={MODEL: model})


def test_backend_drift_beyond_its_bound_shows_where_the_backends_differ_most() -> None:
    page = render_html(_side_by_side_run(bound=0.0), _SideBySideImages())
    parsed = _Page()
    parsed.feed(page)
    assert "q8@coreml:ALL against q8@onnx: where the backends differ most" in page
    # Worst first, by the per-image backend_mae recorded for each image.
    order = [image_name(i) for i in (3, 2, 1, 0)]
    positions = [page.index(f"{name} (backend_mae ") for name in order]
    assert positions == sorted(positions)
    alts = [a["alt"] for a in parsed.images]
    for name in order:
        assert {f"photo {name}", f"q8@coreml:ALL {name}", f"q8@onnx {name}", f"q8@coreml:ALL vs q8@onnx {name}"} <= set(alts)
    # The heat map shows the difference between the two backends' masks: bright where they differ.
    heat = next(a["src"] for a in parsed.images if a["alt"] == f"q8@coreml:ALL vs q8@onnx {image_name(3)}")
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(str(heat).split(",", 1)[1]))).convert("RGB"))
    assert pixels[0].mean() > 100 and pixels[-1].mean() < 20  # the band at the top, nothing at the bottom


def test_backend_drift_within_its_bound_has_no_such_section() -> None:
    page = render_html(_side_by_side_run(bound=1.0), _SideBySideImages())
    assert "where the backends differ most" not in page
    assert "vs q8@onnx" not in page
