"""ML Program translation faithfulness: the zoo's modules, converted with fp32 and fp16
compute precision, run through the translator + onnxruntime and are compared with PyTorch.

Bounds: fp32 programs <= 1e-4 absolute. fp16 programs carry fp16 weights and fp16
rounding at every cast the converter placed; they stay within 5e-3 relative to the
output's magnitude (5e-3 * max(1, max|ref|): about ten fp16 ulps).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch builds the ML Program test models (test-only dependency)")


from tests.runtime import mil_crosscheck, mil_zoo

pytestmark = pytest.mark.filterwarnings("ignore")

FP32_BOUND = 1e-4
FP16_REL_BOUND = 5e-3

# The MIL ops the zoo must exercise: the vision ops first, then the long tail.
REQUIRED_OPS = {
    "conv", "conv_transpose", "linear", "matmul", "add", "sub", "mul", "real_div", "pow", "maximum", "minimum",
    "relu", "relu6", "leaky_relu", "sigmoid", "sigmoid_hard", "tanh", "gelu", "silu", "softplus", "elu", "prelu",
    "clip", "softmax", "abs", "exp", "sqrt", "log", "floor", "ceil", "sin", "cos", "erf", "rsqrt", "inverse", "sign",
    "batch_norm", "instance_norm", "layer_norm", "max_pool", "avg_pool", "upsample_bilinear",
    "upsample_nearest_neighbor", "concat", "split", "slice_by_index", "reshape", "transpose", "squeeze",
    "expand_dims", "pad", "tile", "gather", "reduce_mean", "reduce_sum", "reduce_max", "reduce_min",
    "reduce_l2_norm", "reduce_log_sum_exp", "stack", "crop", "reverse",
}  # fmt: skip


@pytest.fixture(scope="session")
def zoo_models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Converted zoo packages, built once per (name, precision)."""
    root = tmp_path_factory.mktemp("mil_zoo")
    cache: dict[tuple[str, str], Path] = {}

    def get(name: str, precision: str) -> Path:
        if (name, precision) not in cache:
            _, shape = mil_zoo.ZOO[name]
            path = root / f"{name}_{precision}.mlpackage"
            cache[(name, precision)] = mil_zoo.convert(mil_zoo.make_module(name), shape, path, precision)
        return cache[(name, precision)]

    return get


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", list(mil_zoo.ZOO))
def test_zoo_matches_pytorch(name: str, precision: str, zoo_models: Any) -> None:
    path = zoo_models(name, precision)
    module = mil_zoo.make_module(name)
    x = mil_zoo.sample_input(mil_zoo.ZOO[name][1])
    got = mil_zoo.run(path, {"input": x})["output"]
    ref = mil_zoo.torch_out(module, x)
    assert got.shape == ref.shape
    err = float(np.abs(got - ref).max())
    if precision == "fp32":
        assert err <= FP32_BOUND
    else:
        assert err <= FP16_REL_BOUND * max(1.0, float(np.abs(ref).max()))


def test_zoo_covers_the_required_ops(zoo_models: Any) -> None:
    covered: set[str] = set()
    for name in mil_zoo.ZOO:
        covered |= mil_zoo.op_types(zoo_models(name, "fp32"))
    assert REQUIRED_OPS <= covered, sorted(REQUIRED_OPS - covered)


def test_fp16_program_has_fp16_rounding_points(zoo_models: Any) -> None:
    """An fp16 program differs from its fp32 twin (rounding at casts and weights), within the bound."""
    x = mil_zoo.sample_input(mil_zoo.ZOO["vision"][1])
    fp32 = mil_zoo.run(zoo_models("vision", "fp32"), {"input": x})["output"]
    fp16 = mil_zoo.run(zoo_models("vision", "fp16"), {"input": x})["output"]
    assert not np.array_equal(fp32, fp16)
    assert np.abs(fp32 - fp16).max() <= FP16_REL_BOUND
    # Outputs of an fp16 program are fp16 values.
    assert np.array_equal(fp16, fp16.astype(np.float16).astype(np.float32))


