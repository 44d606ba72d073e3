"""Helpers of the cache fault cases: a user's model and golden set, clean figures, damage."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pytest_coreml_quality.dataset import Dataset
from pytest_coreml_quality.evaluate import Evaluator
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.base import RuntimeOptions
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend
from pytest_coreml_quality.variants import build_variant

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
RECIPES = ("base", "q8", "q4")
FIGURES = ("iou", "mae", "dice")


@dataclass
class Run:
    """What one run over the cache gave: figures per recipe and the notes it printed."""

    figures: dict[str, dict[str, float]]
    notes: list[str] = field(default_factory=list)
    images_run: int = 0  # predictions computed (not read from the prediction cache)


@dataclass
class UserFiles:
    """A user's model and golden set, in a folder of their own (never written by the plugin)."""

    model_path: Path
    dataset_dir: Path

    def fingerprint(self) -> str:
        """One hash over every file the user owns (names and bytes)."""
        h = hashlib.blake2b()
        for root in (self.model_path.parent, self.dataset_dir):
            for f in sorted(p for p in root.rglob("*") if p.is_file()):
                h.update(str(f).encode())
                h.update(f.read_bytes())
        return h.hexdigest()


def make_user_files(root: Path, images: int = 3) -> UserFiles:
    """A copy of the fixture model and the first ``images`` photos of the committed golden set."""
    (root / "Models").mkdir(parents=True)
    model_path = root / "Models" / "TinySeg.mlmodel"
    shutil.copy(FIXTURES / "models" / "TinySeg.mlmodel", model_path)
    golden = root / "golden"
    for sub in ("images", "masks"):
        (golden / sub).mkdir(parents=True)
    for photo in sorted((FIXTURES / "golden" / "images").iterdir())[:images]:
        shutil.copy(photo, golden / "images" / photo.name)
        mask = next((FIXTURES / "golden" / "masks").glob(f"{photo.stem}.*"))
        shutil.copy(mask, golden / "masks" / mask.name)
    return UserFiles(model_path, golden)


def run_once(user: UserFiles, cache: Path, dataset: Dataset | None = None) -> Run:
    """One run as the session does it, with fresh in-memory state: variants, loads, predictions."""
    notes: list[str] = []
    dataset = dataset or Dataset.open(user.dataset_dir)
    model = Model.open(user.model_path)
    backend = OnnxBackend(note=notes.append)
    evaluator = Evaluator(dataset, cache_dir=cache, note=notes.append)
    options = RuntimeOptions(cache_dir=cache / "compiled")
    figures: dict[str, dict[str, float]] = {}
    images_run = 0
    for recipe in RECIPES:
        variant = build_variant(model, recipe, cache / "variants", note=notes.append)
        result = evaluator.evaluate(backend=backend, model=Model.open(variant.path), options=options)
        figures[recipe] = {name: result.summary[name] for name in FIGURES}
        figures[recipe]["size_bytes"] = float(variant.size_bytes)
        images_run += result.timings.cache_misses
    return Run(figures, notes, images_run)


# --- finding entries ------------------------------------------------------------------------


def compiled_entry(cache: Path, recipe: str, user: UserFiles) -> Path:
    model = Model.open(user.model_path)
    variant = build_variant(model, recipe, cache / "variants")
    return OnnxBackend().cache_path(Model.open(variant.path), RuntimeOptions(cache_dir=cache / "compiled"))


def variant_entry(cache: Path, recipe: str, user: UserFiles) -> Path:
    model = Model.open(user.model_path)
    return build_variant(model, recipe, cache / "variants").path.parent


def prediction_entries(cache: Path) -> list[Path]:
    return sorted((cache / "predictions").rglob("*.mask"))


# --- damage ----------------------------------------------------------------------------------


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def flip_bytes(path: Path, every: int = 64) -> None:
    """Flip one bit in every ``every``-th byte (same size, other content).

    The bit is the second-highest of the top byte of a little-endian float32, so flipped
    weights change a lot: the old cache trusted them and reported IoU 0 with exit 0.
    """
    data = bytearray(path.read_bytes())
    for at in range(3, len(data), every):
        data[at] ^= 0x40
    path.write_bytes(bytes(data))


def garbage(path: Path, size: int = 8192) -> None:
    path.write_bytes(os.urandom(size))


def swap(a: Path, b: Path) -> None:
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)


# --- killed writers --------------------------------------------------------------------------


_KILLER = """
import json, os, re, signal, sys, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {root!r})
from tests.faults import _cache_helpers  # imports the plugin once, before any fork
import coremltools, onnx, onnxruntime  # the plugin imports these lazily: once here, not per child
jobs = {jobs!r}
outcome = {{}}
for name, (code, target) in jobs.items():
    pid = os.fork()
    if pid == 0:
        real = os.replace
        def replace(src, dst, target=target, real=real, **kwargs):
            if re.search(target, str(dst)):
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst, **kwargs)
        os.replace = replace
        try:
            exec(code, {{"h": _cache_helpers}})
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    outcome[name] = os.WTERMSIG(status) if os.WIFSIGNALED(status) else -os.WEXITSTATUS(status)
print(json.dumps(outcome))
"""


def run_killed_before_rename(jobs: dict[str, tuple[str, str]]) -> dict[str, int]:
    """Run each job's code in a process that SIGKILLs itself when it renames something onto its target.

    ``jobs`` maps a name to ``(code, target)``: Python code (helpers of this module as ``h``)
    and a regular expression matching the cache entry being written. The entry is complete
    in its temporary location at that moment: the worst case for a later run, which must
    not trust it. One fresh interpreter imports the plugin once and forks a child per job
    (before any onnxruntime session exists in it); returns the signal that ended each child.
    """
    root = str(Path(__file__).resolve().parents[2])
    script = _KILLER.format(root=root, jobs=jobs)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=root)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
