"""iOS17 activation quantization (``quantize`` / ``dequantize``, the ops of W8A8 programs):
tiny programs built with coremltools' MIL builder, checked bit for bit against numpy
implementations of the op definitions' formulas, including rounding ties and clipping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch is the conv reference (test-only dependency)")

from pytest_coreml_quality.model import Model
from tests.runtime import mil_crosscheck, mil_zoo

pytestmark = pytest.mark.filterwarnings("ignore")

SHAPE = (1, 3, 16, 32)
# Per-axis parameters along the channel axis (1 / -3): powers of two make x / scale exact,
# so the inputs below land exactly on ties (k + 0.5); 0.1 is not exact (fp32 division).
AXIS_SCALE = np.array([0.25, 0.1, 0.125], dtype=np.float32)
AXIS_ZP_U8 = np.array([128, 100, 0], dtype=np.uint8)
WEIGHT = (np.arange(4 * 3 * 3 * 3, dtype=np.float32).reshape(4, 3, 3, 3) % 5 - 2) * 0.5  # exact sums
OUT_SCALE = np.array([0.5, 0.75, 0.25, 1.0], dtype=np.float32)
OUT_ZP = np.array([3, -4, 0, 10], dtype=np.int8)


def _inputs() -> np.ndarray:
    """Ties at every quarter step (x / 0.25 = k + 0.5), values far beyond the clip limits, noise."""
    rng = np.random.default_rng(5)
    halves = np.arange(-40, 40) + 0.5
    ties = np.concatenate([halves * 0.25, halves * 0.125, halves * 0.5, halves * 0.75]).astype(np.float32)
    far = np.array([-1000.0, -40.0, -33.0, 33.0, 40.0, 1000.0], dtype=np.float32)
    noise = rng.uniform(-20, 20, size=SHAPE[2] * SHAPE[3]).astype(np.float32)
    per_channel = SHAPE[2] * SHAPE[3]
    flat = np.concatenate([ties, far, noise])[:per_channel]
    return np.tile(flat.reshape(1, 1, -1), (1, SHAPE[1], 1)).reshape(SHAPE).copy()


def _quantize(x: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, low: int, high: int) -> np.ndarray:
    """MIL quantize: clip(round(x / scale) + zero_point), numpy rounding (half to even)."""
    q = np.around(x / scale)
    if zp is not None:
        q = q + zp.astype(np.float32)
    return np.clip(q, low, high)


def _dequantize(q: np.ndarray, scale: np.ndarray, zp: np.ndarray | None) -> np.ndarray:
    """MIL dequantize: scale * (input - zero_point)."""
    zp32 = np.float32(0) if zp is None else zp.astype(np.float32)
    return ((q.astype(np.float32) - zp32) * scale).astype(q.dtype if q.dtype == np.float16 else np.float32)


def _col(v: np.ndarray) -> np.ndarray:
    return v.reshape(1, -1, 1, 1)


def _reference(x: np.ndarray) -> dict[str, np.ndarray]:
    import torch

    out: dict[str, np.ndarray] = {}
    s = np.float32(0.25)
    out["tensor_int8"] = _dequantize(_quantize(x, s, np.int8(-3), -128, 127), s, np.int8(-3))
    out["tensor_int8_no_zp"] = _dequantize(_quantize(x, s, None, -128, 127), s, None)
    sc, zp = _col(AXIS_SCALE), _col(AXIS_ZP_U8)
    out["axis_uint8"] = _dequantize(_quantize(x, sc, zp, 0, 255), sc, zp)
    # fp16: the division, rounding and product happen in fp16 (numpy fp16 arithmetic).
    x16, sc16 = x.astype(np.float16), _col(AXIS_SCALE.astype(np.float16))
    out["axis_int8_fp16"] = _dequantize(_quantize(x16, sc16, None, -128, 127).astype(np.float16), sc16, None).astype(np.float32)
    # W8A8: quantized input -> dequantize -> conv -> quantize (per output channel) -> dequantize.
    a = _dequantize(_quantize(x, s, np.int8(-3), -128, 127), s, np.int8(-3))
    y = torch.nn.functional.conv2d(torch.from_numpy(a.astype(np.float64)), torch.from_numpy(WEIGHT.astype(np.float64)), padding=1)
    y32 = y.numpy().astype(np.float32)  # exact: quarter-step inputs, half-step weights
    so, zo = _col(OUT_SCALE), _col(OUT_ZP)
    out["w8a8_conv"] = _dequantize(_quantize(y32, so, zo, -128, 127), so, zo)
    return out


@pytest.fixture(scope="module")
def quant_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One iOS17 program with each case as an output (one conversion for the lot)."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=SHAPE)], opset_version=ct.target.iOS17)
    def prog(x: Any) -> Any:
        s = np.float32(0.25)
        q = mb.quantize(input=x, scale=s, zero_point=np.int8(-3), output_dtype="int8")
        a = mb.dequantize(input=q, scale=s, zero_point=np.int8(-3), name="tensor_int8")
        q0 = mb.quantize(input=x, scale=s, output_dtype="int8")
        b = mb.dequantize(input=q0, scale=s, name="tensor_int8_no_zp")
        qa = mb.quantize(input=x, scale=AXIS_SCALE, zero_point=AXIS_ZP_U8, axis=1, output_dtype="uint8")
        c = mb.dequantize(input=qa, scale=AXIS_SCALE, zero_point=AXIS_ZP_U8, axis=-3, name="axis_uint8")
        x16 = mb.cast(x=x, dtype="fp16")
        q16 = mb.quantize(input=x16, scale=AXIS_SCALE.astype(np.float16), axis=-3, output_dtype="int8")
        d16 = mb.dequantize(input=q16, scale=AXIS_SCALE.astype(np.float16), axis=1)
        d = mb.cast(x=d16, dtype="fp32", name="axis_int8_fp16")
        y = mb.conv(x=a, weight=WEIGHT, pad_type="same")
        qy = mb.quantize(input=y, scale=OUT_SCALE, zero_point=OUT_ZP, axis=1, output_dtype="int8")
        e = mb.dequantize(input=qy, scale=OUT_SCALE, zero_point=OUT_ZP, axis=1, name="w8a8_conv")
        return a, b, c, d, e

    return mil_zoo.save_program(prog, tmp_path_factory.mktemp("mil_quant") / "quant.mlpackage", target="iOS17")


def _run(path: Path, emulate_fp16: bool = False) -> dict[str, np.ndarray]:
    name = Model.open(path).inputs[0].name
    return mil_zoo.run(path, {name: _inputs()}, emulate_fp16=emulate_fp16)


def test_the_suite_has_the_quantization_ops(quant_suite: Path) -> None:
    assert {"quantize", "dequantize", "conv"} <= mil_zoo.op_types(quant_suite)


def test_the_inputs_hit_ties_and_clip_limits() -> None:
    # Guards the data the checks below rely on: rounding ties and both clip limits occur.
    x = _inputs()
    assert np.any(np.abs(x / np.float32(0.25)) % 1 == 0.5)
    q = _quantize(x, np.float32(0.25), np.int8(-3), -128, 127)
    assert q.min() == -128 and q.max() == 127
    # In fp16, the rounded quotient decides some integers differently from the fp32 one.
    x16, s16 = x.astype(np.float16), np.float16(0.1)
    assert np.any(np.around(x16 / s16) != np.around(x16.astype(np.float32) / np.float32(s16)))


@pytest.mark.parametrize("case", ["tensor_int8", "tensor_int8_no_zp", "axis_uint8", "axis_int8_fp16", "w8a8_conv"])
def test_quantize_dequantize_match_the_mil_formulas_exactly(quant_suite: Path, case: str) -> None:
    got = _run(quant_suite)[case]
    expected = _reference(_inputs())[case]
    if case == "axis_int8_fp16":
        # Outside the fp16 emulation the product stays float32; rounded, it is fp16's result.
        got = got.astype(np.float16).astype(np.float32)
    assert got.shape == expected.shape
    assert np.array_equal(got, expected), f"{case}: {np.sum(got != expected)} values differ"


def test_fp16_emulation_keeps_the_fp16_branch_exact(quant_suite: Path) -> None:
    got = _run(quant_suite, emulate_fp16=True)["axis_int8_fp16"]
    assert np.array_equal(got, _reference(_inputs())["axis_int8_fp16"])


def test_both_readers_translate_quantization_alike(quant_suite: Path) -> None:
    mil_crosscheck.assert_same_translation(quant_suite)
    mil_crosscheck.assert_same_translation(quant_suite, emulate_fp16=True)
