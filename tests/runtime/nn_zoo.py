"""NeuralNetwork test zoo: small PyTorch modules converted with coremltools to NeuralNetwork
``.mlmodel`` files, which together cover the vision layer types the onnx runtime translates.

Each module is tiny (16x16 or 32x32 inputs, few channels) so the whole zoo converts in
seconds. Layer types that coremltools never emits from PyTorch are built directly with
``NeuralNetworkBuilder`` in ``test_nn_builder_layers.py`` against numpy references.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def convert_nn(module: nn.Module, shape: tuple[int, ...], path: Path, inputs: Any = None, outputs: Any = None) -> Path:
    """Trace ``module`` and save it as a NeuralNetwork ``.mlmodel`` at ``path``."""
    import coremltools as ct

    module = module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, torch.rand(*shape))
        mlmodel = ct.convert(
            traced,
            convert_to="neuralnetwork",
            inputs=inputs or [ct.TensorType(name="input", shape=shape)],
            outputs=outputs,
        )
    mlmodel.save(str(path))
    return path


def layer_types(spec: Any) -> set[str]:
    return {layer.WhichOneof("layer") for layer in spec.neuralNetwork.layers}


def randomise_norms(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm/InstanceNorm non-trivial statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm)):
            if getattr(m, "weight", None) is not None:
                m.weight.data = torch.rand(m.weight.shape, generator=g) + 0.5
                m.bias.data = torch.rand(m.bias.shape, generator=g) - 0.5
            if getattr(m, "running_mean", None) is not None:
                m.running_mean.data = torch.rand(m.running_mean.shape, generator=g) - 0.5
                m.running_var.data = torch.rand(m.running_var.shape, generator=g) + 0.5
    return module


class ConvBlock(nn.Module):
    """convolution (groups, dilation, stride, explicit padding), batchnorm, pooling, relu."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4)
        self.c3 = nn.Conv2d(8, 6, 3, stride=2, padding=0, bias=False)
        self.c4 = nn.Conv2d(6, 6, (1, 3), padding=(0, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = F.relu(self.bn(self.c1(x)))
        y = self.c2(y)
        a = F.max_pool2d(y, 3, stride=2, padding=1)
        b = F.avg_pool2d(y, 2, stride=2)
        c = F.avg_pool2d(y, 3, stride=1, padding=1, count_include_pad=False)
        d = F.max_pool2d(y, 3, stride=2, ceil_mode=True)
        e = self.c4(self.c3(y))
        g = F.adaptive_avg_pool2d(y, 1) + F.adaptive_max_pool2d(y, 1)
        return a, b, c, d, e, g


class Deconv(nn.Module):
    """deconvolution: stride, padding, output_padding, groups."""

    def __init__(self) -> None:
        super().__init__()
        self.d1 = nn.ConvTranspose2d(4, 6, 2, stride=2)
        self.d2 = nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1)
        self.d3 = nn.ConvTranspose2d(4, 4, 3, stride=1, padding=1, groups=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.d3(self.d2(F.relu(self.d1(x))))


class Activations(nn.Module):
    """Every activation coremltools maps onto the ``activation`` layer and its friends."""

    def __init__(self) -> None:
        super().__init__()
        self.prelu = nn.PReLU(4, init=0.1)
        self.prelu.weight.data = torch.tensor([0.1, -0.2, 0.3, 0.05])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = x * 6 - 3
        return (
            F.relu(x), F.relu6(x), F.leaky_relu(x, 0.1), F.elu(x, 0.7), torch.sigmoid(x), torch.tanh(x),
            F.softplus(x), F.hardsigmoid(x), self.prelu(x), F.gelu(x), F.silu(x), F.hardtanh(x, -1.5, 2.0),
            F.softsign(x), F.hardswish(x),
        )


class Upsampling(nn.Module):
    """upsample: nearest and bilinear (align corners true/false), fractional scales, sizes."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (
            F.interpolate(x, scale_factor=2, mode="nearest"),
            F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False),
            F.interpolate(x, scale_factor=3, mode="bilinear", align_corners=True),
            F.interpolate(x, scale_factor=1.5, mode="bilinear", align_corners=False),
            F.interpolate(x, size=(20, 12), mode="bilinear", align_corners=True),
            F.interpolate(x, size=(24, 40), mode="bilinear", align_corners=False),
        )


class TensorOps(nn.Module):
    """add/mul/sub/div/max/min with broadcasting, concat, split, slice, reshape, flatten,
    permute, transpose, softmax, reductions, innerProduct."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a, b = torch.chunk(x, 2, dim=1)
        s = a + b * 0.5 - b.mean(dim=(2, 3), keepdim=True) / (b.abs() + 1)
        m = torch.maximum(a, b) * torch.minimum(a, b)
        cat = torch.cat([s, m], dim=1)
        sliced = torch.cat([a[:, :, 2:7, 1:], x[:, 1:3, 2:7, 1:]], dim=1) * x[:, :1, 1:6:2, ::3].mean()
        flat = self.fc(cat[:, :4, :, :8].reshape(1, -1))
        p = cat.permute(0, 2, 3, 1).reshape(1, -1, 8)
        return (
            cat,
            sliced,
            torch.softmax(cat, dim=1),
            torch.softmax(flat, dim=-1),
            p.transpose(1, 2),
            cat.sum(dim=1, keepdim=True),
            cat.amax(dim=(2, 3)),
            torch.flatten(cat, 1),
        )


class Padding(nn.Module):
    """padding: constant, reflection, replication."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (
            F.pad(x, (1, 2, 3, 0), mode="constant", value=0.25),
            F.pad(x, (2, 1, 1, 2), mode="reflect"),
            F.pad(x, (3, 0, 0, 2), mode="replicate"),
        )


class Norms(nn.Module):
    """instance norm, layer norm over channels+space, l2 normalisation."""

    def __init__(self) -> None:
        super().__init__()
        self.inorm = nn.InstanceNorm2d(4, affine=True)
        self.lnorm = nn.LayerNorm([4, 8, 8])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.inorm(x), self.lnorm(x), F.normalize(x, dim=1)


ZOO: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "conv_block": (ConvBlock, (1, 3, 16, 16)),
    "deconv": (Deconv, (1, 4, 8, 8)),
    "activations": (Activations, (1, 4, 8, 8)),
    "upsampling": (Upsampling, (1, 3, 8, 8)),
    "tensor_ops": (TensorOps, (1, 4, 8, 8)),
    "padding": (Padding, (1, 2, 8, 8)),
    "norms": (Norms, (1, 4, 8, 8)),
}


def make_module(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomise_norms(ZOO[name][0](), seed).eval()


def sample_input(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def torch_outputs(module: nn.Module, x: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(torch.from_numpy(x))
    out = out if isinstance(out, (tuple, list)) else (out,)
    return [o.numpy() for o in out]


class DynamicHead(nn.Module):
    """What a BlazeFace-style detector head converts to: a channel constantPad on the
    shortcut, reshapes whose target is computed from ``x.shape`` (getShape, gather,
    floorDiv, concatND, reshapeDynamic) and ``torch.where`` (whereBroadcastable)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = self.conv(x) + F.pad(x, (0, 0, 0, 0, 0, 2), value=0.0)
        n = x.shape[0]
        anchors = y.permute(0, 2, 3, 1).reshape(n, -1, 3)
        gated = torch.where(y > 0.3, y, y * 0.5 + 0.15)  # continuous: fp16 may flip the test near 0.3
        return anchors, gated


ZOO["dynamic_head"] = (DynamicHead, (1, 4, 8, 8))


def zoo_inputs(name: str) -> Any:
    """The input declaration ``convert_nn`` is given for a zoo module (None: fixed shape).

    ``dynamic_head`` takes enumerated shapes, as BlazeFace does: with one fixed shape
    coremltools would fold the shape arithmetic into reshapeStatic."""
    if name != "dynamic_head":
        return None
    import coremltools as ct

    shape = ZOO[name][1]
    sizes = ct.EnumeratedShapes(shapes=[shape, (2, *shape[1:]), (1, shape[1], 16, 16)], default=shape)
    return [ct.TensorType(name="input", shape=sizes)]


def build_nd(inputs: dict[str, tuple[int, ...]], add: Callable[[Any], None], path: Path,
             outputs: Sequence[str] = ("out",)) -> Path:
    """A rank-N (exact array mapping) NeuralNetwork whose layers ``add`` appends to a
    ``NeuralNetworkBuilder``; its outputs are the blobs ``outputs``. For layer types and field
    values coremltools' converters do not emit, tested against numpy references of NeuralNetwork.proto."""
    import coremltools as ct
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    builder = NeuralNetworkBuilder([(k, datatypes.Array(*s)) for k, s in inputs.items()], [(o, None) for o in outputs],
                                   disable_rank5_shape_mapping=True)
    add(builder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ct.utils.save_spec(builder.spec, str(path))
    return path
