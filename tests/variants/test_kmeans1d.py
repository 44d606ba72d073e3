"""The 1-D k-means behind ``qN-kmeans``: exact Lloyd fixed points, deterministic, and at least
as close to the weights as the scikit-learn clustering coremltools uses."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pytest_coreml_quality.variants.kmeans1d import DistinctMemo, kmeans_1d
from pytest_coreml_quality.variants.nn_fast_quantize import _weight_fields
from tests.variants.conftest import fixture_model, quiet


def coremltools_kmeans(values: np.ndarray, nbits: int) -> tuple[np.ndarray, np.ndarray]:
    """The table and indices coremltools' kmeans_lut computes (scikit-learn KMeans, k-means++)."""
    from coremltools.models.neural_network.quantization_utils import _get_kmeans_lookup_table_and_weight

    with quiet():
        lut, indices = _get_kmeans_lookup_table_and_weight(nbits, values.astype(np.float64))
    return np.asarray(lut).reshape(-1), np.asarray(indices).reshape(-1)


def mse(values: np.ndarray, table: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean((values.reshape(-1) - table[labels]) ** 2))


def random_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(13)
    n = 20_000
    return {
        "normal": rng.normal(0, 0.05, n),
        "uniform": rng.uniform(-0.2, 0.3, n),
        "heavy-tailed (Student t, 2 dof)": rng.standard_t(2, n) * 0.02,
        "mostly zeros": np.where(rng.random(n) < 0.7, 0.0, rng.normal(0, 0.1, n)),
    }


@pytest.mark.parametrize("name", list(random_arrays()))
@pytest.mark.parametrize("nbits", [2, 4, 6, 8])
def test_error_no_worse_than_coremltools_on_random_arrays(name: str, nbits: int) -> None:
    values = random_arrays()[name]
    centres, labels = kmeans_1d(values, 1 << nbits)
    reference = mse(values, *coremltools_kmeans(values, nbits))
    assert mse(values, centres, labels) <= reference * 1.01


def fixture_layers() -> list[tuple[str, np.ndarray]]:
    import coremltools as ct

    spec = ct.utils.load_spec(str(fixture_model("TinySeg.mlmodel").path))
    out = []
    for layer in spec.neuralNetwork.layers:
        for i, (wp, _shape, _axis) in enumerate(_weight_fields(layer)):
            if len(wp.floatValue) > 0:
                out.append((f"{layer.name}[{i}]", np.array(wp.floatValue)))
    return out


@pytest.mark.parametrize("nbits", [5])  # one width: scikit-learn takes seconds per pass over the model
def test_error_no_worse_than_coremltools_on_the_fixture_layers(nbits: int) -> None:
    layers = fixture_layers()
    assert sum(v.size for _, v in layers) > 400_000  # the whole model, not a sample
    for name, values in layers:
        centres, labels = kmeans_1d(values, 1 << nbits)
        ours, reference = mse(values, centres, labels), mse(values, *coremltools_kmeans(values, nbits))
        assert ours <= reference * 1.01 + 1e-18, (name, ours, reference)


def test_a_lloyd_fixed_point_each_value_at_its_nearest_centre_each_centre_its_mean() -> None:
    values = random_arrays()["heavy-tailed (Student t, 2 dof)"][:3000]
    centres, labels = kmeans_1d(values, 16)
    assert centres.size == 16 and np.all(np.diff(centres) > 0)
    distances = np.abs(values[:, None] - centres[None, :])
    np.testing.assert_array_equal(labels, np.argmin(distances, axis=1))  # argmin: ties to the lower centre
    for j, centre in enumerate(centres):
        assert np.isclose(values[labels == j].mean(), centre, rtol=1e-12, atol=1e-15)


def test_deterministic_and_independent_of_the_order_of_the_values() -> None:
    values = random_arrays()["normal"]
    first, second = kmeans_1d(values, 64), kmeans_1d(values.copy(), 64)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    order = np.random.default_rng(1).permutation(values.size)
    shuffled_centres, shuffled_labels = kmeans_1d(values[order], 64)
    np.testing.assert_array_equal(shuffled_centres, first[0])
    np.testing.assert_array_equal(shuffled_labels, first[1][order])


