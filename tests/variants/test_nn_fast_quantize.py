"""The vectorised NeuralNetwork path writes exactly the bytes ``quantize_weights`` saves."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from pytest_coreml_quality.model import Model
from pytest_coreml_quality.variants import build as build_module
from pytest_coreml_quality.variants import build_variant, parse_recipe
from pytest_coreml_quality.variants.nn_fast_quantize import NotCovered, fp16_file, fp16_spec, pack_bits, quantize_file, quantize_spec
from tests.variants.conftest import fixture_model, nn_weights, quiet
from tests.variants.tiny_models import save_nn_model


def coremltools_bytes(model_path: Path, nbits: int, mode: str, out: Path) -> bytes:
    """What coremltools' own ``quantize_weights(...).save()`` writes."""
    import coremltools as ct
    from coremltools.models.neural_network import quantization_utils

    with quiet():
        mlmodel = ct.models.MLModel(str(model_path), skip_model_load=True)
        quantization_utils.quantize_weights(mlmodel, nbits=nbits, quantization_mode=mode).save(str(out))
    return out.read_bytes()


def fast_bytes(model_path: Path, nbits: int, mode: str, out: Path) -> bytes:
    with quiet():
        quantize_file(model_path, out, nbits, mode)
    return out.read_bytes()


def assert_same_saved_model(ours: bytes, theirs: bytes) -> None:
    """Equal bytes, or equal up to the order of map entries (see the metadata test below).

    For a spec without multi-entry maps the sorted serialization is the raw one, so this
    is exact byte equality there.
    """
    from coremltools.proto import Model_pb2

    if ours == theirs:
        return
    a, b = Model_pb2.Model(), Model_pb2.Model()
    a.ParseFromString(ours)
    b.ParseFromString(theirs)
    assert len(ours) == len(theirs)
    assert a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


