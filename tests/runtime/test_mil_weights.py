"""ML Program compressed weights: our numpy decompression equals coremltools' bit for bit,
and the translated compressed model matches PyTorch with the decompressed weights.

Oracle: ``coremltools.optimize.coreml.decompress_weights`` turns every ``constexpr_*``
chain into a ``const`` with the same variable name; we compare each weight a compute op
consumes with that const (dtype, shape and bytes).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch builds the ML Program test models (test-only dependency)")

import torch
from torch import nn

from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.onnx import mil_weights
from pytest_coreml_quality.runtime.onnx.mil_ops.registry import MilContext
from pytest_coreml_quality.runtime.onnx.mil_weights import WEIGHT_OPS
from pytest_coreml_quality.runtime.onnx.mlprogram import load_main_function
from tests.runtime import mil_crosscheck, mil_zoo

pytestmark = pytest.mark.filterwarnings("ignore")

SHAPE = (1, 8, 8, 8)
# Compressed weights are compared with PyTorch running the decompressed weights: the
# only difference left is float32 summation order (fp32 programs) or the program's fp16
# rounding points (fp16 programs), relative to the output's magnitude.
FP32_BOUND = 1e-4
FP16_REL_BOUND = 5e-3


class CompressNet(nn.Module):
    """Two convs and a linear layer: weights large enough for every compression mode."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(8, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.c2(torch.relu(self.c1(x)))).mean(dim=(2, 3)))


def _cto() -> Any:
    import coremltools.optimize.coreml as cto

    return cto


def _quant(**kw: Any) -> Callable[[Any], Any]:
    return lambda m: _cto().linear_quantize_weights(m, _cto().OptimizationConfig(_cto().OpLinearQuantizerConfig(weight_threshold=0, **kw)))


def _pal(**kw: Any) -> Callable[[Any], Any]:
    return lambda m: _cto().palettize_weights(m, _cto().OptimizationConfig(_cto().OpPalettizerConfig(weight_threshold=0, **kw)))


def _prune(**kw: Any) -> Callable[[Any], Any]:
    return lambda m: _cto().prune_weights(m, _cto().OptimizationConfig(_cto().OpMagnitudePrunerConfig(weight_threshold=0, **kw)))


def _joint(first: Callable[[Any], Any], *then: tuple[str, dict[str, Any]]) -> Callable[[Any], Any]:
    def apply(m: Any) -> Any:
        cto = _cto()
        m = first(m)
        for kind, kw in then:
            if kind == "pal":
                m = cto.palettize_weights(m, cto.OptimizationConfig(cto.OpPalettizerConfig(weight_threshold=0, **kw)), joint_compression=True)
            else:
                m = cto.linear_quantize_weights(m, cto.OptimizationConfig(cto.OpLinearQuantizerConfig(weight_threshold=0, **kw)), joint_compression=True)
        return m

    return apply