def test_emulated_fp16_compute_rounds_every_op(zoo_models: Any) -> None:
    """The backend's fp16 option (GraphBuilder emulate_fp16) moves an fp32 program towards fp16."""
    path = zoo_models("vision", "fp32")
    module = mil_zoo.make_module("vision")
    x = mil_zoo.sample_input(mil_zoo.ZOO["vision"][1])
    exact = mil_zoo.run(path, {"input": x})["output"]
    emulated = mil_zoo.run(path, {"input": x}, emulate_fp16=True)["output"]
    ref = mil_zoo.torch_out(module, x)
    assert np.abs(exact - ref).max() <= FP32_BOUND < np.abs(emulated - ref).max()
    assert np.abs(emulated - ref).max() <= FP16_REL_BOUND
    assert np.array_equal(emulated, emulated.astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("flexibility", ["range", "enumerated"])
def test_flexible_input_sizes(flexibility: str, tmp_path: Path) -> None:
    """Programs with flexible input sizes translate once and run at every allowed size."""
    import coremltools as ct

    if flexibility == "range":
        shape: Any = (1, 3, ct.RangeDim(16, 128, 32), ct.RangeDim(16, 128, 32))
    else:
        shape = ct.EnumeratedShapes(shapes=[(1, 3, 32, 32), (1, 3, 64, 48)], default=(1, 3, 32, 32))
    module = mil_zoo.make_module("vision")
    path = mil_zoo.convert(
        module, (1, 3, 32, 32), tmp_path / "flex.mlpackage", inputs=[ct.TensorType(name="input", shape=shape)]
    )
    proto = mil_zoo.translate(path)
    # The protobuf reader gives coremltools' graph here too (run-time sizes stay unfixed in both).
    mil_crosscheck.assert_same_translation(path)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[:2]] == [1, 3] and all(d.dim_param for d in dims[2:])
    for size in [(32, 32), (64, 48)]:
        x = mil_zoo.sample_input((1, 3, *size))
        got = mil_zoo.run(path, {"input": x})["output"]
        assert got.shape == (1, 1, *size)
        assert np.abs(got - mil_zoo.torch_out(module, x)).max() <= FP32_BOUND


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", list(mil_zoo.ZOO))
def test_protobuf_reader_gives_coremltools_graph(name: str, precision: str, zoo_models: Any) -> None:
    """The protobuf view translates every zoo program to the graph coremltools' loader gives:
    same nodes, same initializer bytes, hence the same predictions."""
    path = zoo_models(name, precision)
    ours = mil_crosscheck.assert_same_translation(path)
    feeds = {"input": mil_zoo.sample_input(mil_zoo.ZOO[name][1])}
    reference = mil_crosscheck.translate_with(path, "coremltools")
    for a, b in zip(mil_crosscheck.run(ours, feeds), mil_crosscheck.run(reference, feeds)):
        assert np.array_equal(a, b)


def test_protobuf_reader_with_fp16_emulation(zoo_models: Any) -> None:
    mil_crosscheck.assert_same_translation(zoo_models("vision", "fp32"), emulate_fp16=True)



def test_style_transfer_ops_at_flexible_sizes(tmp_path: Path) -> None:
    """Style-transfer nets (instance norm, strided transposed convolutions) often ship with
    enumerated or ranged image sizes: both ops read shapes whose height and width are
    symbolic, and the translation stopped ("has a symbolic shape")."""
    import coremltools as ct
    import torch
    from torch import nn

    torch.manual_seed(4)
    module = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.InstanceNorm2d(4, affine=True), nn.ReLU(),
                           nn.InstanceNorm2d(4), nn.ConvTranspose2d(4, 4, 4, 2, 1), nn.ReLU(),
                           nn.ConvTranspose2d(4, 2, 3, 1, 0), nn.Conv2d(2, 1, 1)).eval()
    shape = ct.EnumeratedShapes(shapes=[(1, 3, 32, 32), (1, 3, 64, 48)], default=(1, 3, 32, 32))
    path = mil_zoo.convert(module, (1, 3, 32, 32), tmp_path / "style.mlpackage", inputs=[ct.TensorType(name="input", shape=shape)])
    assert {"instance_norm", "conv_transpose"} <= mil_zoo.op_types(path)
    for size in [(32, 32), (64, 48)]:
        x = mil_zoo.sample_input((1, 3, *size))
        got = mil_zoo.run(path, {"input": x})["output"]
        assert got.shape == (1, 1, size[0] * 2 + 2, size[1] * 2 + 2)
        assert np.abs(got - mil_zoo.torch_out(module, x)).max() <= FP32_BOUND
