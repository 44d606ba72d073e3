"""Handlers that translate ML Program (MIL) ops to ONNX nodes, one small function per op.

Importing this package registers every handler in :data:`MIL_OPS`.
"""

from pytest_coreml_quality.runtime.onnx.mil_ops import (  # noqa: F401  (imported to register handlers)
    activation,
    attention,
    classify,
    elementwise,
    indexing,
    linear,
    normalization,
    pool,
    quantization,
    resize,
    sampling,
    scatter,
    selection,
    sequence,
    spatial,
    tensor,
)
from pytest_coreml_quality.runtime.onnx.mil_ops.registry import (
    MIL_OPS,
    MalformedWeights,
    MilContext,
    StaticValueRequired,
    is_supported,
    mil_op,
)

__all__ = ["MIL_OPS", "MalformedWeights", "MilContext", "StaticValueRequired", "is_supported", "mil_op"]