@pytest.mark.parametrize(
    ("values", "k", "centres"),
    [
        (np.array([0.5, -1.0, 0.5, 2.0]), 4, [-1.0, 0.5, 2.0]),  # fewer distinct values than centres
        (np.full(10, 0.25), 8, [0.25]),
        (np.array([[3.0, 1.0], [1.0, 3.0]]), 2, [1.0, 3.0]),  # any shape, flattened in C order
    ],
)
def test_few_distinct_values_are_their_own_centres(values: np.ndarray, k: int, centres: list[float]) -> None:
    got, labels = kmeans_1d(values, k)
    np.testing.assert_array_equal(got, centres)
    np.testing.assert_array_equal(got[labels], values.reshape(-1))


def test_many_zeros_still_get_distinct_centres() -> None:
    # Quantiles of mostly-zero weights all fall on 0: the centres must still start apart.
    values = np.concatenate((np.zeros(9_000), np.linspace(-1, 1, 1_000)))
    centres, labels = kmeans_1d(values, 16)
    assert centres.size == 16 and np.unique(centres).size == 16
    assert np.unique(labels[:9_000]).size == 1  # the zeros share one centre
    assert mse(values, centres, labels) <= mse(values, *coremltools_kmeans(values, 4)) * 1.01


def test_the_kmeans_variant_table_is_sorted_and_padded(tmp_path: Any) -> None:
    from pytest_coreml_quality.variants.nn_fast_quantize import _kmeans_table

    lut, indices = _kmeans_table(np.array([1.0, 2.0, 1.0, 5.0]), 3)
    np.testing.assert_array_equal(lut, [1.0, 2.0, 5.0, 0, 0, 0, 0, 0])  # coremltools pads with zeros
    assert indices.dtype == np.uint8
    np.testing.assert_array_equal(indices, [0, 1, 0, 2])


@pytest.mark.parametrize("name", list(random_arrays()))
def test_a_shared_sort_gives_the_same_tables_at_every_width(name: str) -> None:
    values = random_arrays()[name]
    memo = DistinctMemo()
    for nbits in (4, 5, 6, 7, 8, 15):  # 15: more centres than distinct values, the other path
        alone = kmeans_1d(values, 1 << nbits)
        shared = kmeans_1d(values, 1 << nbits, memo=memo, key="layer")
        np.testing.assert_array_equal(shared[0], alone[0])
        np.testing.assert_array_equal(shared[1], alone[1])
    assert (memo.misses, memo.hits) == (1, 5)  # sorted once


def test_the_memo_keeps_nothing_beyond_its_bound_and_still_answers() -> None:
    values = random_arrays()
    memo = DistinctMemo(max_bytes=400_000)  # one 20k-value tensor: 20k distinct * 16 B + 20k 2-byte indices = 360 kB
    for name in ("normal", "uniform"):
        kmeans_1d(values[name], 16, memo=memo, key=name)
    assert 0 < memo.held_bytes <= 400_000
    for name in ("normal", "uniform"):
        np.testing.assert_array_equal(kmeans_1d(values[name], 16, memo=memo, key=name)[1], kmeans_1d(values[name], 16)[1])
    assert memo.hits == 1 and memo.misses == 3  # the first tensor was kept, the second was not


def test_quantize_spec_with_a_shared_memo_writes_the_same_bytes() -> None:
    import coremltools as ct

    from pytest_coreml_quality.variants.nn_fast_quantize import quantize_spec
    from pytest_coreml_quality.variants.reproducible import spec_bytes

    nn_model_path = fixture_model("TinySeg.mlmodel").path
    memo = DistinctMemo()
    for nbits in (4, 5, 6, 7, 8):
        with quiet():
            alone = quantize_spec(ct.utils.load_spec(str(nn_model_path)), nbits, "kmeans_lut")
            shared = quantize_spec(ct.utils.load_spec(str(nn_model_path)), nbits, "kmeans_lut", memo=memo, memo_key="m")
        assert spec_bytes(shared) == spec_bytes(alone)
    assert memo.misses > 0 and memo.hits == 4 * memo.misses
