"""select, scaled_dot_product_attention, einsum, topk, argsort, cumsum, range_1d, fill, fill_like,
gather_nd, one_hot, non_zero and band_part, built with coremltools' MIL builder, translated by the
onnx runtime and checked against numpy implementations of the op definitions.

Every op reads values computed from the program input, so the converter cannot fold it to a
constant (``test_suite_keeps_every_op`` checks the saved programs still contain each op).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch is the zoo helpers' test-only dependency")

from pytest_coreml_quality.model import Model
from tests.runtime import mil_crosscheck, mil_zoo

pytestmark = pytest.mark.filterwarnings("ignore")

SHAPE = (1, 4, 6, 8)
BOUND = 1e-4
RNG = np.random.default_rng(7)
EIN_Y4 = RNG.standard_normal((1, 8, 1, 3)).astype(np.float32)  # H = 1: broadcast against x's H = 6
EIN_Y3 = RNG.standard_normal((8, 6, 5)).astype(np.float32)
GATHER_IDX = np.array([[0, 1, 2], [0, 3, 5], [0, 0, 0]], dtype=np.int32)
GATHER_BATCH_IDX = np.array([[[1, 2], [3, 0], [1, 2]]], dtype=np.int32)  # batch_dims=1
# Attention: key/value are 5 positions of x; a bool mask keeping at least one key per query.
BOOL_MASK = RNG.random((6, 5)) < 0.5
BOOL_MASK[np.arange(6), np.arange(6) % 5] = True
FLOAT_MASK = RNG.standard_normal((1, 1, 6, 5)).astype(np.float32)
BIG_FILL = (520, 512)  # larger than the converter's constant-folding limit, so fill stays an op


def _halves(v: np.ndarray) -> np.ndarray:
    """x rounded down to multiples of 0.5: many equal values (ties for topk/argsort)."""
    return np.floor(v * 2) / 2


def _stable_order(v: np.ndarray, axis: int, ascending: bool) -> np.ndarray:
    """MIL's argsort/topk order (numpy's argsort of x or -x); ties keep the lower index first."""
    return np.argsort(v if ascending else -v, axis=axis, kind="stable")


def _topk(v: np.ndarray, k: int, axis: int, ascending: bool) -> tuple[np.ndarray, np.ndarray]:
    idx = np.take(_stable_order(v, axis, ascending), np.arange(k), axis=axis)
    return np.take_along_axis(v, idx, axis=axis), idx


def _sdpa(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + (np.where(mask, 0.0, -np.inf) if mask.dtype == bool else mask)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return (weights / weights.sum(axis=-1, keepdims=True)) @ v


def _band(v: np.ndarray, lower: int, upper: int) -> np.ndarray:
    m, n = np.indices(v.shape[-2:])
    keep = ((lower < 0) | (m - n <= lower)) & ((upper < 0) | (n - m <= upper))
    return v * keep


def _cumsum(v: np.ndarray, axis: int, exclusive: bool, reverse: bool) -> np.ndarray:
    if reverse:
        v = np.flip(v, axis)
    out = np.cumsum(v, axis=axis)
    if exclusive:
        out = out - v
    return np.flip(out, axis) if reverse else out


def _one_hot(idx: np.ndarray, depth: int, axis: int, on: float, off: float) -> np.ndarray:
    hot = idx[..., None] == np.arange(depth)
    return np.moveaxis(np.where(hot, on, off), -1, axis).astype(np.float32)


def _f32(mb: Any, v: Any) -> Any:
    return mb.cast(x=v, dtype="fp32")


def _small_ints(mb: Any, x: Any) -> Any:
    """int32 values 0..3 computed from x in [-2, 2]."""
    return mb.cast(x=mb.floor(x=mb.clip(x=mb.add(x=x, y=2.0), alpha=0.0, beta=3.99)), dtype="int32")


def _np_small_ints(v: np.ndarray) -> np.ndarray:
    return np.floor(np.clip(v + 2.0, 0.0, 3.99)).astype(np.int32)


def _runtime_ints(mb: Any, x: Any, values: list[float]) -> Any:
    """``values`` as int32, computed in the graph (``0 * x[:n] + values``) so nothing folds them."""
    head = mb.slice_by_size(x=mb.reshape(x=x, shape=[-1]), begin=[0], size=[len(values)])
    return mb.cast(x=mb.add(x=mb.mul(x=head, y=0.0), y=np.array(values, dtype=np.float32)), dtype="int32")


def _key(mb: Any, x: Any) -> Any:
    return mb.slice_by_index(x=mb.mul(x=x, y=0.7), begin=[0, 0, 1, 0], end=[1, 4, 6, 8])


def _value(mb: Any, x: Any) -> Any:
    return mb.slice_by_index(x=mb.sin(x=x), begin=[0, 0, 0, 0], end=[1, 4, 5, 8])


Build = Callable[[Any, Any], Any]
Reference = Callable[[np.ndarray], np.ndarray]

# name -> (MIL construction from the input ``x`` in [-2, 2], numpy reference)
CASES: dict[str, tuple[Build, Reference]] = {
    "select": (
        lambda mb, x: mb.select(cond=mb.greater(x=x, y=0.0), a=x, b=mb.mul(x=x, y=-3.0)),
        lambda v: np.where(v > 0, v, -3 * v),
    ),
    "select_broadcast": (  # cond [1, 1, 6, 1], a [1, 4, 6, 8], b a scalar
        lambda mb, x: mb.select(cond=mb.greater(x=mb.reduce_mean(x=x, axes=[1, 3], keep_dims=True), y=0.0), a=x, b=0.5),
        lambda v: np.where(v.mean(axis=(1, 3), keepdims=True) > 0, v, 0.5),
    ),
    "select_int": (
        lambda mb, x: _f32(mb, mb.select(cond=mb.less(x=x, y=0.3), a=_small_ints(mb, x), b=np.int32(7))),
        lambda v: np.where(v < 0.3, _np_small_ints(v), 7).astype(np.float32),
    ),
    "select_bool": (
        lambda mb, x: _f32(mb, mb.select(cond=mb.less(x=x, y=0.0), a=mb.greater(x=x, y=-1.0), b=mb.greater(x=x, y=1.0))),
        lambda v: np.where(v < 0, v > -1, v > 1).astype(np.float32),
    ),
    "topk_values": (
        lambda mb, x: mb.topk(x=mb.floor(x=mb.mul(x=x, y=2.0)), k=3)[0],
        lambda v: _topk(np.floor(v * 2), 3, -1, False)[0],
    ),
    "topk_indices_ties": (
        lambda mb, x: _f32(mb, mb.topk(x=mb.floor(x=mb.mul(x=x, y=2.0)), k=3)[1]),
        lambda v: _topk(np.floor(v * 2), 3, -1, False)[1].astype(np.float32),
    ),
    "topk_ascending_negative_axis": (
        lambda mb, x: _f32(mb, mb.topk(x=mb.floor(x=x), k=2, axis=-3, ascending=True)[1]),
        lambda v: _topk(np.floor(v), 2, 1, True)[1].astype(np.float32),
    ),
    "topk_values_only": (
        lambda mb, x: mb.topk(x=x, k=4, axis=2, return_indices=False),
        lambda v: _topk(v, 4, 2, False)[0],
    ),
    "topk_unsorted": (  # MIL leaves the order open: compared as sorted values (see the test)
        lambda mb, x: mb.topk(x=x, k=5, axis=3, sort=False)[0],
        lambda v: _topk(v, 5, 3, False)[0],
    ),
    "topk_int": (
        lambda mb, x: _f32(mb, mb.topk(x=_small_ints(mb, x), k=2, axis=2)[0]),
        lambda v: _topk(_np_small_ints(v), 2, 2, False)[0].astype(np.float32),
    ),
    "argsort_ties": (
        lambda mb, x: _f32(mb, mb.argsort(x=mb.floor(x=mb.mul(x=x, y=2.0)))),
        lambda v: _stable_order(np.floor(v * 2), -1, False).astype(np.float32),
    ),
    "argsort_ascending_axis": (
        lambda mb, x: _f32(mb, mb.argsort(x=mb.floor(x=x), axis=-2, ascending=True)),
        lambda v: _stable_order(np.floor(v), 2, True).astype(np.float32),
    ),
    "cumsum": (lambda mb, x: mb.cumsum(x=x, axis=2), lambda v: _cumsum(v, 2, False, False)),
    "cumsum_exclusive": (lambda mb, x: mb.cumsum(x=x, axis=3, exclusive=True), lambda v: _cumsum(v, 3, True, False)),
    "cumsum_reverse": (lambda mb, x: mb.cumsum(x=x, axis=-1, reverse=True), lambda v: _cumsum(v, 3, False, True)),
    "cumsum_exclusive_reverse": (
        lambda mb, x: mb.cumsum(x=x, axis=1, exclusive=True, reverse=True),
        lambda v: _cumsum(v, 1, True, True),
    ),
    "cumsum_int": (
        lambda mb, x: _f32(mb, mb.cumsum(x=_small_ints(mb, x), axis=3)),
        lambda v: np.cumsum(_np_small_ints(v), axis=3).astype(np.float32),
    ),
    "range_1d_int": (  # end = 5 + the largest small int (known only at run time)
        lambda mb, x: _f32(mb, mb.range_1d(start=np.int32(1), end=mb.add(x=mb.reduce_max(x=_small_ints(mb, x)), y=np.int32(5)), step=np.int32(2))),
        lambda v: np.arange(1, _np_small_ints(v).max() + 5, 2).astype(np.float32),
    ),
    "range_1d_float": (
        lambda mb, x: mb.range_1d(start=mb.reduce_min(x=x), end=np.float32(2.5), step=np.float32(0.5)),
        lambda v: np.arange(np.float32(v.min()), np.float32(2.5), np.float32(0.5), dtype=np.float32),
    ),
    "fill_runtime_shape": (  # shape [3, 5] computed from x: the output size is unknown at translation
        lambda mb, x: mb.fill(
            shape=_runtime_ints(mb, x, [3.0, 5.0]), value=2.5,
        ),
        lambda v: np.full((3, 5), 2.5, dtype=np.float32),
    ),
    "fill_large": (  # the fill is an input of an op on x, so it is computed in the graph
        lambda mb, x: mb.add(x=mb.fill(shape=np.array(BIG_FILL, dtype=np.int32), value=-1.5), y=mb.reduce_max(x=x)),
        lambda v: np.full(BIG_FILL, -1.5 + v.max(), dtype=np.float32),
    ),
    "fill_like": (lambda mb, x: mb.fill_like(ref_tensor=x, value=3.25), lambda v: np.full(SHAPE, 3.25, dtype=np.float32)),
    "fill_like_int": (
        lambda mb, x: _f32(mb, mb.add(x=mb.fill_like(ref_tensor=x, value=np.int32(4)), y=_small_ints(mb, x))),
        lambda v: (4 + _np_small_ints(v)).astype(np.float32),
    ),
    "gather_nd": (
        lambda mb, x: mb.gather_nd(x=x, indices=GATHER_IDX),
        lambda v: v[tuple(GATHER_IDX.T)],
    ),
    "gather_nd_batch_dims": (
        lambda mb, x: mb.gather_nd(x=mb.squeeze(x=x, axes=[0]), indices=np.repeat(GATHER_BATCH_IDX, 4, axis=0), batch_dims=1),
        lambda v: np.stack([v[0, b][tuple(GATHER_BATCH_IDX[0].T)] for b in range(4)]),
    ),
    "one_hot": (
        lambda mb, x: mb.one_hot(indices=_small_ints(mb, x), one_hot_vector_size=4, on_value=2.0, off_value=-1.0),
        lambda v: _one_hot(_np_small_ints(v), 4, -1, 2.0, -1.0),
    ),
    "one_hot_axis": (
        lambda mb, x: _f32(mb, mb.one_hot(indices=_small_ints(mb, x), one_hot_vector_size=5, axis=1)),
        lambda v: _one_hot(_np_small_ints(v), 5, 1, 1, 0),
    ),
    "one_hot_bool": (
        lambda mb, x: _f32(mb, mb.one_hot(indices=_small_ints(mb, x), one_hot_vector_size=4, on_value=True, off_value=False)),
        lambda v: _one_hot(_np_small_ints(v), 4, -1, 1, 0),
    ),
    "one_hot_runtime_depth": (  # depth = 1 + the largest index, computed in the graph
        lambda mb, x: _f32(mb, mb.one_hot(indices=_small_ints(mb, x), one_hot_vector_size=mb.add(x=mb.reduce_max(x=_small_ints(mb, x)), y=np.int32(1)), axis=-2)),
        lambda v: _one_hot(_np_small_ints(v), int(_np_small_ints(v).max()) + 1, -2, 1, 0),
    ),
    "non_zero": (
        lambda mb, x: _f32(mb, mb.non_zero(x=mb.floor(x=mb.mul(x=x, y=0.5)))),
        lambda v: np.argwhere(np.floor(v * 0.5)).astype(np.float32),
    ),
    "band_part": (lambda mb, x: mb.band_part(x=x, lower=1, upper=2), lambda v: _band(v, 1, 2)),
    "band_part_upper_triangle": (lambda mb, x: mb.band_part(x=x, lower=0, upper=-1), lambda v: _band(v, 0, -1)),
    "band_part_lower_triangle": (lambda mb, x: mb.band_part(x=x, lower=-1, upper=0), lambda v: _band(v, -1, 0)),
    "band_part_bool": (
        lambda mb, x: _f32(mb, mb.band_part(x=mb.greater(x=x, y=-1.0), lower=2, upper=0)),
        lambda v: _band(v > -1, 2, 0).astype(np.float32),
    ),
    "band_part_int": (
        lambda mb, x: _f32(mb, mb.band_part(x=_small_ints(mb, x), lower=0, upper=3)),
        lambda v: _band(_np_small_ints(v), 0, 3).astype(np.float32),
    ),
    "einsum_nchw": (  # y's H is 1 and broadcasts, letters renamed
        lambda mb, x: mb.einsum(values=(x, EIN_Y4), equation="abcd,adce->abce"),
        lambda v: np.einsum("nchw,nwhu->nchu", v, np.broadcast_to(EIN_Y4, (1, 8, 6, 3))),
    ),
    "einsum_chw": (
        lambda mb, x: mb.einsum(values=(mb.squeeze(x=x, axes=[0]), EIN_Y3), equation="chw,whr->chr"),
        lambda v: np.einsum("chw,whr->chr", v[0], EIN_Y3),
    ),
}

# Ops (or op versions) of iOS18 programs only.
CASES_IOS18: dict[str, tuple[Build, Reference]] = {
    "sdpa": (
        lambda mb, x: mb.scaled_dot_product_attention(query=x, key=_key(mb, x), value=_value(mb, x)),
        lambda v: _sdpa(v, 0.7 * v[:, :, 1:], np.sin(v[:, :, :5]), None),
    ),
    "sdpa_bool_mask": (
        lambda mb, x: mb.scaled_dot_product_attention(query=x, key=_key(mb, x), value=_value(mb, x), attn_mask=BOOL_MASK),
        lambda v: _sdpa(v, 0.7 * v[:, :, 1:], np.sin(v[:, :, :5]), BOOL_MASK),
    ),
    "sdpa_float_mask": (
        lambda mb, x: mb.scaled_dot_product_attention(query=x, key=_key(mb, x), value=_value(mb, x), attn_mask=FLOAT_MASK),
        lambda v: _sdpa(v, 0.7 * v[:, :, 1:], np.sin(v[:, :, :5]), FLOAT_MASK),
    ),
}

OP_TYPES = {"select", "topk", "argsort", "cumsum", "range_1d", "fill", "fill_like", "gather_nd", "one_hot",
            "non_zero", "band_part", "einsum"}  # fmt: skip


def _cases(target: str) -> dict[str, tuple[Build, Reference]]:
    return {**CASES, **(CASES_IOS18 if target == "iOS18" else {})}


def _save(target: str, folder: Path) -> Path:
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    cases = _cases(target)

    @mb.program(input_specs=[mb.TensorSpec(shape=SHAPE)], opset_version=getattr(ct.target, target))
    def prog(x: Any) -> Any:
        x = mb.sub(x=mb.mul(x=x, y=4.0), y=2.0)
        return tuple(mb.identity(x=build(mb, x), name=name) for name, (build, _) in cases.items())

    return mil_zoo.save_program(prog, folder / f"suite_{target}.mlpackage", target=target)


TARGETS = ["iOS16", "iOS18"]
Suite = tuple[Path, np.ndarray, dict[str, np.ndarray]]


@pytest.fixture(scope="module")
def suites(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Suite]:
    """``suites(target)``: (package, input in [-2, 2], outputs), one program per target holding
    every case, converted and run once."""
    built: dict[str, Suite] = {}

    def get(target: str) -> Suite:
        if target not in built:
            path = _save(target, tmp_path_factory.mktemp(f"selection_{target}"))
            x = mil_zoo.sample_input(SHAPE, seed=5)
            name = Model.open(path).inputs[0].name
            built[target] = (path, x * 4 - 2, mil_zoo.run(path, {name: x}))
        return built[target]

    return get


@pytest.mark.parametrize(("target", "case"), [(t, c) for t in TARGETS for c in _cases(t)])
def test_op_matches_formula(target: str, case: str, suites: Callable[[str], Suite]) -> None:
    _, x, outputs = suites(target)
    got = outputs[case]
    expected = _cases(target)[case][1](x.astype(np.float32))
    if case == "topk_unsorted":
        got, expected = np.sort(got, axis=3), np.sort(expected, axis=3)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= BOUND * max(1.0, float(np.abs(expected).max()))


@pytest.mark.parametrize("target", TARGETS)
def test_suite_keeps_every_op(target: str, suites: Callable[[str], Suite]) -> None:
    """The converter folded none of the ops under test into constants."""
    expected = OP_TYPES | ({"scaled_dot_product_attention"} if target == "iOS18" else set())
    assert expected <= mil_zoo.op_types(suites(target)[0])


@pytest.mark.parametrize("target", TARGETS)
def test_protobuf_reader_gives_coremltools_graph(target: str, suites: Callable[[str], Suite]) -> None:
    mil_crosscheck.assert_same_translation(suites(target)[0])


# --- sizes known only at run time ----------------------------------------------------------------

# name -> (MIL construction from x [1, 4, H, W] in [-2, 2], numpy reference)
FLEXIBLE_CASES: dict[str, tuple[Build, Reference]] = {
    "band_part": (lambda mb, x: mb.band_part(x=x, lower=1, upper=2), lambda v: _band(v, 1, 2)),
    "band_part_upper_triangle": (lambda mb, x: mb.band_part(x=x, lower=0, upper=-1), lambda v: _band(v, 0, -1)),
    "band_part_lower_triangle": (lambda mb, x: mb.band_part(x=x, lower=-1, upper=0), lambda v: _band(v, -1, 0)),
    "band_part_int": (
        lambda mb, x: _f32(mb, mb.band_part(x=_small_ints(mb, x), lower=0, upper=3)),
        lambda v: _band(_np_small_ints(v), 0, 3).astype(np.float32),
    ),
    "argsort": (
        lambda mb, x: _f32(mb, mb.argsort(x=mb.floor(x=x), axis=-1)),
        lambda v: _stable_order(np.floor(v), -1, False).astype(np.float32),
    ),
    "fill_like": (lambda mb, x: mb.fill_like(ref_tensor=x, value=-0.75), lambda v: np.full(v.shape, -0.75, np.float32)),
    "sdpa": (  # query = key = x, value = sin(x): the embedding size W is known only at run time
        lambda mb, x: mb.scaled_dot_product_attention(query=x, key=x, value=mb.sin(x=x)),
        lambda v: _sdpa(v, v, np.sin(v), None),
    ),
}


@pytest.fixture(scope="module")
def flexible_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An iOS18 program whose input height and width are flexible (3..12)."""
    import warnings

    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import get_new_symbol

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4, get_new_symbol(), get_new_symbol()))],
                opset_version=ct.target.iOS18)
    def prog(x: Any) -> Any:
        x = mb.sub(x=mb.mul(x=x, y=4.0), y=2.0)
        return tuple(mb.identity(x=build(mb, x), name=name) for name, (build, _) in FLEXIBLE_CASES.items())

    path = tmp_path_factory.mktemp("selection_flexible") / "flexible.mlpackage"
    shape = (1, 4, ct.RangeDim(3, 12, 6), ct.RangeDim(3, 12, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ct.convert(prog, inputs=[ct.TensorType(name="x", shape=shape)], convert_to="mlprogram",
                           minimum_deployment_target=ct.target.iOS18, compute_precision=ct.precision.FLOAT32)
    model.save(str(path))
    return path


@pytest.mark.parametrize("size", [(6, 8), (9, 5)])
def test_ops_at_flexible_sizes(size: tuple[int, int], flexible_suite: Path) -> None:
    """Sizes read from the graph (band limits, sort length, fill shape, attention scale) follow the input."""
    x = mil_zoo.sample_input((1, 4, *size), seed=9)
    outputs = mil_zoo.run(flexible_suite, {"x": x})
    v = x * 4 - 2
    for name, (_, reference) in FLEXIBLE_CASES.items():
        expected = reference(v)
        assert outputs[name].shape == expected.shape, name
        assert np.abs(outputs[name] - expected).max() <= BOUND * max(1.0, float(np.abs(expected).max())), name


def test_flexible_program_reads_the_same_with_both_readers(flexible_suite: Path) -> None:
    mil_crosscheck.assert_same_translation(flexible_suite)


def test_topk_minus_one_takes_the_whole_axis(tmp_path: Path) -> None:
    """iOS17's topk reads ``k = -1`` as "every element". coremltools 9 cannot save such a program
    (its type inference gives the axis size -1), so a saved ``k = 2`` is edited to -1 in the spec."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    from pytest_coreml_quality.runtime.onnx.builder import GraphBuilder
    from pytest_coreml_quality.runtime.onnx.mlprogram import translate_mlprogram

    @mb.program(input_specs=[mb.TensorSpec(shape=SHAPE)], opset_version=ct.target.iOS18)
    def prog(x: Any) -> Any:
        values, indices = mb.topk(x=x, k=2, axis=1, ascending=True, name="top")
        return mb.identity(x=values, name="values"), mb.identity(x=mb.cast(x=indices, dtype="fp32"), name="indices")

    model = Model.open(mil_zoo.save_program(prog, tmp_path / "topk.mlpackage", target="iOS18"))
    fn = model.spec.mlProgram.functions["main"]
    ops = fn.block_specializations[fn.opset].operations
    top = next(op for op in ops if op.type == "topk")
    k_name = top.inputs["k"].arguments[0].name
    k_const = next(op for op in ops if op.type == "const" and op.outputs[0].name == k_name)
    k_const.attributes["val"].immediateValue.tensor.ints.values[0] = -1
    for out in top.outputs:  # the whole axis: 4 values
        out.type.tensorType.dimensions[1].constant.size = 4
    for op in ops:
        if op.type in ("identity", "cast"):
            op.outputs[0].type.tensorType.dimensions[1].constant.size = 4
    for feature in model.spec.description.output:
        del feature.type.multiArrayType.shape[:]

    builder = GraphBuilder(name="topk")
    translate_mlprogram(model, builder)
    x = mil_zoo.sample_input(SHAPE, seed=4)
    values, indices = mil_crosscheck.run(builder.build(), {model.inputs[0].name: x})
    assert np.array_equal(values, np.sort(x, axis=1))
    assert np.array_equal(indices, np.argsort(x, axis=1, kind="stable").astype(np.float32))


@pytest.mark.parametrize(
    ("equation", "rank"),
    [("nchw,nwhu->nchu", 4), ("abcd,adce->abce", 4), ("b c h w , b w h u -> b c h u", 4), ("chw,whr->chr", 3),
     ("xyz,zyw->xyw", 3), ("nchw,nwhu->nhcu", None), ("nchw,nchw->nc", None), ("chw,whr", None), ("ij,jk->ik", None)],
)  # fmt: skip
def test_einsum_forms(equation: str, rank: int | None) -> None:
    """MIL's two einsum forms under any letters; anything else is refused by name."""
    from pytest_coreml_quality.runtime.onnx.mil_ops.attention import einsum_form

    if rank is None:
        with pytest.raises(ValueError, match="unsupported einsum equation"):
            einsum_form(equation)
    else:
        assert einsum_form(equation) == rank
