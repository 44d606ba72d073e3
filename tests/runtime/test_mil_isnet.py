"""Opt-in acceptance check on the real pretrained ISNet ML Program.

Set ``PYTEST_COREML_ISNET_DIR`` to the output directory of
``shared/tools/build_isnet_coreml.py`` (``ISNet_1024_1024.mlpackage`` and
``isnet_fp32.onnx``); without it the test is skipped (the model is 88 MB, AGPL, and
takes ~20 s per run on two cores).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch builds the ML Program test models (test-only dependency)")


from tests.runtime import mil_zoo

pytestmark = pytest.mark.filterwarnings("ignore")

ISNET_DIR = os.environ.get("PYTEST_COREML_ISNET_DIR")
# The reference ONNX graph holds the same (fp16-rounded) weights in fp32; the program's
# only fp16 rounding points are its input and output casts.
MASK_BOUND = 1e-3


@pytest.mark.skipif(not ISNET_DIR, reason="set PYTEST_COREML_ISNET_DIR to run the real ISNet check")
def test_real_isnet_mlpackage_matches_reference_onnx() -> None:
    import onnxruntime as ort

    root = Path(ISNET_DIR or "")
    rng = np.random.default_rng(0)
    # A smooth random "photo": blocks of colour, like real images rather than noise.
    coarse = rng.random((3, 16, 16)).astype(np.float32) * 255
    pixels = np.kron(coarse, np.ones((64, 64), dtype=np.float32))[None]
    got = mil_zoo.run(root / "ISNet_1024_1024.mlpackage", {"x_1": pixels})["activation_out"] / 255.0
    ref_session = ort.InferenceSession(str(root / "isnet_fp32.onnx"), providers=["CPUExecutionProvider"])
    ref = ref_session.run(None, {ref_session.get_inputs()[0].name: pixels / 255.0 - 0.5})[0]
    assert got.shape == (1, 1, 1024, 1024)
    assert np.abs(got - ref.reshape(got.shape)).max() <= MASK_BOUND


@pytest.mark.skipif(not ISNET_DIR, reason="set PYTEST_COREML_ISNET_DIR to run the real ISNet check")
def test_real_isnet_protobuf_reader_gives_coremltools_graph() -> None:
    """The protobuf reader gives coremltools' graph for the real 88 MB package (same nodes and weights)."""
    from tests.runtime import mil_crosscheck

    mil_crosscheck.assert_same_translation(Path(ISNET_DIR or "") / "ISNet_1024_1024.mlpackage")