@pytest.mark.parametrize("nbits", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("length", [1, 7, 8, 9, 1000, 4099])
def test_pack_bits_matches_coremltools_packer(nbits: int, length: int) -> None:
    from coremltools.models.neural_network.quantization_utils import _convert_array_to_nbit_quantized_bytes

    values = np.random.default_rng(length * 10 + nbits).integers(0, 1 << nbits, size=length, dtype=np.uint8)
    assert pack_bits(values, nbits) == _convert_array_to_nbit_quantized_bytes(values, nbits).tobytes()


@pytest.mark.parametrize(
    ("nbits", "mode"),
    [(1, "linear"), (2, "linear"), (3, "linear"), (4, "linear"), (5, "linear"), (7, "linear"), (8, "linear"),
     (8, "linear_symmetric"), (2, "linear_lut"), (4, "linear_lut")],
)  # fmt: skip
def test_byte_identical_to_quantize_weights_on_the_tiny_model(nn_model: Model, tmp_path: Path, nbits: int, mode: str) -> None:
    ours = fast_bytes(nn_model.path, nbits, mode, tmp_path / "fast.mlmodel")
    theirs = coremltools_bytes(nn_model.path, nbits, mode, tmp_path / "ct.mlmodel")
    assert ours == theirs
    assert len(ours) < nn_model.size_bytes  # and it did quantize


def test_identical_with_metadata_maps_up_to_map_order(tmp_path: Path) -> None:
    # protobuf serializes map entries (metadata.userDefined) in hash-table order, which
    # depends on the process (seed and history): coremltools' own output is not
    # reproducible there. quantize_file repeats coremltools' parse/copy passes, so the
    # bytes usually match exactly; what must always match is the spec with maps sorted.
    import coremltools as ct

    path = save_nn_model(tmp_path / "Meta.mlmodel", channels=(3, 8, 1), size=8)
    spec = ct.utils.load_spec(str(path))
    for i in range(12):
        spec.description.metadata.userDefined[f"key{i}"] = f"value {i}"
    ct.utils.save_spec(spec, str(path))
    ours = fast_bytes(path, 4, "linear", tmp_path / "f.mlmodel")
    assert_same_saved_model(ours, coremltools_bytes(path, 4, "linear", tmp_path / "c.mlmodel"))


@pytest.mark.parametrize("name", ["TinySeg.mlmodel", "TinySegArray.mlmodel"])
@pytest.mark.parametrize("nbits", [4, 2])
def test_byte_identical_on_the_fixture_models(tmp_path: Path, name: str, nbits: int) -> None:
    model = fixture_model(name)  # converted by coremltools: three metadata map entries
    ours = fast_bytes(model.path, nbits, "linear", tmp_path / "f.mlmodel")
    assert_same_saved_model(ours, coremltools_bytes(model.path, nbits, "linear", tmp_path / "c.mlmodel"))


@pytest.fixture(scope="module")
def larger_nn_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 1.5M weights (6 MB): coremltools' packer needs 5-10 s at 4 bits here."""
    return save_nn_model(tmp_path_factory.mktemp("larger") / "Larger.mlmodel", channels=(3, 192, 320, 320, 1), size=16)


@pytest.mark.parametrize("nbits", [4, 2])
def test_byte_identical_on_a_larger_model(larger_nn_model: Path, tmp_path: Path, nbits: int) -> None:
    started = time.perf_counter()
    ours = fast_bytes(larger_nn_model, nbits, "linear", tmp_path / "fast.mlmodel")
    fast_seconds = time.perf_counter() - started
    theirs = coremltools_bytes(larger_nn_model, nbits, "linear", tmp_path / "ct.mlmodel")
    assert ours == theirs
    assert len(ours) < larger_nn_model.stat().st_size * (nbits + 1) / 32
    print(f"fast path {fast_seconds:.2f}s")  # speed is measured in benchmarks/bench_variants.py


def test_kmeans_lookup_tables_hold_the_dequantized_values(nn_model: Model, tmp_path: Path) -> None:
    # coremltools 9's own quantize_weights(kmeans_lut) fails with a TypeError (its k-means
    # returns a (8, 1) table), so there are no coremltools bytes to match; the fast path's
    # tables come from kmeans1d (ascending centres; quality vs coremltools in test_kmeans1d.py).
    import coremltools as ct

    spec = ct.utils.load_spec(str(nn_model.path))
    with quiet():
        quantize_spec(spec, 3, "kmeans_lut")
    luts = {}
    for layer in spec.neuralNetwork.layers:
        if layer.WhichOneof("layer") != "convolution":
            continue
        wp = layer.convolution.weights
        luts[layer.name] = np.array(wp.quantization.lookupTableQuantization.floatValue, dtype=np.float32)
        assert wp.quantization.numberOfBits == 3 and len(luts[layer.name]) == 8 and len(wp.floatValue) == 0
        assert np.all(np.diff(luts[layer.name]) > 0)  # kmeans1d's sorted centres, not scikit-learn's order
    ct.utils.save_spec(spec, str(tmp_path / "k.mlmodel"))
    base, got = nn_weights(nn_model.path), nn_weights(tmp_path / "k.mlmodel")
    for (layer, field), values in got.items():
        if field == "weights":
            assert np.isin(values, luts[layer]).all()  # every weight is a table entry
        # k-means centres fit the weights at least as well on average as an 8-level linear grid.
        original = base[(layer, field)]
        span = original.max() - original.min()
        assert np.abs(values - original).mean() <= span / 28


def test_uncovered_layers_fall_back_to_coremltools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import coremltools as ct
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    rng = np.random.default_rng(1)
    builder = NeuralNetworkBuilder([("x", datatypes.Array(4))], [("y", None)], disable_rank5_shape_mapping=True)
    w = [rng.standard_normal((8, 4)).astype(np.float32) for _ in range(3)]
    r = [rng.standard_normal((8, 8)).astype(np.float32) for _ in range(3)]
    b = [rng.standard_normal(8).astype(np.float32) for _ in range(3)]
    builder.add_gru("gru", W_h=r, W_x=w, b=b, hidden_size=8, input_size=4, input_names=["x"], output_names=["y"])
    path = tmp_path / "Gru.mlmodel"
    ct.utils.save_spec(builder.spec, str(path))
    with pytest.raises(NotCovered, match="gru"):
        quantize_spec(ct.utils.load_spec(str(path)), 4, "linear")

    calls = []
    original = build_module._build_neural_network

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        route = original(*args, **kwargs)
        calls.append(route)
        return route

    monkeypatch.setattr(build_module, "_build_neural_network", spy)
    model = Model.open(path)
    variant = build_variant(model, parse_recipe("q4"), tmp_path / "cache")
    assert calls == ["coremltools"]
    assert variant.size_bytes < model.size_bytes


def coremltools_fp16_bytes(model_path: Path, out: Path) -> bytes:
    """What the coremltools route of the fp16 recipe writes (quantize_weights(16), save, reproducible rewrite)."""
    from pytest_coreml_quality.variants.reproducible import make_reproducible

    coremltools_bytes(model_path, 16, "linear", out)
    make_reproducible(out)
    return out.read_bytes()


@pytest.mark.parametrize("name", ["TinySeg.mlmodel", "TinySegArray.mlmodel"])
def test_fp16_fast_path_is_byte_identical_on_the_fixture_models(tmp_path: Path, name: str) -> None:
    model = fixture_model(name)
    with quiet():
        fp16_file(model.path, tmp_path / "f.mlmodel")
    ours = (tmp_path / "f.mlmodel").read_bytes()
    assert ours == coremltools_fp16_bytes(model.path, tmp_path / "c.mlmodel")
    assert len(ours) < model.size_bytes * 0.6  # and it did halve the weights


def test_fp16_recipe_takes_the_fast_path_with_coremltools_bytes(nn_model: Model, tmp_path: Path) -> None:
    variant = build_variant(nn_model, parse_recipe("fp16"), tmp_path / "cache")
    manifest = (variant.path.parent / "manifest.json").read_text()
    assert '"route": "fast"' in manifest
    assert variant.path.read_bytes() == coremltools_fp16_bytes(nn_model.path, tmp_path / "c.mlmodel")


def test_fp16_beyond_half_range_falls_back_to_coremltools_error(tmp_path: Path) -> None:
    import coremltools as ct

    path = save_nn_model(tmp_path / "Big.mlmodel", channels=(3, 4, 1), size=8)
    spec = ct.utils.load_spec(str(path))
    spec.neuralNetwork.layers[0].convolution.weights.floatValue[0] = 70000.0
    ct.utils.save_spec(spec, str(path))
    with pytest.raises(NotCovered, match="range"):
        fp16_spec(ct.utils.load_spec(str(path)))
    from pytest_coreml_quality.errors import RecipeError

    with pytest.raises(RecipeError, match="half precision"):
        build_variant(Model.open(path), parse_recipe("fp16"), tmp_path / "cache")
