"""Reproducible variants (issue 14 item 5): the same base + recipe gives byte-identical files
in any process, so a rebuilt variant keeps its content hash and its cached predictions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pytest_coreml_quality.cachefs import hash_path
from tests.variants.conftest import quiet
from tests.variants.tiny_models import save_mlprogram_model, save_nn_model

REPO = Path(__file__).resolve().parents[2]

# (recipe, base file, fast NeuralNetwork path): the fast path, coremltools' quantize_weights
# and coremltools' optimize.coreml each save the file their own way.
BUILDS = [("q4", "nn.mlmodel", True), ("q8", "nn.mlmodel", False), ("int8", "mp.mlpackage", True)]

_CHILD = """
import sys, warnings
from pathlib import Path
warnings.simplefilter("ignore")
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.variants.build import build_recipe
from pytest_coreml_quality.variants.recipes import parse_recipe
base, out = Path(sys.argv[1]), Path(sys.argv[2])
for spec in sys.argv[3:]:
    recipe, source, fast = spec.split(":")
    suffix = Path(source).suffix
    build_recipe(Model.open(base / source), parse_recipe(recipe), out / f"{recipe}{suffix}", fast_nn=fast == "1")
"""


def _with_metadata(source: Path, target: Path) -> None:
    """A copy of ``source`` with several userDefined entries: the map whose serialized
    order depends on the process."""
    import coremltools as ct

    mlmodel = ct.models.MLModel(str(source), skip_model_load=True)
    for i in range(8):
        mlmodel.user_defined_metadata[f"team.key{i}"] = f"value {i}"
    mlmodel.save(str(target))


def _build_in_new_processes(base: Path, outs: dict[Path, int]) -> None:
    """Build every recipe of BUILDS into each ``out`` dir, each in a process with its own
    hash seed; the processes run side by side (each spends most of its time importing)."""
    args = [f"{r}:{src}:{int(fast)}" for r, src, fast in BUILDS]
    running = []
    for out, seed in outs.items():
        out.mkdir()
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        running.append(subprocess.Popen([sys.executable, "-c", _CHILD, str(base), str(out), *args], cwd=REPO, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in running:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]


def test_the_same_recipe_gives_identical_bytes_in_two_processes(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    with quiet():
        _with_metadata(save_nn_model(tmp_path / "nn.mlmodel", channels=(3, 32, 64, 1), size=16), base / "nn.mlmodel")
        _with_metadata(save_mlprogram_model(tmp_path / "mp.mlpackage", channels=(3, 32, 64, 1), size=16),
                       base / "mp.mlpackage")
    _build_in_new_processes(base, {tmp_path / "one": 1, tmp_path / "two": 2})
    for recipe, source, _ in BUILDS:
        name = f"{recipe}{Path(source).suffix}"
        first, second = tmp_path / "one" / name, tmp_path / "two" / name
        assert hash_path(first) == hash_path(second), name
    # Map entries in key order, and the rewritten package still opens as an ML Program.
    from coremltools.proto import Model_pb2

    from pytest_coreml_quality.model import Model

    data = (tmp_path / "one" / "q4.mlmodel").read_bytes()
    spec = Model_pb2.Model()
    spec.ParseFromString(data)
    assert data == spec.SerializeToString(deterministic=True)
    assert Model.open(tmp_path / "one" / "int8.mlpackage").kind == "mlProgram"
