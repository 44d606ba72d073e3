"""The NeuralNetwork zoo through the onnx backend, compared with PyTorch.

Bounds: fp32 max abs error <= 1e-4. fp16 emulation (every op's output rounded to fp16)
max abs error <= 2e-2 * max(1, max |reference|): fp16 keeps 11 significant bits
(relative step ~1e-3) and these networks are a few ops deep.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch builds the model zoo (test extra)")

import nn_zoo  # noqa: E402

from pytest_coreml_quality.model import Model  # noqa: E402
from pytest_coreml_quality.runtime.base import RuntimeOptions  # noqa: E402
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend  # noqa: E402

FP32_TOL = 1e-4
FP16_REL_TOL = 2e-2


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every zoo module converted once per session."""
    d = tmp_path_factory.mktemp("nn-zoo")
    for name, (_, shape) in nn_zoo.ZOO.items():
        nn_zoo.convert_nn(nn_zoo.make_module(name), shape, d / f"{name}.mlmodel", inputs=nn_zoo.zoo_inputs(name))
    return d


def _run(path: Path, x: np.ndarray, options: RuntimeOptions) -> list[np.ndarray]:
    model = Model.open(path)
    out = OnnxBackend().load(model, options).predict({"input": x})
    return [out[f.name] for f in model.outputs]


@pytest.mark.parametrize("name", sorted(nn_zoo.ZOO))
def test_zoo_matches_pytorch_fp32(name: str, zoo_dir: Path, fp32_options: RuntimeOptions) -> None:
    shape = nn_zoo.ZOO[name][1]
    x = nn_zoo.sample_input(shape)
    ref = nn_zoo.torch_outputs(nn_zoo.make_module(name), x)
    got = _run(zoo_dir / f"{name}.mlmodel", x, fp32_options)
    assert len(got) == len(ref)
    for i, (g, r) in enumerate(zip(got, ref)):
        assert g.size == r.size, f"output {i}: {g.shape} vs {r.shape}"
        err = float(np.abs(g.reshape(r.shape) - r).max())
        assert err <= FP32_TOL, f"{name} output {i}: max abs error {err}"


@pytest.mark.parametrize("name", sorted(nn_zoo.ZOO))
def test_zoo_fp16_emulation_is_close_but_not_fp32(
    name: str, zoo_dir: Path, fp32_options: RuntimeOptions, fp16_options: RuntimeOptions
) -> None:
    shape = nn_zoo.ZOO[name][1]
    x = nn_zoo.sample_input(shape, seed=3)
    ref = nn_zoo.torch_outputs(nn_zoo.make_module(name), x)
    got16 = _run(zoo_dir / f"{name}.mlmodel", x, fp16_options)
    got32 = _run(zoo_dir / f"{name}.mlmodel", x, fp32_options)
    for i, (g, r) in enumerate(zip(got16, ref)):
        bound = FP16_REL_TOL * max(1.0, float(np.abs(r).max()))
        err = float(np.abs(g.reshape(r.shape) - r).max())
        assert err <= bound, f"{name} output {i}: fp16 error {err} > {bound}"
    # The emulation must really round: onnxruntime must not have folded the casts away.
    assert any(not np.array_equal(a, b) for a, b in zip(got16, got32))


def test_zoo_covers_the_vision_layer_types(zoo_dir: Path) -> None:
    seen: set[str] = set()
    for name in nn_zoo.ZOO:
        seen |= nn_zoo.layer_types(Model.open(zoo_dir / f"{name}.mlmodel").spec)
    expected = {"convolution", "pooling", "activation", "upsample", "padding", "innerProduct", "concat",
                "softmax", "softmaxND", "slice", "splitND", "reshapeStatic", "transpose", "batchnorm", "add",
                "multiply", "max", "min", "unary", "clip", "gelu", "crop", "reduceMean", "reduceSum",
                "constantPad", "reshapeDynamic", "whereBroadcastable", "getShape", "concatND"}
    assert expected <= seen, f"zoo no longer produces {sorted(expected - seen)}"
