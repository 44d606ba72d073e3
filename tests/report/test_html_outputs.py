"""HTML report for models that are not segmenters: classifier top-5 tables, tensor difference heat maps."""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

import numpy as np
from PIL import Image

from pytest_coreml_quality.report.html import THUMB_SIDE, heat_colours, render_html
from pytest_coreml_quality.report.html_outputs import difference_map, spatial
from pytest_coreml_quality.results import ModelResults, RunResults

MODEL = "Tiny.mlmodel"
NAMES = ["a", "b", "c"]
CLASSES = [f"class{i}" for i in range(7)]


def _photo(name: str) -> Image.Image:
    return Image.new("RGB", (32, 24), (40 * NAMES.index(name), 90, 160))


@dataclass
class ClassifierImages:
    """Base probabilities put class0 first; q2 swaps the top two classes on image 'b' only."""

    missing: set[str] = field(default_factory=set)

    def names(self, model: str) -> list[str]:
        return list(NAMES)

    def photo(self, model: str, name: str) -> Image.Image:
        return _photo(name)

    def truth(self, model: str, name: str) -> np.ndarray:
        raise AssertionError("a classifier has no ground-truth mask")

    def prediction(self, model: str, recipe: str, name: str) -> np.ndarray | None:
        raise AssertionError("a classifier has no predicted mask")

    def kind(self, model: str) -> str:
        return "classifier"

    def probabilities(self, model: str, recipe: str, name: str) -> dict[str, float] | None:
        if recipe in self.missing:
            return None
        p = np.array([0.40, 0.25, 0.12, 0.10, 0.07, 0.04, 0.02])
        if recipe == "q2" and name == "b":
            p[[0, 1]] = p[[1, 0]]
        return dict(zip(CLASSES, p.tolist()))


@dataclass
class TensorImages:
    """A (2, 8, 8) multiarray 'heat' and a 6 x 8 x 3 colour image 'rgb'; variants add a growing error."""

    def names(self, model: str) -> list[str]:
        return list(NAMES)

    def photo(self, model: str, name: str) -> Image.Image:
        return _photo(name)

    def truth(self, model: str, name: str) -> np.ndarray:
        raise AssertionError("no ground truth")

    def prediction(self, model: str, recipe: str, name: str) -> np.ndarray | None:
        raise AssertionError("no masks")

    def kind(self, model: str) -> str:
        return "tensor"

    def image_outputs(self, model: str) -> frozenset[str]:
        return frozenset({"rgb"})

    def outputs(self, model: str, recipe: str, name: str) -> dict[str, np.ndarray] | None:
        heat = np.zeros((2, 8, 8), dtype=np.float32)
        heat[0, 0, 0] = 10.0  # base range 0..10
        rgb = np.full((6, 8, 3), 100.0, dtype=np.float32)
        rgb[0, 0] = 0.0
        if recipe != "base":
            heat[1, 4, 4] += 5.0 * (NAMES.index(name) + 1)  # half, one, one and a half of the range
            rgb[2, 2, 1] = 200.0
        return {"heat": heat, "rgb": rgb}


def _run(per_image: dict[str, dict[str, dict[str, float]]]) -> RunResults:
    model = ModelResults(model=MODEL, path=f"/x/{MODEL}", content_hash="0" * 64, kind="neuralNetwork", backend="onnx")
    for recipe in ("base", "q8", "q2"):
        v = model.variant(recipe)
        v.per_image = per_image.get(recipe, {})
    run = RunResults()
    run.models[MODEL] = model
    return run


