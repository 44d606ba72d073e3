"""Recipes applied to already-compressed models: detected, re-quantized where fewer bits apply, and said."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pytest_coreml_quality.model import Model
from pytest_coreml_quality.variants import build_variant, parse_recipe
from pytest_coreml_quality.variants.build import build_recipe
from pytest_coreml_quality.variants.nn_fast_quantize import pack_bits, quantize_file
from pytest_coreml_quality.variants.nn_requantize import dequantize_above, unpack_bits
from pytest_coreml_quality.variants.unchanged import compression_note, weight_encodings
from tests.variants.conftest import nn_weights, quiet

# 4 convs of (3, 32, 64, 64, 1) channels: 55_361 weights (biases included).
PARAMS = 3 * 32 * 9 + 32 + 32 * 64 * 9 + 64 + 64 * 64 * 9 + 64 + 64 * 9 + 1


@pytest.fixture(scope="session")
def quantized_models(nn_model: Model, models_dir: Path) -> dict[str, Model]:
    """The tiny float model already stored as 8-bit linear, 8-bit k-means LUT and fp16."""
    import coremltools as ct
    from coremltools.models.neural_network import quantization_utils

    out = {"float": nn_model}
    with quiet():
        float_model = ct.models.MLModel(str(nn_model.path), skip_model_load=True)
        for name, nbits in (("linear8", 8), ("fp16", 16)):
            path = models_dir / f"Tiny-{name}.mlmodel"
            quantization_utils.quantize_weights(float_model, nbits=nbits, quantization_mode="linear").save(str(path))
            out[name] = Model.open(path)
    # coremltools 9's quantize_weights cannot store a k-means table (see nn_fast_quantize); the
    # fast path writes the bytes it would.
    quantize_file(nn_model.path, models_dir / "Tiny-lut8.mlmodel", 8, "kmeans_lut")
    out["lut8"] = Model.open(models_dir / "Tiny-lut8.mlmodel")
    return out


def test_weight_encodings_of_the_quantized_models(quantized_models: dict[str, Model]) -> None:
    assert weight_encodings(quantized_models["float"].spec) == {"float32": PARAMS}
    assert weight_encodings(quantized_models["linear8"].spec) == {"8-bit (linear)": PARAMS}
    assert weight_encodings(quantized_models["lut8"].spec) == {"8-bit (LUT)": PARAMS}
    assert weight_encodings(quantized_models["fp16"].spec) == {"fp16": PARAMS}


@pytest.mark.parametrize(
    ("model", "recipe", "note"),
    [
        ("linear8", "q8", "q8: no change, weights already 8-bit (linear)"),
        ("lut8", "q8", "q8: no change, weights already 8-bit (LUT)"),
        ("lut8", "q8-lut", "q8-lut: no change, weights already 8-bit (LUT)"),
        ("lut8", "fp16", "fp16: no change, weights already 8-bit (LUT)"),
        ("fp16", "fp16", "fp16: no change, weights already fp16"),
        ("linear8", "fp16", "fp16: no change, weights already 8-bit (linear)"),
    ],
)
def test_a_recipe_that_compresses_nothing_says_so(
    quantized_models: dict[str, Model], tmp_path: Path, model: str, recipe: str, note: str
) -> None:
    base = quantized_models[model]
    variant = build_variant(base, recipe, tmp_path)
    assert variant.unchanged is True
    assert variant.note == note
    assert variant.ratio == pytest.approx(1.0, abs=0.01)
    # A cache hit reads the finding back from the manifest.
    again = build_variant(base, recipe, tmp_path)
    assert again.cached and (again.unchanged, again.note) == (True, note)


@pytest.mark.parametrize("recipe", ["q8", "q4", "fp16", "q4-lut"])
def test_a_float_model_gets_no_note(quantized_models: dict[str, Model], tmp_path: Path, recipe: str) -> None:
    variant = build_variant(quantized_models["float"], recipe, tmp_path)
    assert (variant.unchanged, variant.note) == (False, "")
    assert variant.ratio < 0.6


@pytest.mark.parametrize(
    ("model", "recipe", "bits", "before"),
    [("lut8", "q4", 4, "8-bit (LUT)"), ("linear8", "q4", 4, "8-bit (linear)"), ("fp16", "q8", 8, "fp16"), ("lut8", "q2-lut", 2, "8-bit (LUT)")],
)
def test_fewer_bits_re_quantize_already_quantized_weights(
    quantized_models: dict[str, Model], tmp_path: Path, model: str, recipe: str, bits: int, before: str
) -> None:
    base = quantized_models[model]
    variant = build_variant(base, recipe, tmp_path)
    assert variant.unchanged is False
    assert variant.note == f"{recipe}: weights already {before} were dequantized, then re-quantized to {bits}-bit"
    assert bits <= variant.bits_per_weight < bits + 1.5
    assert variant.size_bytes < 0.7 * base.size_bytes
    # The re-quantized weights approximate the base's own (dequantized) weights.
    with quiet():
        original, got = nn_weights(base.path), nn_weights(variant.path)
    assert got.keys() == original.keys()
    for key, values in original.items():
        spread = float(values.max() - values.min())
        assert np.abs(got[key] - values).max() <= spread / ((1 << bits) - 1) + 1e-6, key


def test_both_build_paths_re_quantize_to_the_same_bytes(quantized_models: dict[str, Model], tmp_path: Path) -> None:
    base = quantized_models["lut8"]
    fast, slow = tmp_path / "fast.mlmodel", tmp_path / "slow.mlmodel"
    assert build_recipe(base, parse_recipe("q4"), fast) == "fast"
    assert build_recipe(base, parse_recipe("q4"), slow, fast_nn=False) == "coremltools"
    assert fast.read_bytes() == slow.read_bytes()


def test_dequantize_above_restores_the_weights_and_leaves_fewer_bits_alone(quantized_models: dict[str, Model]) -> None:
    spec = type(quantized_models["lut8"].spec)()
    spec.CopyFrom(quantized_models["lut8"].spec)
    assert dequantize_above(spec, 8) == {}  # 8-bit is not above 8 bits
    assert weight_encodings(spec) == {"8-bit (LUT)": PARAMS}
    assert dequantize_above(spec, 4) == {"8-bit (LUT)": PARAMS}
    assert weight_encodings(spec) == {"float32": PARAMS}
    with quiet():
        expected = nn_weights(quantized_models["lut8"].path)
    conv = spec.neuralNetwork.layers[2].convolution
    np.testing.assert_array_equal(np.array(conv.weights.floatValue, dtype=np.float32), expected[(spec.neuralNetwork.layers[2].name, "weights")].ravel())


@pytest.mark.parametrize("nbits", [1, 2, 3, 4, 5, 6, 7, 8])
def test_unpack_bits_inverts_pack_bits(nbits: int) -> None:
    values = np.random.default_rng(nbits).integers(0, 1 << nbits, size=37)
    np.testing.assert_array_equal(unpack_bits(pack_bits(values, nbits), nbits, values.size), values)


def test_a_lookup_table_per_channel_is_read_per_channel() -> None:
    from coremltools.proto import NeuralNetwork_pb2

    wp = NeuralNetwork_pb2.WeightParams()
    wp.quantization.numberOfBits = 1
    wp.quantization.lookupTableQuantization.floatValue.extend([0.0, 1.0, 10.0, 20.0])  # two channels of two levels
    wp.rawValue = pack_bits(np.array([1, 0, 0, 1]), 1)
    from pytest_coreml_quality.variants.nn_requantize import dequantize_weights

    np.testing.assert_array_equal(dequantize_weights(wp, (2, 2), 0), [[1.0, 0.0], [10.0, 20.0]])


# --- ML Programs: coremltools.optimize.coreml skips compressed weights ---------------------


def test_ml_program_recipe_on_an_already_quantized_program(mlprogram_model: Model, tmp_path: Path) -> None:
    int8 = build_variant(mlprogram_model, "int8", tmp_path)
    assert (int8.unchanged, int8.note) == (False, "")
    again = build_variant(int8.open(), "pal4-uniform", tmp_path)
    assert again.unchanged is True
    assert again.note.startswith("pal4-uniform: no change, weights already linear-quantized")
    assert "decompress_weights()" in again.note


def test_joint_compression_on_an_already_pruned_program_is_not_called_unchanged(mlprogram_model: Model, tmp_path: Path) -> None:
    """Found on an iOS18 program shipped pruned: prune50+pal4 palettized its sparse weights
    (smaller file, drift > 0) and was reported 'no change, weights already sparse'."""
    pruned = build_variant(mlprogram_model, "prune50", tmp_path)
    joint = build_variant(pruned.open(), "prune50+pal4", tmp_path)
    assert joint.open().size_bytes < pruned.open().size_bytes  # it did compress
    assert (joint.unchanged, joint.note) == (False, "")
    before, after = weight_encodings(pruned.open().spec), weight_encodings(joint.open().spec)
    assert after["sparse, palettized"] == before["sparse"] and "sparse" not in after
    # int8 alone on sparse weights is skipped by coremltools: that stays 'no change'
    assert build_variant(pruned.open(), "int8", tmp_path).note.startswith("int8: no change, weights already sparse")


# --- the wording ----------------------------------------------------------------------------


def test_note_wording_for_partial_and_empty_compressions() -> None:
    q8 = parse_recipe("q8")
    # A few float32 biases compressed next to 8-bit LUT weights: mostly unchanged.
    partial = compression_note(q8, {"8-bit (LUT)": 900, "float32": 100}, {"8-bit (LUT)": 900, "8-bit (linear)": 100})
    assert partial.unchanged is False
    assert partial.note == "q8: only 10% of weights compressed, the rest already 8-bit (LUT)"
    mixed = compression_note(q8, {"8-bit (LUT)": 900, "fp16": 100}, {"8-bit (LUT)": 900, "fp16": 100})
    assert mixed.note == "q8: no change, weights already 8-bit (LUT) and fp16 (stored in a layout this tool cannot dequantize; quantize the float model to get 8-bit)"
    pal = parse_recipe("pal4")
    small = compression_note(pal, {"fp16": 500}, {"fp16": 500})
    assert small.note == "pal4: no change, no weight was compressed; coremltools skips tensors smaller than its weight_threshold"
    # Byte-identical files are unchanged whatever the encodings say.
    assert compression_note(q8, {"float32": 10}, {"8-bit (linear)": 10}, identical=True).unchanged is True
    assert compression_note(q8, {"float32": 10}, {"8-bit (linear)": 10}).note == ""


# --- end to end ---------------------------------------------------------------------------


@pytest.mark.usefixtures("plain_run_environment")
def test_the_run_table_and_json_say_what_a_recipe_changed(
    pytester: pytest.Pytester, quantized_models: dict[str, Model], tmp_path: Path
) -> None:
    out = tmp_path / "report.json"
    result = pytester.runpytest(
        f"--coreml-model={quantized_models['lut8'].path}", f"--coreml-model={quantized_models['float'].path}",
        "--coreml-variants=q8,q4", f"--coreml-cache-dir={tmp_path / 'cache'}", f"--coreml-report-json={out}",
        "-k", "size", "-p", "no:randomly",
    )  # fmt: skip
    result.assert_outcomes(passed=6)
    lines = result.stdout.lines
    notes = [line for line in lines if line.startswith("note: ")]
    assert notes[0] == "note: q8: no change, weights already 8-bit (LUT)"
    assert notes[1].startswith("note: q4: weights already 8-bit (LUT) were dequantized")
    assert len(notes) == 2  # the float model's variants compressed as expected: no note
    assert lines.index(notes[0]) > next(i for i, line in enumerate(lines) if line.startswith("q4 "))
    summary = json.loads(out.read_text())["summary"]
    lut8, fresh = summary["Tiny-lut8.mlmodel"], summary["Tiny.mlmodel"]
    assert (lut8["q8"]["unchanged"], lut8["q8"]["note"]) == (True, "q8: no change, weights already 8-bit (LUT)")
    assert lut8["q8"]["ratio"] == pytest.approx(1.0, abs=0.01)
    assert lut8["q4"]["unchanged"] is False and lut8["q4"]["ratio"] < 0.6
    assert {recipe: (v["unchanged"], v["note"]) for recipe, v in fresh.items()} == {
        "base": (None, ""), "q8": (False, ""), "q4": (False, ""),
    }  # fmt: skip
