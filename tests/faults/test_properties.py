"""Property-based fault tests (Hypothesis): random inputs give a clear error or a valid result.

For the golden-set folder reader, the CSV and JSON manifest readers, the recipe parser
and every option of :mod:`pytest_coreml_quality.settings`, no input may end in anything
but the project's own error (:class:`CoreMLQualityError` / :class:`SettingError`, with a
message) or a result that holds up: pairs that decode, masks in [0, 1] of the photo's
size, weights that can be averaged, recipes that apply to the model, settings of the
right types. Example counts are kept modest so the file runs in seconds.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st
from PIL import Image

from pytest_coreml_quality.dataset import Dataset
from pytest_coreml_quality.errors import CoreMLQualityError
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.settings import OPTIONS, Settings, SettingError, resolve
from pytest_coreml_quality.variants import parse_recipes

from ..conftest import FIXTURES

FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _png(size: tuple[int, int], mode: str = "L", value: int = 200) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, value if mode != "RGB" else (value, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


# Bytes a golden-set file may hold: good images of two sizes, truncated, random, nothing.
GOOD_SMALL, GOOD_OTHER = _png((8, 6)), _png((6, 8))
# Mostly good files (so whole sets open too), sometimes anything.
CONTENTS = st.sampled_from(
    [GOOD_SMALL] * 6 + [GOOD_OTHER, _png((8, 6), "RGB"), GOOD_SMALL[:40], b"", b"GIF89a\x00junk"]
) | st.binary(max_size=64)
SUFFIXES = st.sampled_from([".png"] * 4 + [".PNG", ".jpg", ".jpeg", ".tif", ".webp", ".bmp", ".txt", ""])
# File names: anything a filesystem takes (no '/', no NUL), kept short.
STEMS = st.text(
    alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1, max_size=12
).filter(lambda s: s not in (".", ".."))


def check_valid(dataset: Dataset) -> None:
    """What a golden set that opened must hold for the rest of the plugin."""
    assert len(dataset) >= 1
    weights = [e.weight for e in dataset.entries]
    assert all(math.isfinite(w) and w >= 0 for w in weights) and any(weights)
    assert len(set(dataset.ids)) == len(dataset.ids)
    for sample in dataset:
        assert sample.image.mode == "RGB"
        assert sample.mask.shape == (sample.size[1], sample.size[0])
        assert sample.mask.dtype == np.float32
        assert float(sample.mask.min()) >= 0.0 and float(sample.mask.max()) <= 1.0


def open_or_error(path: Path) -> Dataset | None:
    """Open ``path``; a refusal must be a DatasetError (a CoreMLQualityError) with a message."""
    try:
        dataset = Dataset.open(path)
    except CoreMLQualityError as exc:
        assert str(exc).strip()
        event("refused")
        return None
    check_valid(dataset)
    event("opened")  # --hypothesis-show-statistics: both outcomes must be reached
    return dataset


def _write(path: Path, data: bytes) -> bool:
    try:
        path.write_bytes(data)
    except OSError:  # a name this filesystem refuses (too long in bytes, ...): not our input
        return False
    return True


# --- golden-set folder reader ------------------------------------------------------------------


FILE = st.none() | st.tuples(SUFFIXES, CONTENTS)  # absent, or a suffix and bytes


@FEW
@given(pairs=st.lists(st.tuples(STEMS, FILE, FILE), max_size=5), mask_stem_case=st.booleans())
def test_folder_reader_on_random_files(
    pairs: list[tuple[str, tuple[str, bytes] | None, tuple[str, bytes] | None]], mask_stem_case: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        (root / "masks").mkdir()
        for stem, image, mask in pairs:
            if image is not None:
                _write(root / "images" / f"{stem}{image[0]}", image[1])
            if mask is not None:  # stems pair case-insensitively
                _write(root / "masks" / f"{stem.upper() if mask_stem_case else stem}{mask[0]}", mask[1])
        dataset = open_or_error(root)
        if dataset is not None:  # every pair found shares its stem (case-folded)
            for entry in dataset.entries:
                assert entry.image_path.stem.casefold() == entry.mask_path.stem.casefold()


# --- manifest readers --------------------------------------------------------------------------


def _golden_files(root: Path) -> None:
    """Two good pairs, one photo of another size, one broken file, for manifests to point at."""
    (root / "img").mkdir()
    (root / "msk").mkdir()
    (root / "img" / "a.png").write_bytes(_png((8, 6), "RGB"))
    (root / "img" / "b.png").write_bytes(_png((8, 6), "RGB", 90))
    (root / "img" / "tall.png").write_bytes(_png((6, 8), "RGB"))
    (root / "img" / "broken.png").write_bytes(GOOD_SMALL[:40])
    (root / "msk" / "a.png").write_bytes(_png((8, 6)))
    (root / "msk" / "b.png").write_bytes(_png((8, 6), value=0))


PATHS = st.sampled_from(
    ["img/a.png", "img/b.png", "img/../img/a.png", "./img/b.png", "img/tall.png", "img/broken.png", "msk/a.png",
     "msk/b.png", "nowhere.png", "img", "", "../outside.png", "img/a.png/x"]
) | st.text(max_size=12)
WEIGHTS = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-3, max_value=3),
    st.sampled_from(["0", "1", "-1", "nan", "inf", "1e400", "", " ", "2.5", "heavy"]),
    st.text(max_size=6),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
TAGS = st.one_of(st.none(), st.text(max_size=10), st.lists(st.text(max_size=5), max_size=3), st.integers(), st.lists(st.integers(), max_size=2))
ROWS = st.lists(
    st.fixed_dictionaries({"image": PATHS, "mask": PATHS}, optional={"weight": WEIGHTS, "tags": TAGS}), max_size=5
)


def _csv_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return '"' + text.replace('"', '""') + '"'


@FEW
@given(rows=ROWS)
def test_csv_manifest_with_random_rows(rows: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _golden_files(root)
        lines = ["image,mask,weight,tags"] + [
            ",".join(_csv_cell(row.get(k)) for k in ("image", "mask", "weight", "tags")) for row in rows
        ]
        manifest = root / "manifest.csv"
        if _write(manifest, "\n".join(lines).encode("utf-8", "surrogatepass")):
            open_or_error(manifest)


@FEW
@given(rows=ROWS, wrap=st.booleans())
def test_json_manifest_with_random_rows(rows: list[dict[str, Any]], wrap: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _golden_files(root)
        manifest = root / "manifest.json"
        data: Any = {"samples": rows} if wrap else rows
        if _write(manifest, json.dumps(data).encode()):
            open_or_error(manifest)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["image", "mask", "weight", "tags", "samples", "x"]), inner, max_size=4),
    max_leaves=12,
)


@FEW
@given(text=st.text(max_size=200) | JSON_VALUES.map(json.dumps), suffix=st.sampled_from([".csv", ".json", ".CSV", ".txt"]))
def test_manifest_readers_on_random_text(text: str, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _golden_files(root)
        manifest = root / f"manifest{suffix}"
        if _write(manifest, text.encode("utf-8", "surrogatepass")):
            open_or_error(manifest)


@FEW
@given(data=st.binary(max_size=120))
def test_manifest_readers_on_random_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "manifest.csv"
        manifest.write_bytes(data)
        open_or_error(manifest)


# --- recipe parser -----------------------------------------------------------------------------

NN_MODEL = Model.open(FIXTURES / "models" / "TinySeg.mlmodel")
ML_PROGRAM = Model.open(FIXTURES / "models" / "TinySeg.mlpackage")
TOKENS = st.sampled_from(
    ["q", "int", "pal", "prune", "fp", "base", "kmeans", "lut", "sym", "block", "group", "uniform", "pertensor",
     "int8lut", "-", "+", ",", ":", " ", "%", "0", "1", "2", "4", "8", "16", "32", "50", "99", "100", "Q", "INT"]
)
NAMES = st.sampled_from(["q8", "Q4", "q8-kmeans", "q8-sym", "fp16", "int8", "int4-block32-sym", "pal4", "PAL2-uniform",
                         "prune50", "prune2:4", "prune50+pal4", "prune50+int8", "base"])
RECIPE_TEXT = (
    st.lists(TOKENS, max_size=8).map("".join)
    | st.lists(NAMES | st.lists(TOKENS, max_size=3).map("".join), min_size=1, max_size=3).map(",".join)
    | st.text(max_size=16)
)


@FEW
@given(text=RECIPE_TEXT, as_list=st.booleans(), mlprogram=st.booleans())
def test_recipe_parser_on_random_strings(text: str, as_list: bool, mlprogram: bool) -> None:
    model = ML_PROGRAM if mlprogram else NN_MODEL
    try:
        recipes = parse_recipes(text.split(",") if as_list else text, model)
    except CoreMLQualityError as exc:
        assert str(exc).strip()
        event("refused")
        return
    event("parsed")
    names = [str(r) for r in recipes]
    assert names[0] == "base" and len(set(names)) == len(names)
    for recipe in recipes[1:]:
        assert recipe.family == model.kind  # it applies to this model
        assert parse_recipes(str(recipe), model, include_base=False) == [recipe]  # canonical names round-trip


# --- option parsers ----------------------------------------------------------------------------

OPTION_TEXT = st.one_of(
    st.sampled_from(["", " ", "0", "1", "-1", "1.5", "nan", "inf", "-inf", "1e999", "5%", "%", "abc", "true", "no",
                     "auto", "coreml", "onnx", "fp16", "lanczos", "mean=0.5;std=0", "mean=1,2,3;std=1,1,1",
                     "imagenet", "~/x", "../../x", "a\x00b", "q8,q4", ",", "3"]),
    st.text(max_size=20),
)


@FEW
@given(values=st.fixed_dictionaries({spec.dest: st.none() | OPTION_TEXT for spec in OPTIONS}), from_ini=st.booleans())
def test_option_parsers_on_random_values(values: dict[str, str | None], from_ini: bool) -> None:
    multiple = {spec.dest for spec in OPTIONS if spec.multiple}

    def lookup(dest: str) -> Any:
        value = values.get(dest)
        return [value] if dest in multiple and value is not None else value

    option: Callable[[str], Any] = (lambda dest: None) if from_ini else lookup
    ini: Callable[[str], Any] = lookup if from_ini else (lambda name: None)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            result = resolve(option, ini, invocation_dir=Path(tmp), rootdir=Path(tmp))
        except (SettingError, CoreMLQualityError) as exc:
            assert str(exc).strip()
            event("refused")
            return
    event("resolved")
    assert isinstance(result, Settings)
    assert result.backend in ("auto", "coreml", "onnx") and result.precision in ("fp32", "fp16")
    assert isinstance(result.load_rounds, int) and result.load_rounds >= 1
    assert all(isinstance(v, float) and v >= 0 for v in result.thresholds.values())
    assert all(isinstance(v, float) and v >= 0 for v in result.baseline_tolerances.values())
    for path in (*result.models, result.dataset, result.cache_dir, result.report_json, result.report_html,
                 result.save_baseline, result.baseline):
        assert path is None or path.is_absolute()
    assert all(v.strip() and "," not in v for v in result.variants)


@pytest.mark.parametrize("value", ["a\x00b", "mod\x00el.mlmodel"])
def test_a_nul_byte_in_a_path_option_is_a_setting_error(value: str) -> None:
    """Found by the property above: the OS refuses such a path; say so instead of a raw ValueError."""
    with tempfile.TemporaryDirectory() as tmp:
        with pytest.raises(SettingError, match="--coreml-report-json / ini 'coreml_report_json'"):
            resolve(lambda d: value if d == "coreml_report_json" else None, lambda n: None, Path(tmp), Path(tmp))

