"""Small conv models for the variant tests, built without torch (fast, deterministic).

Layer widths are chosen so that coremltools' default ``weight_threshold`` (2048 elements)
selects the middle convolutions for compression, and so that 32-wide blocks and 16-wide
channel groups divide their channel counts.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np


def save_nn_model(path: Path, channels: tuple[int, ...] = (3, 32, 64, 64, 1), size: int = 32, seed: int = 0) -> Path:
    """A NeuralNetwork ``.mlmodel``: 3x3 convs with biases, ReLUs, a final sigmoid."""
    import coremltools as ct
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    rng = np.random.default_rng(seed)
    builder = NeuralNetworkBuilder(
        [("input", datatypes.Array(channels[0], size, size))], [("mask", datatypes.Array(channels[-1], size, size))]
    )
    prev = "input"
    last = len(channels) - 2
    for i, (cin, cout) in enumerate(zip(channels[:-1], channels[1:])):
        weights = (rng.standard_normal((3, 3, cin, cout)) / np.sqrt(9 * cin)).astype(np.float32)
        builder.add_convolution(
            f"conv{i}", kernel_channels=cin, output_channels=cout, height=3, width=3, stride_height=1,
            stride_width=1, border_mode="same", groups=1, W=weights,
            b=(0.1 * rng.standard_normal(cout)).astype(np.float32), has_bias=True,
            input_name=prev, output_name=f"conv{i}_out",
        )  # fmt: skip
        if i < last:
            builder.add_activation(f"relu{i}", "RELU", f"conv{i}_out", f"relu{i}_out")
            prev = f"relu{i}_out"
        else:
            builder.add_activation("sigmoid", "SIGMOID", f"conv{i}_out", "mask")
    ct.utils.save_spec(builder.spec, str(path))
    return path


def save_mlprogram_model(
    path: Path, channels: tuple[int, ...] = (3, 32, 64, 64, 1), size: int = 32, seed: int = 0, ios: int = 18
) -> Path:
    """The same network as an ML Program ``.mlpackage`` (fp16 weights, opset of iOS ``ios``)."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    target = getattr(ct.target, f"iOS{ios}")

    rng = np.random.default_rng(seed)
    params = []
    for cin, cout in zip(channels[:-1], channels[1:]):
        w = (rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(9 * cin)).astype(np.float32)
        params.append((w, (0.1 * rng.standard_normal(cout)).astype(np.float32)))

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, channels[0], size, size))], opset_version=target)
    def program(input):  # noqa: A002 - the feature is called 'input'
        x = input
        for i, (w, b) in enumerate(params):
            x = mb.conv(x=x, weight=w, bias=b, pad_type="same", name=f"conv{i}")
            x = mb.relu(x=x) if i < len(params) - 1 else mb.sigmoid(x=x, name="mask")
        return x

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        mlmodel = ct.convert(program, convert_to="mlprogram", minimum_deployment_target=target)
        mlmodel.save(str(path))
    return path
