"""ML Program test zoo: small PyTorch modules covering the MIL ops, converted with coremltools,
and a raw-array runner (translate with GraphBuilder, run with onnxruntime) independent of
the backend's predictor.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.onnx.builder import GraphBuilder
from pytest_coreml_quality.runtime.onnx.mlprogram import load_main_function, translate_mlprogram

# --- conversion and running ---------------------------------------------------------------


def convert(
    module: nn.Module,
    shape: tuple[int, ...],
    path: Path,
    precision: str = "fp32",
    target: str = "iOS16",
    inputs: Any = None,
    outputs: Any = None,
) -> Path:
    """Trace ``module`` on a ``shape`` input and save it as an ML Program package."""
    import coremltools as ct

    module = module.eval()
    example = torch.rand(*shape)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example)
        mlmodel = ct.convert(
            traced,
            inputs=inputs or [ct.TensorType(name="input", shape=shape)],
            outputs=outputs or [ct.TensorType(name="output")],
            convert_to="mlprogram",
            minimum_deployment_target=getattr(ct.target, target),
            compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
        )
    mlmodel.save(str(path))
    return path


def save_program(prog: Any, path: Path, target: str = "iOS16") -> Path:
    """Convert a MIL builder program (fp32 compute, converter warnings silenced) and save it at ``path``."""
    import coremltools as ct

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=getattr(ct.target, target),
                           compute_precision=ct.precision.FLOAT32)
    model.save(str(path))
    return path


def translate(path: Path, emulate_fp16: bool = False) -> Any:
    """The ONNX ModelProto the translator builds for the package at ``path``."""
    builder = GraphBuilder(name=path.stem)
    translate_mlprogram(Model.open(path), builder)
    return builder.build(emulate_fp16=emulate_fp16)


def run(path: Path, feeds: Mapping[str, np.ndarray], emulate_fp16: bool = False) -> dict[str, np.ndarray]:
    """Translate and run with onnxruntime on raw float32 arrays."""
    import onnxruntime as ort

    proto = translate(path, emulate_fp16)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(None, {k: np.asarray(v, dtype=np.float32) for k, v in feeds.items()})
    return dict(zip(names, values))


def torch_out(module: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module.eval()(torch.from_numpy(x)).numpy()


def op_types(path: Path) -> set[str]:
    """MIL op types in the package's main function (to check what a zoo model covers)."""
    return {op.op_type for op in load_main_function(Model.open(path)).operations}


# --- the zoo -------------------------------------------------------------------------------


