"""End to end: a PyTorch module with ``torch.where`` and ``F.scaled_dot_product_attention``,
converted for iOS18 (so attention stays one MIL op), runs on the onnx runtime as in PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch builds the test model (test-only dependency)")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from tests.runtime import mil_crosscheck, mil_zoo  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")

SHAPE = (1, 2, 6, 8)  # batch, heads, sequence, embedding
FP32_BOUND = 1e-4  # as the zoo's fp32 comparisons
FP16_REL_BOUND = 5e-3  # as the zoo's fp16 comparisons (relative to the output's largest value)


class WhereAttention(nn.Module):
    """A gated input, causal self-attention and attention with an additive float mask."""

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(8, 8)
        self.k = nn.Linear(8, 8)
        self.v = nn.Linear(8, 8)
        self.register_buffer("bias", torch.randn(6, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.where(x > 0.4, x, -0.5 * x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        biased = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias)
        return causal + 0.5 * biased


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def converted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, str]:
    torch.manual_seed(3)
    module = WhereAttention().eval()
    folder = tmp_path_factory.mktemp(f"torch_sdpa_{request.param}")
    path = mil_zoo.convert(module, SHAPE, folder / "sdpa.mlpackage", precision=request.param, target="iOS18")
    return module, path, request.param


def test_where_and_attention_match_torch(converted: tuple[nn.Module, Path, str]) -> None:
    module, path, precision = converted
    assert {"select", "scaled_dot_product_attention"} <= mil_zoo.op_types(path)
    for seed in (1, 2):
        x = mil_zoo.sample_input(SHAPE, seed=seed)
        got = mil_zoo.run(path, {"input": x})["output"]
        expected = mil_zoo.torch_out(module, x)
        assert got.shape == expected.shape
        bound = FP32_BOUND if precision == "fp32" else FP16_REL_BOUND * max(1.0, float(np.abs(expected).max()))
        assert np.abs(got - expected).max() <= bound


def test_protobuf_reader_gives_coremltools_graph(converted: tuple[nn.Module, Path, str]) -> None:
    mil_crosscheck.assert_same_translation(converted[1])