class _Sections(HTMLParser):
    """Per sample section: its heading, its img alts, and the text of its table cells by row."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[dict] = []
        self._text: list[str] | None = None
        self._where = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.sections.append({"heading": "", "imgs": [], "rows": []})
        elif self.sections and tag == "img":
            self.sections[-1]["imgs"].append(a)
        elif self.sections and tag == "tr":
            self.sections[-1]["rows"].append([])
        elif self.sections and tag in ("td", "th", "h3"):
            self._text, self._where = [], tag

    def handle_endtag(self, tag: str) -> None:
        if self._text is not None and tag == self._where:
            text = "".join(self._text).strip()
            if tag == "h3":
                self.sections[-1]["heading"] = text
            else:
                self.sections[-1]["rows"][-1].append(text)
            self._text = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


def _sections(text: str) -> list[dict]:
    parser = _Sections()
    parser.feed(text)
    return parser.sections


def _decode(uri: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_classifier_top5_side_by_side_worst_first() -> None:
    per_image = {"q2": {n: {"drift_top1_agreement": 0.0 if n == "b" else 1.0, "drift_kl": 0.01 * (i + 1)} for i, n in enumerate(NAMES)},
                 "q8": {n: {"drift_top1_agreement": 1.0, "drift_kl": 0.001} for n in NAMES}}
    text = render_html(_run(per_image), ClassifierImages())
    sections = _sections(text)
    # 'b' changed its top-1 class: first, whatever its KL; then by KL: c (0.03) before a (0.01)
    assert [s["heading"].split()[0] for s in sections] == ["b", "c", "a"]
    assert sections[0]["heading"] == "b (worst: q2, KL 0.0200)"
    b = sections[0]
    assert b["rows"][0] == ["#", "base", "q8", "q2"]
    assert [row[0] for row in b["rows"][1:]] == ["1", "2", "3", "4", "5"]
    assert b["rows"][1][1:] == ["class0 0.400", "class0 0.400", "class1 0.400"]
    assert b["rows"][2][1:] == ["class1 0.250", "class1 0.250", "class0 0.250"]
    assert b["rows"][5][1:] == ["class4 0.070"] * 3  # the sixth and seventh classes are not listed
    assert "class5" not in str(b["rows"])
    assert re.search(r'<td class="fail">class1 ', text)  # the changed top-1 class is marked
    assert [img["alt"] for img in b["imgs"]] == ["photo b"]
    assert max(_decode(str(b["imgs"][0]["src"])).size) == THUMB_SIDE


def test_classifier_variant_without_probabilities() -> None:
    sections = _sections(render_html(_run({}), ClassifierImages(missing={"q8"})))
    assert [s["heading"] for s in sections] == ["a", "b", "c"]  # nothing measured: by name, no worst
    assert sections[0]["rows"][1][2] == "- not computed"


def test_tensor_heat_map_per_variant_and_output_and_colour_pictures() -> None:
    per_image = {r: {n: {"drift_tensor_mae": 0.1 * (i + 1) * k} for i, n in enumerate(NAMES)} for k, r in ((1, "q8"), (2, "q2"))}
    text = render_html(_run(per_image), TensorImages())
    sections = _sections(text)
    assert [s["heading"].split()[0] for s in sections] == ["c", "b", "a"]
    assert sections[0]["heading"] == "c (worst: q2, tensor MAE 0.6000)"
    alts = [img["alt"] for img in sections[0]["imgs"]]
    assert alts == [
        "photo c",
        "base rgb output c",
        "q8 heat vs base c", "q8 rgb output c", "q8 rgb vs base c",
        "q2 heat vs base c", "q2 rgb output c", "q2 rgb vs base c",
    ]
    assert "q8<br>t-MAE 0.3000 · heat Δ, rgb, rgb Δ</figcaption>" in text  # which picture is which
    imgs = {img["alt"]: _decode(str(img["src"])).convert("RGB") for img in sections[0]["imgs"]}
    heat = np.asarray(imgs["q8 heat vs base c"])
    # 1.5 x the base range clips to the top of the ramp at the changed pixel, 0 (black) elsewhere
    assert tuple(heat[heat.shape[0] // 2 + 5, heat.shape[1] // 2 + 5]) == tuple(heat_colours(np.array(1.0)))
    assert tuple(heat[2, 2]) == tuple(heat_colours(np.array(0.0)))
    assert max(imgs["q2 rgb output c"].size) == THUMB_SIDE


def test_difference_map_reduces_channels_by_max_on_the_base_range() -> None:
    base = np.zeros((1, 3, 4, 5), dtype=np.float32)
    base[0, 0, 0, 0] = 4.0
    pred = base.copy()
    pred[0, 1, 2, 3] = 1.0
    pred[0, 2, 2, 3] = 3.0
    diff = difference_map(pred, base, image=False)
    assert diff is not None and diff.shape == (4, 5)
    assert diff[2, 3] == 0.75 and diff.sum() == 0.75
    rgb = np.zeros((4, 5, 3), dtype=np.float32)
    rgb[..., 0] = 255.0
    moved = rgb.copy()
    moved[1, 1, 2] = 51.0
    assert spatial(np.abs(moved - rgb), image=True)[1, 1] == 51.0
    assert difference_map(np.ones(7), np.zeros(7), image=False) is None  # an embedding has no 2-D layout
    assert difference_map(np.ones((2, 2)), np.zeros((3, 2)), image=False) is None
