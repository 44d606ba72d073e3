"""Fixtures of the data tests: the committed golden set, tiny synthetic sets and models."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_coreml_quality.dataset import Dataset


@pytest.fixture(scope="session")
def golden_dir(fixtures_dir: Path) -> Path:
    path = fixtures_dir / "golden"
    if not (path / "images").is_dir():
        pytest.skip("fixtures/golden is missing: run fixtures/make_fixtures.py")
    return path


@pytest.fixture(scope="session")
def golden_set(golden_dir: Path) -> Dataset:
    """The committed golden set, decoded once for the whole session."""
    return Dataset.open(golden_dir)


def build_nn_model(
    path: Path,
    *,
    color: str = "RGB",
    size: tuple[int, int] = (32, 32),
    enumerated: list[tuple[int, int]] | None = None,
    size_range: tuple[tuple[int, int], tuple[int, int]] | None = None,
    image_input: bool = True,
    image_output: bool = False,
    extra_output: bool = False,
) -> Path:
    """Save a tiny NeuralNetwork ``.mlmodel`` (input ``img``, output ``mask``) with the given description.

    ``size`` is (width, height); ``enumerated`` a list of (width, height); ``size_range``
    ((wmin, wmax), (hmin, hmax)). Only the description matters to the preprocessing tests.
    """
    import warnings

    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import coremltools as ct
        from coremltools.models import datatypes
        from coremltools.models.neural_network import NeuralNetworkBuilder, flexible_shape_utils as fsu

    w, h = size
    channels = 1 if color == "GRAYSCALE" else 3
    outputs = [("mask", datatypes.Array(1, h, w))]
    if extra_output:
        outputs.append(("edges", datatypes.Array(1, h, w)))
    builder = NeuralNetworkBuilder([("img", datatypes.Array(channels, h, w))], outputs, disable_rank5_shape_mapping=True)
    weights = np.full((1, channels, 1, 1), 1.0 / channels, dtype=np.float32)
    for out_name, _ in outputs:
        builder.add_convolution(
            f"conv_{out_name}", kernel_channels=channels, output_channels=1, height=1, width=1, stride_height=1,
            stride_width=1, border_mode="valid", groups=1, W=weights.transpose(2, 3, 1, 0), b=None, has_bias=False,
            input_name="img", output_name=out_name,
        )
    if image_input:
        builder.set_pre_processing_parameters(
            image_input_names=["img"], is_bgr=color == "BGR", red_bias=-0.5, green_bias=-0.5, blue_bias=-0.5,
            gray_bias=-0.5, image_scale=1 / 255,
        )
    spec = builder.spec
    if image_output:
        out = spec.description.output[0].type
        out.imageType.width, out.imageType.height = w, h
        out.imageType.colorSpace = ct.proto.FeatureTypes_pb2.ImageFeatureType.GRAYSCALE
    if enumerated:
        fsu.add_enumerated_image_sizes(spec, "img", sizes=[fsu.NeuralNetworkImageSize(hh, ww) for ww, hh in enumerated])
    if size_range:
        (wmin, wmax), (hmin, hmax) = size_range
        rng = fsu.NeuralNetworkImageSizeRange()
        rng.add_width_range((wmin, wmax))
        rng.add_height_range((hmin, hmax))
        fsu.update_image_size_range(spec, "img", size_range=rng)
    ct.utils.save_spec(spec, str(path))
    return path


@pytest.fixture(scope="session")
def nn_model_builder():
    """:func:`build_nn_model`, as a fixture (test modules cannot import conftest by name)."""
    return build_nn_model
