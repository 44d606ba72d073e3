"""End to end: a PyTorch module with PixelUnshuffle, LocalResponseNorm and a slice assignment,
converted with ct.convert (iOS16: the assignment becomes ``scatter``; iOS18: ``slice_update``)
and run by the onnx backend, against PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch builds the ML Program test models (test-only dependency)")

from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.base import RuntimeOptions
from tests.runtime import mil_zoo

pytestmark = pytest.mark.filterwarnings("ignore")

SHAPE = (1, 3, 16, 20)


class UnshuffleNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.unshuffle = torch.nn.PixelUnshuffle(2)
        self.conv = torch.nn.Conv2d(12, 6, 3, padding=1)
        self.lrn = torch.nn.LocalResponseNorm(3, alpha=0.5, beta=0.75, k=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lrn(self.conv(self.unshuffle(x))).clone()
        y[:, :2] = torch.tanh(y[:, 4:6])  # a slice assignment
        return y


@pytest.mark.parametrize(("target", "assign_op"), [("iOS16", "scatter"), ("iOS18", "slice_update")])
def test_converted_module_matches_pytorch(target: str, assign_op: str, tmp_path: Path) -> None:
    from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend

    module = UnshuffleNet()
    path = mil_zoo.convert(module, SHAPE, tmp_path / "unshuffle.mlpackage", target=target)
    assert {"pixel_unshuffle", assign_op} <= mil_zoo.op_types(path)
    backend = OnnxBackend()
    model = Model.open(path)
    options = RuntimeOptions(cache_dir=tmp_path / "cache")
    predictor = backend.load(model, options)
    try:
        for seed in (1, 2):
            x = mil_zoo.sample_input(SHAPE, seed=seed)
            got = np.asarray(predictor.predict({"input": x})["output"])
            expected = mil_zoo.torch_out(module, x)
            assert got.shape == expected.shape
            assert np.abs(got - expected).max() <= 1e-4 * max(1.0, float(np.abs(expected).max()))
    finally:
        backend.evict(model, options)
