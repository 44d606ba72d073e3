"""A W8A8 ML Program (int8 activations and weights) made on Linux from the vision zoo model
(see tests/runtime/w8a8.py): the onnx runtime translates it and stays within quantization
error of the float program."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch builds the ML Program test models (test-only dependency)")

from tests.runtime import mil_crosscheck, mil_zoo, w8a8

pytestmark = pytest.mark.filterwarnings("ignore")

SHAPE = (1, 3, 16, 16)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("w8a8")
    # fp16 compute precision: coremltools' activation passes write fp16 scales.
    fp = mil_zoo.convert(mil_zoo.make_module("vision"), SHAPE, root / "fp.mlpackage", precision="fp16", target="iOS17")
    calibration = {"input": mil_zoo.sample_input(SHAPE, seed=3)}
    return fp, w8a8.quantize_w8a8(fp, root / "w8a8.mlpackage", calibration)


def test_the_model_is_w8a8(models: tuple[Path, Path]) -> None:
    ops = mil_zoo.op_types(models[1])
    assert {"quantize", "dequantize", "constexpr_affine_dequantize", "conv"} <= ops


def test_w8a8_runs_within_quantization_error_of_the_float_model(models: tuple[Path, Path]) -> None:
    x = mil_zoo.sample_input(SHAPE, seed=4)  # not the calibration sample
    fp = mil_zoo.run(models[0], {"input": x})["output"]
    q = mil_zoo.run(models[1], {"input": x})["output"]
    assert q.shape == fp.shape
    assert not np.array_equal(q, fp)  # the quantization is applied...
    assert np.abs(q - fp).max() < 0.02  # ...and int8 steps stay small on a sigmoid output


def test_both_readers_translate_w8a8_alike(models: tuple[Path, Path]) -> None:
    mil_crosscheck.assert_same_translation(models[1])
