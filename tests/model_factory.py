"""Tiny Core ML models built in the tests with PyTorch + coremltools (test-only dependency)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def convert_quietly(*args: Any, **kwargs: Any) -> Any:
    """``coremltools.convert`` without its progress bars and per-pass chatter."""
    import coremltools as ct

    from pytest_coreml_quality.quiet import quiet_coremltools

    with quiet_coremltools():
        return ct.convert(*args, **kwargs)


def tiny_conv_net(in_channels: int = 3, out_channels: int = 1) -> Any:
    """A two-conv network ending in a sigmoid, traced for conversion."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(in_channels, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, out_channels, 3, padding=1),
        torch.nn.Sigmoid(),
    ).eval()
    return net


def save_image_model(
    path: Path,
    *,
    width: int = 48,
    height: int = 32,
    color_layout: str = "RGB",
    scale: float = 1 / 255,
    bias: list[float] | None = None,
    convert_to: str = "neuralnetwork",
    flexible: str | None = None,
) -> Path:
    """Save an image-in / grayscale-image-out model; ``flexible`` is None, 'enumerated' or 'range'."""
    import coremltools as ct
    import torch

    channels = 1 if color_layout == "GRAYSCALE" else 3
    net = tiny_conv_net(channels)
    example = torch.rand(1, channels, height, width)
    traced = torch.jit.trace(net, example)
    shape: Any = example.shape
    if flexible == "enumerated":
        shape = ct.EnumeratedShapes(shapes=[(1, channels, height, width), (1, channels, height * 2, width * 2)], default=(1, channels, height, width))
    elif flexible == "range":
        shape = ct.Shape(shape=(1, channels, ct.RangeDim(16, 256, default=height), ct.RangeDim(16, 256, default=width)))
    layout = getattr(ct.colorlayout, color_layout)
    bias = bias if bias is not None else [-0.5] * channels
    # coremltools takes a grayscale bias as a number, colour biases as a list.
    bias_arg: Any = bias[0] if channels == 1 else bias
    kwargs: dict[str, Any] = {}
    if convert_to == "mlprogram":
        kwargs["minimum_deployment_target"] = ct.target.iOS16
    model = convert_quietly(
        traced,
        inputs=[ct.ImageType(name="x_1", shape=shape, scale=scale, bias=bias_arg, color_layout=layout)],
        outputs=[ct.ImageType(name="activation_out", color_layout=ct.colorlayout.GRAYSCALE)] if flexible is None else None,
        convert_to=convert_to,
        **kwargs,
    )
    model.save(str(path))
    return path


def save_array_model(path: Path, *, convert_to: str = "neuralnetwork", size: int = 16) -> Path:
    """Save a multiarray-in / multiarray-out model (float32 1x3xSxS -> 1x1xSxS)."""
    import coremltools as ct
    import torch

    net = tiny_conv_net()
    example = torch.rand(1, 3, size, size)
    kwargs: dict[str, Any] = {}
    if convert_to == "mlprogram":
        kwargs.update(minimum_deployment_target=ct.target.iOS16, compute_precision=ct.precision.FLOAT32)
    model = convert_quietly(
        torch.jit.trace(net, example),
        inputs=[ct.TensorType(name="input", shape=example.shape)],
        outputs=[ct.TensorType(name="mask")],
        convert_to=convert_to,
        **kwargs,
    )
    model.save(str(path))
    return path


CLASSIFIER_LABELS = ("cat", "dog", "fish", "bird")


def tiny_classifier_net() -> Any:
    """3x16x16 image -> 4 class probabilities (conv, relu, linear, softmax)."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        # 8 x 16 x 16 features -> a 2048 x 4 linear weight, above coremltools' 2048-element
        # weight_threshold, so compression recipes have a tensor to compress.
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 16 * 16, len(CLASSIFIER_LABELS)),
        torch.nn.Softmax(dim=1),
    ).eval()


def save_mlprogram_classifier(path: Path, labels: Any = CLASSIFIER_LABELS) -> tuple[Path, Any]:
    """An fp32 ML Program classifier (``classifier_config``) and the torch net it was converted from."""
    import coremltools as ct
    import torch

    net = tiny_classifier_net()
    traced = torch.jit.trace(net, torch.rand(1, 3, 16, 16))
    model = convert_quietly(
        traced,
        inputs=[ct.ImageType(name="image", shape=(1, 3, 16, 16), scale=1 / 255)],
        classifier_config=ct.ClassifierConfig(list(labels)),
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT32,
        minimum_deployment_target=ct.target.iOS16,
    )
    model.save(str(path))
    return path, net