# name -> (deployment target, compression, constexpr ops it must emit)
CASES: dict[str, tuple[str, Callable[[Any], Any], set[str]]] = {
    "q8-sym-tensor": ("iOS16", _quant(mode="linear_symmetric", granularity="per_tensor"), {"constexpr_affine_dequantize"}),
    "q8-asym-channel": ("iOS16", _quant(mode="linear", dtype="uint8", granularity="per_channel"), {"constexpr_affine_dequantize"}),
    "pal1-kmeans": ("iOS16", _pal(nbits=1, mode="kmeans"), {"constexpr_lut_to_dense"}),
    "pal2-uniform": ("iOS16", _pal(nbits=2, mode="uniform"), {"constexpr_lut_to_dense"}),
    "pal4-kmeans": ("iOS16", _pal(nbits=4, mode="kmeans"), {"constexpr_lut_to_dense"}),
    "pal6-kmeans": ("iOS16", _pal(nbits=6, mode="kmeans"), {"constexpr_lut_to_dense"}),
    "pal8-uniform": ("iOS16", _pal(nbits=8, mode="uniform"), {"constexpr_lut_to_dense"}),
    "prune-magnitude": ("iOS16", _prune(target_sparsity=0.5), {"constexpr_sparse_to_dense"}),
    "q4-block": ("iOS18", _quant(mode="linear", dtype="int4", granularity="per_block", block_size=4), {"constexpr_blockwise_shift_scale"}),
    "q4-sym-channel": ("iOS18", _quant(mode="linear_symmetric", dtype="int4", granularity="per_channel"), {"constexpr_blockwise_shift_scale"}),
    "q8-asym-block": ("iOS18", _quant(mode="linear", dtype="int8", granularity="per_block", block_size=8), {"constexpr_blockwise_shift_scale"}),
    "pal3-grouped": ("iOS18", _pal(nbits=3, granularity="per_grouped_channel", group_size=4), {"constexpr_lut_to_dense"}),
    "pal4-channel-scale": ("iOS18", _pal(nbits=4, enable_per_channel_scale=True), {"constexpr_lut_to_dense", "constexpr_blockwise_shift_scale"}),
    "pal2-vector": ("iOS18", _pal(nbits=2, cluster_dim=2), {"constexpr_lut_to_dense"}),
    "prune-block": ("iOS18", _prune(target_sparsity=0.5, block_size=2), {"constexpr_sparse_to_dense"}),
    "prune-n-m": ("iOS18", _prune(n_m_ratio=(2, 4)), {"constexpr_sparse_to_dense"}),
    "prune+pal": ("iOS18", _joint(_prune(target_sparsity=0.5), ("pal", {"nbits": 4})), {"constexpr_lut_to_sparse", "constexpr_sparse_to_dense"}),
    "prune+q8": (
        "iOS18",
        _joint(_prune(target_sparsity=0.5), ("q", {"mode": "linear_symmetric"})),
        {"constexpr_sparse_blockwise_shift_scale", "constexpr_sparse_to_dense"},
    ),
    "pal+q8-lut": (
        "iOS18",
        _joint(_pal(nbits=4), ("q", {"mode": "linear_symmetric", "granularity": "per_tensor"})),
        {"constexpr_lut_to_dense", "constexpr_blockwise_shift_scale"},
    ),
}
# fp16 programs are what users ship; a representative subset keeps the run short.
FP16_CASES = ["q8-sym-tensor", "pal4-kmeans", "q4-block", "prune+pal"]


@pytest.fixture(scope="session")
def compress_net() -> nn.Module:
    torch.manual_seed(0)
    return CompressNet().eval()


@pytest.fixture(scope="session")
def base_models(tmp_path_factory: pytest.TempPathFactory, compress_net: nn.Module) -> Callable[[str, str], Any]:
    """Uncompressed ML Programs (``MLModel``), one per (target, precision), built once."""
    import coremltools as ct

    root = tmp_path_factory.mktemp("mil_weights_base")
    cache: dict[tuple[str, str], Any] = {}

    def get(target: str, precision: str) -> Any:
        key = (target, precision)
        if key not in cache:
            path = mil_zoo.convert(compress_net, SHAPE, root / f"base_{target}_{precision}.mlpackage", precision, target)
            cache[key] = ct.models.MLModel(str(path), skip_model_load=True)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def compressed(tmp_path_factory: pytest.TempPathFactory, base_models: Callable[[str, str], Any]) -> Callable[[str, str], tuple[Path, Path]]:
    """(compressed package, coremltools-decompressed package) per (case, precision)."""
    import coremltools as ct

    root = tmp_path_factory.mktemp("mil_weights")
    cache: dict[tuple[str, str], tuple[Path, Path]] = {}

    def get(case: str, precision: str) -> tuple[Path, Path]:
        if (case, precision) not in cache:
            target, compress, _ = CASES[case]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = compress(base_models(target, precision))
                dense = ct.optimize.coreml.decompress_weights(model)
            safe = case.replace("+", "_")
            cpath, dpath = root / f"{safe}_{precision}.mlpackage", root / f"{safe}_{precision}_dense.mlpackage"
            model.save(str(cpath))
            dense.save(str(dpath))
            cache[(case, precision)] = (cpath, dpath)
        return cache[(case, precision)]

    return get


