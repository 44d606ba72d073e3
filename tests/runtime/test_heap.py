"""heap.py: large blocks mapped while a cold load's session is created, and what it must not change."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.base import RuntimeOptions
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "fixtures" / "models" / "TinySeg.mlpackage"

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)

# Run in a fresh process (the malloc settings are process-wide). Like onnxruntime reordering
# weights, each step makes a transient copy, then the kept copy, then frees the transient:
# its hole lies below the kept block, so the heap cannot shrink over it, and every later
# block is larger than it, so it is never reused. Prints the resident growth in MiB.
_CHURN = r"""
import ctypes, json, sys
from pytest_coreml_quality.runtime.onnx import heap

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024

def block(size):
    address = libc.malloc(size)
    libc.memset(address, 1, size)  # resident, as a written copy is
    return address

def churn():
    start = status("VmRSS:")
    for i in range(24):
        transient = block((1 << 20) + i * 8192)
        block((3 << 19) + i * 8192)  # kept, larger than any hole
        libc.free(transient)
    return status("VmRSS:") - start

# A freed 16 MiB block raises glibc's dynamic mmap threshold, as any large model's first load does.
libc.free(libc.malloc(16 << 20))
out = {}
if sys.argv[1] == "mapped":
    with heap.large_blocks_mapped():
        out["inside"] = churn()
    out["after"] = churn()
else:
    out["inside"] = churn()
    resident = status("VmRSS:")
    heap.release_free_memory()
    out["released"] = resident - status("VmRSS:")
print(json.dumps(out))
"""


def _churn(mode: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", _CHURN, mode], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@glibc_only
def test_freed_large_blocks_stay_resident_without_it_and_are_returned_within_it() -> None:
    plain, mapped = _churn("plain"), _churn("mapped")
    # Kept blocks: 24 x ~1.6 MiB either way; the 24 holes of ~1.1 MiB stay resident only in the heap.
    assert plain["inside"] - mapped["inside"] > 20


@glibc_only
def test_release_returns_the_holes_a_build_left_in_the_heap() -> None:
    assert _churn("plain")["released"] > 20


@glibc_only
def test_after_the_block_large_allocations_reuse_the_heap_again() -> None:
    # Outside the loading block malloc behaves as it did before (heap reuse, no page faults
    # per block): the churn after it grows the heap like the plain run.
    mapped = _churn("mapped")
    assert mapped["after"] - mapped["inside"] > 20


def test_a_cold_loads_session_predicts_exactly_like_a_plain_session_of_its_graph(fresh_cache: Path) -> None:
    import onnxruntime as ort

    options = RuntimeOptions(cache_dir=fresh_cache)
    predictor = OnnxBackend(intra_op_threads=1).load(Model.open(FIXTURE), options)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    plain = ort.InferenceSession(str(predictor.graph_path), so, providers=["CPUExecutionProvider"])
    warm = OnnxBackend(intra_op_threads=1).load(Model.open(FIXTURE), options)
    feeds = {}
    for i in plain.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = (np.random.default_rng(3).random(shape) * 255).astype(np.float32)
    expected = plain.run(None, feeds)
    for session in (predictor.session, warm.session):
        for got, want in zip(session.run(None, feeds), expected, strict=True):
            assert np.array_equal(got, want)
