"""Preprocessing read from the model's own description, and postprocessing back to a mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pytest_coreml_quality.errors import CoreMLQualityError, ModelFormatError
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.preprocess import PreprocessError, PreprocessSettings, Preprocessor, resize_mask

PHOTO_SIZE = (60, 40)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, (PHOTO_SIZE[1], PHOTO_SIZE[0], 3), dtype=np.uint8), "RGB")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, nn_model_builder) -> dict[str, Model]:
    d = tmp_path_factory.mktemp("pre_models")
    specs = {
        "rgb": {},
        "bgr": {"color": "BGR"},
        "gray": {"color": "GRAYSCALE", "image_output": True},
        "enum": {"size": (32, 32), "enumerated": [(32, 32), (64, 48), (96, 96)]},
        "range": {"size": (32, 32), "size_range": ((16, 50), (16, -1))},
        "array": {"image_input": False, "size": (16, 8)},
        "two_outputs": {"extra_output": True},
    }
    return {name: Model.open(nn_model_builder(d / f"{name}.mlmodel", **kw)) for name, kw in specs.items()}


def _fixture_model(fixture_models_dir: Path, name: str) -> Model:
    path = fixture_models_dir / name
    if not path.exists():
        pytest.skip(f"fixtures/models/{name} is missing: run fixtures/make_fixtures.py")
    return Model.open(path)


def _column(*values: float) -> np.ndarray:
    """Per-channel values shaped to broadcast over (C, H, W)."""
    return np.array(values, dtype=np.float64)[:, None, None]


# --- inputs -----------------------------------------------------------------------------


def test_image_input_gets_the_resized_photo_without_scale_or_bias(models: dict[str, Model], photo: Image.Image) -> None:
    pre = Preprocessor(models["rgb"])
    (name, value), = pre.prepare(photo).items()
    assert name == "img"
    assert isinstance(value, Image.Image) and value.mode == "RGB" and value.size == (32, 32)
    # Exactly the LANCZOS resize: the runtime applies the model's scale 1/255 and bias -0.5 itself.
    expected = np.asarray(photo.resize((32, 32), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(np.asarray(value), expected)


def test_resample_filter_is_configurable(models: dict[str, Model], photo: Image.Image) -> None:
    pre = Preprocessor(models["rgb"], PreprocessSettings(resample="nearest"))
    value = pre.prepare(photo)["img"]
    np.testing.assert_array_equal(np.asarray(value), np.asarray(photo.resize((32, 32), Image.Resampling.NEAREST)))
    assert not np.array_equal(np.asarray(value), np.asarray(Preprocessor(models["rgb"]).prepare(photo)["img"]))


def test_bgr_input_still_gets_an_rgb_image(models: dict[str, Model], photo: Image.Image) -> None:
    # Core ML swaps the channels of a BGR input itself; swapping here too would undo it.
    assert models["bgr"].input("img").color_layout == "BGR"
    value = Preprocessor(models["bgr"]).prepare(photo)["img"]
    assert value.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(value), np.asarray(Preprocessor(models["rgb"]).prepare(photo)["img"]))


def test_grayscale_input_gets_a_grayscale_image(models: dict[str, Model], photo: Image.Image) -> None:
    value = Preprocessor(models["gray"]).prepare(photo)["img"]
    assert value.mode == "L" and value.size == (32, 32)


@pytest.mark.parametrize(
    ("policy", "photo_size", "expected"),
    [("default", (60, 40), (32, 32)), ("closest", (70, 50), (64, 48)), ("closest", (20, 20), (32, 32)), ("largest", (20, 20), (96, 96))],
)
def test_enumerated_sizes(models: dict[str, Model], policy: str, photo_size: tuple[int, int], expected: tuple[int, int]) -> None:
    pre = Preprocessor(models["enum"], PreprocessSettings(size_policy=policy))  # type: ignore[arg-type]
    assert pre.target_size(photo_size) == expected
    assert pre.prepare(Image.new("RGB", photo_size))["img"].size == expected


@pytest.mark.parametrize(
    ("policy", "photo_size", "expected"),
    [("default", (60, 40), (32, 32)), ("closest", (60, 40), (50, 40)), ("closest", (10, 400), (16, 400)), ("largest", (20, 20), (50, 20))],
)
def test_range_flexible_sizes(models: dict[str, Model], policy: str, photo_size: tuple[int, int], expected: tuple[int, int]) -> None:
    # Width 16..50, height 16..unbounded: "largest" cannot pick an unbounded height, so it clamps.
    pre = Preprocessor(models["range"], PreprocessSettings(size_policy=policy))  # type: ignore[arg-type]
    assert pre.target_size(photo_size) == expected


@pytest.mark.parametrize(
    ("normalization", "channel_order", "expected"),
    [
        ("0..1", "RGB", lambda px: px / 255),
        ("-0.5..0.5", "RGB", lambda px: px / 255 - 0.5),
        ("-1..1", "RGB", lambda px: (px / 255 - 0.5) / 0.5),
        ("0..255", "RGB", lambda px: px),
        ("imagenet", "RGB", lambda px: (px / 255 - _column(0.485, 0.456, 0.406)) / _column(0.229, 0.224, 0.225)),
        # Explicit statistics are given in RGB order and follow the channels to BGR.
        ("mean=0.1,0.2,0.3;std=0.5,0.25,2", "BGR", lambda px: ((px / 255)[::-1] - _column(0.3, 0.2, 0.1)) / _column(2, 0.25, 0.5)),
    ],
)
def test_multiarray_input_normalisation(
    models: dict[str, Model], photo: Image.Image, normalization: str, channel_order: str, expected
) -> None:
    settings = PreprocessSettings(normalization=normalization, channel_order=channel_order)
    arr = Preprocessor(models["array"], settings).prepare(photo)["img"]
    assert arr.dtype == np.float32 and arr.shape == (3, 8, 16)  # the declared (C, H, W)
    pixels = np.asarray(photo.resize((16, 8), Image.Resampling.LANCZOS), dtype=np.float64).transpose(2, 0, 1)
    np.testing.assert_allclose(arr, expected(pixels), rtol=1e-6, atol=1e-6)


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(PreprocessError, match="resample"):
        PreprocessSettings(resample="sinc")
    with pytest.raises(PreprocessError, match="normalization"):
        PreprocessSettings(normalization="-2..2")
    with pytest.raises(PreprocessError, match="size_policy"):
        PreprocessSettings(size_policy="smallest")  # type: ignore[arg-type]
    with pytest.raises(CoreMLQualityError, match="--coreml-mask"):
        PreprocessSettings(mask="percent")
    assert PreprocessSettings().cache_key() != PreprocessSettings(resample="bicubic").cache_key()


# --- outputs ----------------------------------------------------------------------------


def test_ambiguous_output_lists_the_outputs(models: dict[str, Model]) -> None:
    with pytest.raises(PreprocessError) as info:
        Preprocessor(models["two_outputs"])
    text = str(info.value)
    assert "two_outputs.mlmodel" in text and "'mask'" in text and "'edges'" in text and "--coreml-output" in text
    assert Preprocessor(models["two_outputs"], PreprocessSettings(output_name="edges")).output.name == "edges"
    with pytest.raises(ModelFormatError, match="'mask', 'edges'"):
        Preprocessor(models["two_outputs"], PreprocessSettings(output_name="nope"))


def test_grayscale_image_output_is_divided_by_255_and_resized_back(models: dict[str, Model]) -> None:
    pre = Preprocessor(models["gray"])
    out = np.zeros((32, 32), dtype=np.uint8)
    out[:, 16:] = 255
    out[0, 0] = 51
    mask = pre.mask_from({"mask": Image.fromarray(out, "L")}, (32, 32))
    assert mask.dtype == np.float32 and mask[0, 0] == pytest.approx(0.2) and mask[5, 20] == 1.0
    big = pre.mask_from({"mask": Image.fromarray(out, "L")}, (64, 48))
    assert big.shape == (48, 64)
    # Bilinear on floats: the edge gets values between 0 and 1 that are not 8-bit levels.
    edge = big[10, 30:34]
    assert edge.min() < 0.5 < edge.max()
    assert any(abs(v * 255 - round(v * 255)) > 1e-3 for v in edge)


def test_grayscale_image_output_read_as_class_indices(models: dict[str, Model]) -> None:
    # With class:K its pixels are classes; divided by 255 they scored as an empty mask.
    pre = Preprocessor(models["gray"], PreprocessSettings(mask="class:2"))
    out = np.zeros((32, 32), dtype=np.uint8)
    out[:, 16:] = 2
    out[:8, :8] = 1
    mask = pre.mask_from({"mask": Image.fromarray(out, "L")}, (32, 32))
    np.testing.assert_array_equal(mask, (out == 2).astype(np.float32))


def test_multiarray_probabilities_and_logits(models: dict[str, Model]) -> None:
    probs = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(1, 1, 32, 32)
    mask = Preprocessor(models["rgb"]).mask_from({"mask": probs}, (32, 32))
    np.testing.assert_allclose(mask, probs[0, 0], atol=1e-7)
    logits = np.array([[[[-20.0, 0.0], [2.0, 20.0]]]])
    with pytest.raises(CoreMLQualityError) as info:
        Preprocessor(models["rgb"]).mask_from({"mask": logits}, (2, 2))
    assert "--coreml-mask=logits" in str(info.value) and "'mask'" in str(info.value)
    sig = Preprocessor(models["rgb"], PreprocessSettings(mask="logits")).mask_from({"mask": logits}, (2, 2))
    np.testing.assert_allclose(sig, [[1 / (1 + np.exp(20)), 0.5], [1 / (1 + np.exp(-2)), 1 / (1 + np.exp(-20))]], rtol=1e-6)


def test_three_channel_output_is_not_guessed(models: dict[str, Model]) -> None:
    with pytest.raises(CoreMLQualityError, match=r"\(1, 3, 4, 4\)"):
        Preprocessor(models["rgb"]).mask_from({"mask": np.zeros((1, 3, 4, 4))}, (4, 4))


def test_resize_mask_keeps_range_and_size() -> None:
    m = resize_mask(np.array([[0.0, 1.0]], dtype=np.float32), (5, 3))
    assert m.shape == (3, 5) and m.min() >= 0 and m.max() <= 1


# --- the fixture models -------------------------------------------------------------------


def test_fixture_tinyseg_description(fixture_models_dir: Path, photo: Image.Image) -> None:
    for name in ("TinySeg.mlmodel", "TinySeg.mlpackage"):
        model = _fixture_model(fixture_models_dir, name)
        pre = Preprocessor(model)
        assert pre.input.name == "x_1" and pre.output.name == "activation_out"
        value = pre.prepare(photo)["x_1"]
        assert value.mode == "RGB" and value.size == (128, 128)
        np.testing.assert_array_equal(np.asarray(value), np.asarray(photo.resize((128, 128), Image.Resampling.LANCZOS)))


def test_fixture_tinyseg_array_description(fixture_models_dir: Path, photo: Image.Image) -> None:
    model = _fixture_model(fixture_models_dir, "TinySegArray.mlmodel")
    pre = Preprocessor(model, PreprocessSettings(normalization="-0.5..0.5"))
    assert pre.input.name == "input" and pre.output.name == "mask"
    arr = pre.prepare(photo)["input"]
    assert arr.shape == (1, 3, 128, 128) and arr.dtype == np.float32
    assert -0.5 <= arr.min() and arr.max() <= 0.5


# --- the published protocol: stretched predictions -------------------------------------------


def _hand_made_predictions() -> list[tuple[np.ndarray, np.ndarray]]:
    """(uint8 prediction, uint8 ground truth) pairs whose range is not 0..255."""
    yy, xx = np.mgrid[0:32, 0:32]
    gt = np.where((yy - 14) ** 2 + (xx - 18) ** 2 < 81, 255, 0).astype(np.uint8)
    ramp = (40 + 5 * xx).astype(np.uint8)  # 40..195
    low = np.where(gt > 0, 90, 30).astype(np.uint8)  # a timid model: never above 90
    noisy = np.clip(gt * 0.6 + np.random.default_rng(5).normal(50, 20, gt.shape), 10, 220).astype(np.uint8)
    return [(ramp, gt), (low, gt), (noisy, gt)]


def test_normalize_predictions_matches_pysodmetrics(models: dict[str, Model]) -> None:
    sod = pytest.importorskip("py_sod_metrics")
    from pytest_coreml_quality.metrics.scores import score_mask

    stretched = Preprocessor(models["gray"], PreprocessSettings(normalize_predictions=True))
    raw = Preprocessor(models["gray"])
    for pred, gt in _hand_made_predictions():
        ours = stretched.mask_from({"mask": Image.fromarray(pred, "L")}, (32, 32))
        theirs, gt_bool = sod.utils.prepare_data(pred, gt)
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
        mae, sm = sod.MAE(), sod.Smeasure()
        mae.step(pred, gt)
        sm.step(pred, gt)
        scores = score_mask(ours, gt_bool.astype(np.float32))
        assert scores["mae"] == pytest.approx(mae.get_results()["mae"], abs=1e-6)
        assert scores["s"] == pytest.approx(sm.get_results()["sm"], abs=1e-5)
        # Without the option the model's own numbers are scored, which differ here.
        plain = raw.mask_from({"mask": Image.fromarray(pred, "L")}, (32, 32))
        assert score_mask(plain, gt_bool.astype(np.float32))["mae"] != pytest.approx(mae.get_results()["mae"], abs=1e-3)


def test_normalize_predictions_is_part_of_the_cache_key() -> None:
    assert PreprocessSettings().cache_key() != PreprocessSettings(normalize_predictions=True).cache_key()
    assert PreprocessSettings().cache_key() != PreprocessSettings(mask="channel:1").cache_key()


# --- multiarray input layouts ---------------------------------------------------------------


def _array_input_model(path: Path, shape: tuple[int, ...]) -> Model:
    import coremltools as ct
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    builder = NeuralNetworkBuilder([("x", datatypes.Array(*shape))], [("y", datatypes.Array(*shape))], disable_rank5_shape_mapping=True)
    builder.add_activation("id", "LINEAR", "x", "y", params=[1.0, 0.0])
    ct.utils.save_spec(builder.spec, str(path))
    return Model.open(path)


def test_nhwc_input_gets_the_nchw_array_transposed(tmp_path: Path, photo: Image.Image) -> None:
    nchw = Preprocessor(_array_input_model(tmp_path / "nchw.mlmodel", (1, 3, 8, 16)), PreprocessSettings(channel_order="BGR"))
    nhwc = Preprocessor(_array_input_model(tmp_path / "nhwc.mlmodel", (1, 8, 16, 3)), PreprocessSettings(channel_order="BGR"))
    assert (nchw.input_layout, nhwc.input_layout) == ("NCHW", "NHWC")
    a, b = nchw.prepare(photo)["x"], nhwc.prepare(photo)["x"]
    assert b.shape == (1, 8, 16, 3)
    np.testing.assert_array_equal(b, a.transpose(0, 2, 3, 1))
    hwc = Preprocessor(_array_input_model(tmp_path / "hwc.mlmodel", (8, 16, 3)))
    assert hwc.input_layout == "NHWC" and hwc.target_size(photo.size) == (16, 8)


def test_ambiguous_input_layout_asks_for_the_option(tmp_path: Path, photo: Image.Image) -> None:
    model = _array_input_model(tmp_path / "cube.mlmodel", (1, 3, 3, 3))
    with pytest.raises(PreprocessError, match=r"field '--coreml-input-layout': .*\(1, 3, 3, 3\): its channels may be first or last"):
        Preprocessor(model)
    pixels = np.asarray(photo.resize((3, 3), Image.Resampling.LANCZOS), dtype=np.float32) / 255
    np.testing.assert_allclose(Preprocessor(model, PreprocessSettings(input_layout="NHWC")).prepare(photo)["x"][0], pixels, atol=1e-6)
    with pytest.raises(CoreMLQualityError, match=r"not NHWC with 1 or 3 channels"):
        Preprocessor(_array_input_model(tmp_path / "chw.mlmodel", (1, 3, 8, 16)), PreprocessSettings(input_layout="NHWC"))
