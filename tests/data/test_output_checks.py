"""NaN or infinity in a model output is an error naming the model, output, image and count (issue 10, bug 3)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pytest_coreml_quality.dataset import Dataset
from pytest_coreml_quality.evaluate import Evaluator
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.output_checks import NonFiniteOutputError, require_finite
from pytest_coreml_quality.preprocess import PreprocessSettings, Preprocessor


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, nn_model_builder) -> dict[str, Model]:
    d = tmp_path_factory.mktemp("nan_models")
    return {
        "array": Model.open(nn_model_builder(d / "arr.mlmodel", size=(4, 4))),
        "image": Model.open(nn_model_builder(d / "img.mlmodel", size=(4, 4), image_output=True, color="GRAYSCALE")),
    }


def _with_bad_values(nans: int, infs: int) -> np.ndarray:
    arr = np.full((1, 1, 4, 4), 0.25, dtype=np.float32)
    flat = arr.reshape(-1)
    flat[:nans] = np.nan
    flat[nans : nans + infs] = np.inf
    return arr


@pytest.mark.parametrize("kind", ["prob", "logits"])
def test_multiarray_output_with_nan_is_an_error_naming_everything(models: dict[str, Model], kind: str) -> None:
    pre = Preprocessor(models["array"], PreprocessSettings(mask=kind))
    with pytest.raises(NonFiniteOutputError) as info:
        pre.mask_from({"mask": _with_bad_values(3, 2)}, (4, 4), image="cat_01")
    text = str(info.value)
    assert "arr.mlmodel" in text and "'mask'" in text and "'cat_01'" in text
    assert "3 NaN and 2 infinite value(s) out of 16" in text


def test_logits_with_only_infinities_are_an_error(models: dict[str, Model]) -> None:
    # A sigmoid would turn +inf into a plausible 1.0: the raw output is what must be finite.
    pre = Preprocessor(models["array"], PreprocessSettings(mask="logits"))
    with pytest.raises(NonFiniteOutputError, match=r"1 infinite value\(s\) out of 16 for image 'x'"):
        pre.mask_from({"mask": _with_bad_values(0, 1)}, (4, 4), image="x")


def test_float_image_output_with_nan_is_an_error(models: dict[str, Model]) -> None:
    pixels = np.full((4, 4), 128.0, dtype=np.float32)
    pixels[0, :2] = np.nan
    with pytest.raises(NonFiniteOutputError, match=r"'mask' of model img.mlmodel has 2 NaN value\(s\) out of 16 for image 'p'"):
        Preprocessor(models["image"]).mask_from({"mask": Image.fromarray(pixels, "F")}, (4, 4), image="p")


def test_finite_outputs_pass_and_integers_are_not_inspected(models: dict[str, Model]) -> None:
    require_finite(np.zeros((2, 2), np.uint8), model=models["array"], output="mask")
    mask = Preprocessor(models["array"]).mask_from({"mask": _with_bad_values(0, 0)}, (4, 4))
    assert np.allclose(mask, 0.25)


class NanPredictor:
    """A fake model whose mask output is NaN for one chosen image (recognised by its mean colour)."""

    backend_name = "nan-fake"

    def __init__(self, model: Model, bad_mean: float) -> None:
        self.model = model
        self.bad_mean = bad_mean

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        arr = np.asarray(inputs["img"], dtype=np.float32)
        out = np.full((1, 1, 4, 4), 0.5, dtype=np.float32)
        if abs(float(arr.mean()) - self.bad_mean) < 1:
            out[..., 0, :] = np.nan
        return {"mask": out}


def test_nan_from_a_model_fails_the_evaluation_and_never_reaches_the_cache(
    models: dict[str, Model], tmp_path: Path
) -> None:
    root = tmp_path / "golden"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name, value in (("good", 40), ("bad", 200)):
        Image.new("RGB", (4, 4), (value,) * 3).save(root / "images" / f"{name}.png")
        Image.new("L", (4, 4), 255).save(root / "masks" / f"{name}.png")
    evaluator = Evaluator(Dataset.open(root), cache_dir=tmp_path / "cache")
    result = evaluator.evaluate(NanPredictor(models["array"], bad_mean=200))
    with pytest.raises(NonFiniteOutputError, match=r"4 NaN value\(s\) out of 16 for image 'bad'"):
        result.summary
    stored = sorted((tmp_path / "cache").rglob("*.mask"))
    for path in stored:
        assert np.isfinite(np.load(path)).all()


def test_image_output_of_a_model_emitting_nan_is_an_error_not_black_pixels(
    models: dict[str, Model], tmp_path: Path
) -> None:
    # The onnx runtime rounds image outputs to 8-bit pixels, as Core ML does: NaN would become 0.
    import coremltools as ct

    from pytest_coreml_quality.runtime.base import RuntimeOptions
    from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend

    spec = type(models["image"].spec)()
    spec.CopyFrom(models["image"].spec)  # the module's model stays as it was
    spec.neuralNetwork.layers[0].convolution.weights.floatValue[0] = float("nan")
    path = tmp_path / "NanNet.mlmodel"
    ct.utils.save_spec(spec, str(path))
    model = Model.open(path)
    root = tmp_path / "golden"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.new("RGB", (4, 4), (90, 90, 90)).save(root / "images" / "only.png")
    Image.new("L", (4, 4), 255).save(root / "masks" / "only.png")
    result = Evaluator(Dataset.open(root), cache_dir=tmp_path / "cache").evaluate(
        backend=OnnxBackend(), model=model, options=RuntimeOptions(cache_dir=tmp_path / "cache" / "compiled")
    )
    with pytest.raises(NonFiniteOutputError) as info:
        result.summary
    assert str(info.value).startswith(f"{path}: field 'mask': output 'mask' of model NanNet.mlmodel has 16 NaN value(s) out of 16 for image 'only'")
    assert not list((tmp_path / "cache" / "predictions").rglob("*.mask"))