def _consumed_weights(func: Any) -> dict[str, Any]:
    """Outputs of constexpr chains that a compute op reads, by variable name."""
    out = {}
    for op in func.operations:
        if op.op_type in WEIGHT_OPS or op.op_type == "const":
            continue
        for value in op.inputs.values():
            for var in value if isinstance(value, (list, tuple)) else [value]:
                if var.op is not None and var.op.op_type in WEIGHT_OPS:
                    out[var.name] = var
    return out


def _check_exact(cpath: Path, dpath: Path, expected_ops: set[str]) -> None:
    func = load_main_function(Model.open(cpath))
    emitted = {op.op_type for op in func.operations if op.op_type in WEIGHT_OPS}
    assert emitted == expected_ops
    oracle = {
        op.outputs[0].name: np.asarray(op.outputs[0].val)
        for op in load_main_function(Model.open(dpath)).operations
        if op.op_type == "const"
    }
    weights = _consumed_weights(func)
    assert len(weights) == 3  # c1, c2 and fc weights are all compressed
    ctx = MilContext(builder=None)  # type: ignore[arg-type]  # values only, no graph
    for name, var in weights.items():
        ours, theirs = ctx.value(var), oracle[name]
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, name
        assert ours.tobytes() == theirs.tobytes(), f"{name}: decompressed weights differ from coremltools'"


def _torch_with_weights(net: nn.Module, dense_path: Path) -> nn.Module:
    """A copy of ``net`` holding the decompressed (and, for fp16 programs, fp16-rounded) parameters."""
    func = load_main_function(Model.open(dense_path))
    ctx = MilContext(builder=None)  # type: ignore[arg-type]
    layers = [op for op in func.operations if op.op_type in ("conv", "linear")]
    clone = copy.deepcopy(net)
    with torch.no_grad():
        for op, layer in zip(layers, (clone.c1, clone.c2, clone.fc)):
            layer.weight.copy_(torch.from_numpy(ctx.value(op.inputs["weight"]).astype(np.float32)))
            layer.bias.copy_(torch.from_numpy(ctx.value(op.inputs["bias"]).astype(np.float32)))
    return clone


@pytest.mark.parametrize("case", list(CASES))
def test_fp32_program_weights_exact_and_output_matches(case: str, compressed: Any, compress_net: nn.Module) -> None:
    cpath, dpath = compressed(case, "fp32")
    _check_exact(cpath, dpath, CASES[case][2])
    mil_crosscheck.assert_same_translation(cpath)  # the protobuf reader gives coremltools' graph
    x = mil_zoo.sample_input(SHAPE)
    got = mil_zoo.run(cpath, {"input": x})["output"]
    lossy = _torch_with_weights(compress_net, dpath)
    ref = mil_zoo.torch_out(lossy, x)
    assert np.abs(got - ref).max() <= FP32_BOUND
    # The comparison is against the lossy weights, which do differ from the originals.
    assert not torch.equal(lossy.c2.weight, compress_net.c2.weight)


@pytest.mark.parametrize("case", FP16_CASES)
def test_fp16_program_weights_exact_and_output_within_bound(case: str, compressed: Any, compress_net: nn.Module) -> None:
    cpath, dpath = compressed(case, "fp16")
    _check_exact(cpath, dpath, CASES[case][2])
    mil_crosscheck.assert_same_translation(cpath)
    x = mil_zoo.sample_input(SHAPE)
    got = mil_zoo.run(cpath, {"input": x})["output"]
    dense = mil_zoo.run(dpath, {"input": x})["output"]
    assert np.array_equal(got, dense)  # same weights, same graph: identical outputs
    ref = mil_zoo.torch_out(_torch_with_weights(compress_net, dpath), x)
    assert np.abs(got - ref).max() <= FP16_REL_BOUND * max(1.0, float(np.abs(ref).max()))


# --- unit tests of the formulas on hand-made inputs ---------------------------------------