class VisionNet(nn.Module):
    """The ops ISNet / U-Net use: conv, batch norm, relu, max pool, bilinear upsample, concat, add, mul, sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2)
        self.bn2 = nn.BatchNorm2d(8)
        self.c3 = nn.Conv2d(16, 4, 3, padding=1, stride=1)
        self.head = nn.Conv2d(4, 1, 1)
        self.bn3 = nn.BatchNorm2d(8)  # after a pool: not folded into a conv
        for bn in (self.bn1, self.bn2, self.bn3):  # non-trivial running statistics
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn1(self.c1(x)))
        b = self.bn3(F.max_pool2d(a, 2, 2, ceil_mode=True))
        b = torch.relu(self.bn2(self.c2(b))) + b
        up = F.interpolate(b, scale_factor=2, mode="bilinear", align_corners=False)
        y = self.c3(torch.cat([a, up * 0.5], dim=1))
        return torch.sigmoid(self.head(y))


class ActivationNet(nn.Module):
    """Activations and elementwise unary/binary ops, each on its own slice of the input."""

    def __init__(self) -> None:
        super().__init__()
        self.prelu = nn.PReLU(4, init=0.1)
        self.prelu.weight.data = torch.tensor([0.1, -0.2, 0.3, 0.05])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * 4 - 2  # values in [-2, 2]
        acts = [
            F.relu6(x * 4),
            F.leaky_relu(x, 0.1),
            F.hardsigmoid(x),
            torch.tanh(x),
            F.gelu(x),
            F.gelu(x, approximate="tanh"),
            F.silu(x),
            F.softplus(x),
            F.elu(x, 0.7),
            self.prelu(x),
            torch.clamp(x, -0.5, 0.7),
            torch.softmax(x, dim=1),
            torch.abs(x),
            torch.exp(x),
            torch.sqrt(torch.abs(x) + 1),
            torch.log(torch.abs(x) + 0.5),
            torch.floor(x * 3),
            torch.ceil(x * 3),
            torch.sin(x) * torch.cos(x),
            torch.erf(x),
            torch.rsqrt(torch.abs(x) + 1),
            torch.reciprocal(x.abs() + 2),  # MIL inverse adds epsilon=1e-4: keep its effect small
            torch.pow(x.abs() + 0.1, 1.7),
            torch.maximum(x, x.flip(1)) - torch.minimum(x, x.flip(3)),
            x / (x.abs() + 2),
            torch.sign(x),
        ]
        return torch.cat(acts, dim=1)


class NormPoolNet(nn.Module):
    """Normalisation, pooling, transposed conv and resizes."""

    def __init__(self) -> None:
        super().__init__()
        self.inorm = nn.InstanceNorm2d(4, affine=True)
        self.inorm.weight.data.uniform_(0.5, 1.5)
        self.inorm.bias.data.uniform_(-0.5, 0.5)
        self.lnorm = nn.LayerNorm([16], elementwise_affine=True)
        self.lnorm.weight.data.uniform_(0.5, 1.5)
        self.lnorm.bias.data.uniform_(-0.5, 0.5)
        self.up = nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1)
        self.up2 = nn.ConvTranspose2d(4, 2, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.inorm(x)
        b = self.lnorm(x)
        p1 = F.avg_pool2d(x, 3, 2, padding=1, count_include_pad=True)
        p2 = F.avg_pool2d(x, 3, 2, padding=1, count_include_pad=False)
        p3 = F.lp_pool2d(x, 2, 2, 2)
        p4 = F.max_pool2d(x, 3, 2, padding=1)
        pooled = torch.cat([p1, p2, p3, p4], 1)
        n = F.interpolate(pooled, scale_factor=2, mode="nearest")
        c = F.interpolate(pooled, scale_factor=2, mode="bilinear", align_corners=True)
        t = self.up(p1)
        t2 = self.up2(p2)
        return torch.cat([a, b, n, c, t, t2], 1)


class TensorNet(nn.Module):
    """Layout ops and dense layers: linear, matmul, reshape, transpose, split, slice, pad, tile, gather, reduce."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 12)
        self.register_buffer("idx", torch.tensor([3, 0, 2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [1, 4, 16, 16]
        outs = []
        f = self.fc(x)  # linear on the last axis -> [1, 4, 16, 12]
        outs.append(f.reshape(1, -1))
        m = torch.matmul(x, x.transpose(2, 3))
        outs.append(m.permute(0, 2, 3, 1).reshape(1, -1))
        s1, s2 = torch.split(x, [1, 3], dim=1)
        outs.append((s1 * 2).reshape(1, -1))
        outs.append(s2[:, :, 1:9:2, ::3].reshape(1, -1))
        outs.append(x[:, 2, :, 5].reshape(1, -1))
        outs.append(F.pad(x, (1, 2, 0, 1), mode="constant", value=0.5).reshape(1, -1))
        outs.append(F.pad(x, (2, 1, 1, 2), mode="reflect").reshape(1, -1))
        outs.append(F.pad(x, (1, 1, 2, 0), mode="replicate").reshape(1, -1))
        outs.append(x[:, :2, :4, :4].repeat(1, 2, 1, 3).reshape(1, -1))
        outs.append(torch.index_select(x, 1, self.idx).reshape(1, -1))
        outs.append(x.mean(dim=(2, 3)))
        outs.append(x.sum(dim=1).reshape(1, -1))
        outs.append(x.amax(dim=3).reshape(1, -1))
        outs.append(x.amin(dim=2).reshape(1, -1))
        outs.append(torch.logsumexp(x, dim=2).reshape(1, -1))
        outs.append(x.norm(dim=1).reshape(1, -1))
        outs.append(torch.stack([x[0, 0], x[0, 1]], dim=0).unsqueeze(0).squeeze(0).reshape(1, -1))
        outs.append(x.flatten(1))
        return torch.cat(outs, dim=1)


ZooEntry = tuple[Callable[[], nn.Module], tuple[int, ...]]

ZOO: dict[str, ZooEntry] = {
    "vision": (VisionNet, (1, 3, 32, 32)),
    "activation": (ActivationNet, (1, 4, 8, 8)),
    "normpool": (NormPoolNet, (1, 4, 16, 16)),
    "tensor": (TensorNet, (1, 4, 16, 16)),
}


def make_module(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    factory, _ = ZOO[name]
    return factory().eval()


def sample_input(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)
