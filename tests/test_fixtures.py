"""The project's own fixtures (made by fixtures/make_fixtures.py) are present and sane.

Fast checks only: nothing is trained or converted here.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image, ImageOps

FIXTURES = Path(__file__).parent.parent / "fixtures"
GOLDEN = FIXTURES / "golden"
MODELS = FIXTURES / "models"
SCRIPT = FIXTURES / "make_fixtures.py"

EXIF_ORIENTATION = 0x0112
MAX_MODEL_BYTES = 5 * 1024 * 1024
INPUT_SIZE = 128

IMAGE_MODELS = ("TinySeg.mlmodel", "TinySeg.mlpackage", "TinySeg18.mlpackage")
ARRAY_MODELS = ("TinySegArray.mlmodel", "TinySegArray.mlpackage")
ALL_MODELS = IMAGE_MODELS + ARRAY_MODELS


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _image_paths() -> list[Path]:
    return sorted(p for p in (GOLDEN / "images").iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})


def _mask_for(image: Path) -> Path:
    return GOLDEN / "masks" / f"{image.stem}.png"


def _orientation(path: Path) -> int:
    with Image.open(path) as img:
        return int(img.getexif().get(EXIF_ORIENTATION, 1))


def _upright(path: Path) -> Image.Image:
    with Image.open(path) as img:
        return ImageOps.exif_transpose(img).convert("RGB")


@pytest.fixture(scope="module")
def ct() -> ModuleType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("coremltools")


@pytest.fixture(scope="module")
def make_fixtures() -> ModuleType:
    """fixtures/make_fixtures.py imported by path (it needs torch)."""
    pytest.importorskip("torch")
    name = "_coreml_quality_make_fixtures"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# --- golden set ---------------------------------------------------------------------------------


def test_golden_images_and_masks_pair_by_stem() -> None:
    images = _image_paths()
    masks = sorted((GOLDEN / "masks").glob("*"))
    assert len(images) >= 24
    assert {p.stem for p in images} == {p.stem for p in masks}
    assert len({p.stem for p in images}) == len(images), "two images share a stem"
    assert all(p.suffix == ".png" for p in masks)
    assert all(p.stem.startswith("scene_") for p in images)


def test_golden_mixes_jpeg_and_png_and_stays_small() -> None:
    suffixes = [p.suffix for p in _image_paths()]
    assert suffixes.count(".jpg") >= 5 and suffixes.count(".png") >= 5
    total = sum(_size(p) for p in (GOLDEN / "images").iterdir()) + sum(_size(p) for p in (GOLDEN / "masks").iterdir())
    assert total < 1.5 * 1024 * 1024


def test_masks_are_upright_grayscale_with_soft_borders() -> None:
    soft = 0
    for image_path in _image_paths():
        with Image.open(_mask_for(image_path)) as mask:
            assert mask.mode == "L"
            assert EXIF_ORIENTATION not in mask.getexif()
            values = np.asarray(mask)
            assert mask.size == _upright(image_path).size, image_path.name
        assert values.min() == 0 and values.max() == 255, image_path.name
        assert 0.01 < (values > 127).mean() < 0.9, image_path.name
        soft += bool(((values > 0) & (values < 255)).any())
    assert soft == len(_image_paths()), "every mask has anti-aliased borders"


def test_some_images_carry_exif_orientations() -> None:
    oriented = {p: _orientation(p) for p in _image_paths() if _orientation(p) != 1}
    assert len(oriented) >= 3
    assert {3, 6, 8} <= set(oriented.values())
    for path, orientation in oriented.items():
        with Image.open(path) as raw:
            stored = raw.size
        upright = _upright(path).size
        if orientation in (5, 6, 7, 8):  # the stored pixels are rotated/transposed
            assert stored == upright[::-1], path.name
        else:
            assert stored == upright, path.name


def test_golden_sizes_and_aspect_ratios_vary() -> None:
    sizes = {_upright(p).size for p in _image_paths()}
    assert len(sizes) >= 6
    assert any(w > h for w, h in sizes) and any(w < h for w, h in sizes) and any(w == h for w, h in sizes)
    assert all(120 <= min(w, h) and max(w, h) <= 320 for w, h in sizes)


def test_golden_set_is_regenerated_identically(make_fixtures: ModuleType) -> None:
    for index in range(3):
        scene = make_fixtures.golden_scene(index)
        stem = f"scene_{index:03d}"
        with Image.open(GOLDEN / "masks" / f"{stem}.png") as mask:
            assert np.array_equal(np.asarray(mask), scene.mask), stem
    png = next(p for p in _image_paths() if p.suffix == ".png")
    scene = make_fixtures.golden_scene(int(png.stem.split("_")[1]))
    assert np.array_equal(np.asarray(_upright(png)), scene.image)


# --- Core ML models -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_files_exist_small_and_load(ct: ModuleType, name: str) -> None:
    path = MODELS / name
    assert path.exists()
    assert 0 < _size(path) < MAX_MODEL_BYTES
    model = ct.models.MLModel(str(path), skip_model_load=True)
    assert model.author == "pytest-coreml-quality fixtures"
    assert model.license == "MIT"
    assert model.short_description
    spec = ct.utils.load_spec(str(path))
    assert spec.WhichOneof("Type") == ("mlProgram" if name.endswith(".mlpackage") else "neuralNetwork")


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_image_models_mirror_the_isnet_signature(ct: ModuleType, name: str) -> None:
    from coremltools.proto import FeatureTypes_pb2

    spec = ct.utils.load_spec(str(MODELS / name))
    (inp,), (out,) = spec.description.input, spec.description.output
    assert inp.name == "x_1" and inp.type.WhichOneof("Type") == "imageType"
    assert inp.type.imageType.colorSpace == FeatureTypes_pb2.ImageFeatureType.RGB
    assert (inp.type.imageType.width, inp.type.imageType.height) == (INPUT_SIZE, INPUT_SIZE)
    assert out.name == "activation_out" and out.type.WhichOneof("Type") == "imageType"
    assert out.type.imageType.colorSpace == FeatureTypes_pb2.ImageFeatureType.GRAYSCALE
    assert (out.type.imageType.width, out.type.imageType.height) == (INPUT_SIZE, INPUT_SIZE)


def test_neuralnetwork_image_model_scales_pixels_to_minus_half_plus_half(ct: ModuleType) -> None:
    spec = ct.utils.load_spec(str(MODELS / "TinySeg.mlmodel"))
    (pre,) = spec.neuralNetwork.preprocessing
    assert pre.featureName == "x_1"
    scaler = pre.scaler
    assert scaler.channelScale == pytest.approx(1 / 255, rel=1e-6)
    assert (scaler.redBias, scaler.greenBias, scaler.blueBias) == pytest.approx((-0.5, -0.5, -0.5))


@pytest.mark.parametrize(
    ("name", "spec_version", "opset"),
    [("TinySeg.mlpackage", 7, "CoreML6"), ("TinySegArray.mlpackage", 7, "CoreML6"), ("TinySeg18.mlpackage", 9, "CoreML8")],
)
def test_ml_programs_target_ios16_or_ios18(ct: ModuleType, name: str, spec_version: int, opset: str) -> None:
    """The iOS16 packages (spec 7) and TinySeg18.mlpackage, converted for iOS18 (spec 9)."""
    spec = ct.utils.load_spec(str(MODELS / name))
    assert spec.WhichOneof("Type") == "mlProgram"
    assert spec.specificationVersion == spec_version
    assert {f.opset for f in spec.mlProgram.functions.values()} == {opset}


def test_ios18_package_is_the_ios16_image_model_retargeted(ct: ModuleType) -> None:
    """Same network, signature, descriptions and fp16 weights as TinySeg.mlpackage."""
    ios16 = ct.utils.load_spec(str(MODELS / "TinySeg.mlpackage"))
    ios18 = ct.utils.load_spec(str(MODELS / "TinySeg18.mlpackage"))
    assert ios18.description.input == ios16.description.input
    assert ios18.description.output == ios16.description.output
    assert "iOS18" in ios18.description.metadata.shortDescription
    assert "conversion_date" not in str(dict(ios18.description.metadata.userDefined))
    weights = "Data/com.apple.CoreML/weights/weight.bin"
    assert (MODELS / "TinySeg18.mlpackage" / weights).read_bytes() == (MODELS / "TinySeg.mlpackage" / weights).read_bytes()


@pytest.mark.parametrize("name", ARRAY_MODELS)
def test_array_models_take_and_return_float32_multiarrays(ct: ModuleType, name: str) -> None:
    from coremltools.proto import FeatureTypes_pb2

    spec = ct.utils.load_spec(str(MODELS / name))
    (inp,), (out,) = spec.description.input, spec.description.output
    float32 = FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    assert inp.name == "input" and inp.type.WhichOneof("Type") == "multiArrayType"
    assert list(inp.type.multiArrayType.shape) == [1, 3, INPUT_SIZE, INPUT_SIZE]
    assert inp.type.multiArrayType.dataType == float32
    assert out.name == "mask" and out.type.WhichOneof("Type") == "multiArrayType"
    assert out.type.multiArrayType.dataType == float32


def test_ml_programs_cover_fp16_and_fp32_weights(ct: ModuleType) -> None:
    """TinySeg.mlpackage keeps fp16 weights, TinySegArray.mlpackage fp32 ones."""

    def weight_bytes(name: str) -> int:
        return _size(MODELS / name / "Data" / "com.apple.CoreML" / "weights")

    assert weight_bytes("TinySegArray.mlpackage") > 1.8 * weight_bytes("TinySeg.mlpackage")


# --- PyTorch weights ----------------------------------------------------------------------------


def test_metrics_record_a_good_uncompressed_model() -> None:
    metrics = json.loads((MODELS / "tinyseg_metrics.json").read_text())
    assert metrics["iou_whole_set"] >= 0.9
    assert metrics["iou_mean_per_image"] >= 0.85
    assert metrics["golden_images"] == len(_image_paths())
    assert {"torch_version", "coremltools_version", "parameter_count"} <= set(metrics)


def test_tinyseg_weights_segment_golden_images(make_fixtures: ModuleType) -> None:
    import torch

    net = make_fixtures.TinySeg()
    net.load_state_dict(torch.load(MODELS / "tinyseg.pt", map_location="cpu", weights_only=True))
    net.eval()
    assert sum(p.numel() for p in net.parameters()) == json.loads((MODELS / "tinyseg_metrics.json").read_text())[
        "parameter_count"
    ]
    inter = union = 0
    # Include EXIF-oriented images: the protocol transposes them first.
    picks = [p for p in _image_paths() if _orientation(p) != 1][:2] + _image_paths()[:3]
    for image_path in picks:
        image = _upright(image_path)
        small = image.resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.LANCZOS)
        x = torch.from_numpy((np.asarray(small, dtype=np.float32) / 255.0 - 0.5).transpose(2, 0, 1).copy())[None]
        with torch.no_grad():
            prob = torch.sigmoid(net(x))[0, 0].numpy()
        full = np.asarray(Image.fromarray(prob).resize(image.size, Image.Resampling.BILINEAR))
        with Image.open(_mask_for(image_path)) as mask:
            truth = np.asarray(mask) > 127
        pred = full > 0.5
        inter += int((pred & truth).sum())
        union += int((pred | truth).sum())
    assert inter / union >= 0.85