def test_ios16_lut_indices_are_unpacked_lsb_first() -> None:
    # The example of the op's documentation: n_bits = 2, shape = (5,), indices 3, 2, 1, 0, 3.
    packed = np.array([0b00011011, 0b00000011], dtype=np.uint8)
    lut = np.array([10.0, 20.0, 30.0, 40.0], dtype=np.float16)
    out = mil_weights.lut_to_dense_ios16(packed, lut, (5,))
    assert out.dtype == np.float16
    assert out.tolist() == [40.0, 30.0, 20.0, 10.0, 40.0]


def test_ios16_sparse_mask_is_lsb_first() -> None:
    mask = np.array([0b00001101], dtype=np.uint8)  # slots 0, 2, 3 set
    out = mil_weights.sparse_to_dense_ios16(np.array([1.0, 2.0, 3.0], dtype=np.float32), mask, (5,))
    assert out.tolist() == [1.0, 0.0, 2.0, 3.0, 0.0]


def test_blockwise_shift_scale_repeats_each_block() -> None:
    data = np.arange(8, dtype=np.int8).reshape(2, 4)
    scale = np.array([[1.0, 10.0], [100.0, 1000.0]], dtype=np.float32)  # blocks of 1 x 2
    offset = np.array([[0, 1], [2, 3]], dtype=np.int8)
    out = mil_weights.blockwise_shift_scale(data, scale, offset)
    assert out.tolist() == [[0.0, 1.0, 10.0, 20.0], [200.0, 300.0, 3000.0, 4000.0]]


def test_lut_to_dense_per_block_vector_palettes() -> None:
    indices = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    # One palette per row block (2 blocks on axis 0), 2 entries, vectors of 2 along axis 1.
    lut = np.array([[[[1, 2], [3, 4]]], [[[5, 6], [7, 8]]]], dtype=np.float32)
    out = mil_weights.lut_to_dense(indices, lut, vector_axis=1)
    assert out.shape == (2, 4)
    assert out.tolist() == [[1, 2, 3, 4], [7, 8, 5, 6]]


@pytest.mark.parametrize("nbits", [1, 2, 3, 4, 6, 8])
def test_unpack_bits_equals_coremltools(nbits: int) -> None:
    from coremltools.optimize._utils import restore_elements_from_packed_bits

    rng = np.random.default_rng(nbits)
    for count in (1, 5, 7, 64, 1001):
        packed = rng.integers(0, 256, size=-(-count * nbits // 8), dtype=np.uint8)
        ours = mil_weights.unpack_bits(packed, nbits, count)
        assert ours.tolist() == restore_elements_from_packed_bits(packed, nbits, count).tolist()


def test_unpack_bits_rejects_short_data() -> None:
    with pytest.raises(ValueError, match="fewer"):
        mil_weights.unpack_bits(np.zeros(1, dtype=np.uint8), 4, 3)


def test_constexpr_cast_weight(tmp_path: Path) -> None:
    """coremltools' compression passes never emit constexpr_cast: build it with the MIL builder."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    rng = np.random.default_rng(3)
    weight16 = rng.standard_normal((6, 4, 3, 3)).astype(np.float16)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4, 8, 8))], opset_version=ct.target.iOS16)
    def prog(x: Any) -> Any:
        w = mb.constexpr_cast(source_val=weight16, output_dtype="fp32")
        return mb.conv(x=x, weight=w, pad_type="same", name="output")

    path = mil_zoo.save_program(prog, tmp_path / "cast.mlpackage")
    func = load_main_function(Model.open(path))
    assert "constexpr_cast" in {op.op_type for op in func.operations}
    mil_crosscheck.assert_same_translation(path)
    x = mil_zoo.sample_input((1, 4, 8, 8))
    feeds = {func.inputs and next(iter(func.inputs)): x}
    got = next(iter(mil_zoo.run(path, feeds).values()))
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight16.astype(np.float32)), padding=1).numpy()
    assert np.abs(got - ref).max() <= FP32_BOUND


@pytest.mark.parametrize("entries", [1, 3, 512])
def test_ios16_lut_size_must_be_a_power_of_two(entries: int) -> None:
    with pytest.raises(ValueError, match="2\\*\\*nbits"):
        mil_weights.lut_to_dense_ios16(np.zeros(4, dtype=np.uint8), np.zeros(entries, dtype=np.float32), (4,))
