"""Fault suite, inputs: broken model files, golden sets, manifests, options and cache directories.

Each case runs the plugin as a user would (pytester, in-process) on files it owns in a
workspace, and asserts the exact outcome (exit code and the key phrases of the message),
that no raw traceback or INTERNALERROR reaches the user, and that no file the user owns
was changed. Usage errors are raised at start, before any variant is built.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pytest_coreml_quality import cachecheck, dataset as dataset_module
from pytest_coreml_quality.cachecheck import CacheSpaceError
from pytest_coreml_quality.cachefs import atomic_write_bytes
from pytest_coreml_quality.dataset import Dataset
from pytest_coreml_quality.errors import DatasetError

from ..conftest import FIXTURES

MODEL = FIXTURES / "models" / "TinySeg.mlmodel"
PACKAGE = FIXTURES / "models" / "TinySeg.mlpackage"
GOLDEN = FIXTURES / "golden"
STEMS = ("scene_000", "scene_001", "scene_002")  # a jpg and a png photo among them
USAGE = pytest.ExitCode.USAGE_ERROR


pytestmark = pytest.mark.usefixtures("plain_run_environment")


# --- the user's workspace ---------------------------------------------------------------------


class Workspace:
    """Files a user owns (a model, a golden set, ...) in pytester's directory, and a fingerprint."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester
        self.root = pytester.path
        self.cache = self.root / "coreml-cache"  # ours, not the user's: left out of the fingerprint
        self.model = self.root / "TinySeg.mlmodel"
        shutil.copyfile(MODEL, self.model)
        self.golden = self.root / "golden"
        for stem in STEMS:
            image = next((GOLDEN / "images").glob(f"{stem}.*"))
            (self.golden / "images").mkdir(parents=True, exist_ok=True)
            (self.golden / "masks").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image, self.golden / "images" / image.name)
            shutil.copyfile(GOLDEN / "masks" / f"{stem}.png", self.golden / "masks" / f"{stem}.png")
        pytester.makepyfile(test_users_own="def test_users_own(): pass")
        self.before: dict[str, str] = {}

    def image(self, stem: str) -> Path:
        return next((self.golden / "images").glob(f"{stem}.*"))

    def fingerprint(self) -> dict[str, str]:
        """Relative path -> content hash (or link target) of every file the user owns."""
        prints: dict[str, str] = {}
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            here = Path(dirpath)
            dirnames[:] = [d for d in dirnames if d not in ("coreml-cache", ".pytest_cache", "__pycache__")]
            for name in [*filenames, *(d for d in dirnames if (here / d).is_symlink())]:
                p = here / name
                rel = p.relative_to(self.root).as_posix()
                if p.is_symlink():
                    prints[rel] = "-> " + os.readlink(p)
                elif p.is_file():
                    prints[rel] = hashlib.blake2b(p.read_bytes(), digest_size=16).hexdigest()
        return prints

    def run(self, *args: str, model: Path | str | None = None, dataset: Path | str | None = "golden") -> pytest.RunResult:
        """Run pytest with the plugin on the workspace; the fingerprint is taken just before."""
        self.before = self.fingerprint()
        options = [f"--coreml-model={model or self.model}"]
        if dataset is not None:
            options.append(f"--coreml-dataset={dataset}")
        if not any(a.startswith("--coreml-cache-dir") for a in args):
            options.append(f"--coreml-cache-dir={self.cache}")
        return self.pytester.runpytest("-p", "no:randomly", "-p", "no:cacheprovider", *options, *args)

    def assert_untouched(self) -> None:
        assert self.fingerprint() == self.before


@pytest.fixture
def ws(pytester: pytest.Pytester) -> Iterator[Workspace]:
    workspace = Workspace(pytester)
    yield workspace
    workspace.assert_untouched()


def usage_error(result: pytest.RunResult, *phrases: str) -> str:
    """Assert a usage error whose message holds every phrase, and no traceback; return it."""
    err = result.stderr.str()
    assert result.ret == USAGE, (result.ret, err, result.stdout.str())
    assert "Traceback" not in err and "INTERNALERROR" not in err + result.stdout.str()
    message = next((line for line in err.splitlines() if line.startswith("ERROR:")), "")
    text = err[err.index(message):] if message else err
    for phrase in phrases:
        assert phrase in text, (phrase, text)
    assert "test_users_own" not in result.stdout.str()  # nothing ran
    return text


# --- model files ------------------------------------------------------------------------------


def test_empty_model_file(ws: Workspace) -> None:
    (ws.root / "empty.mlmodel").write_bytes(b"")
    usage_error(ws.run(model="empty.mlmodel"), "--coreml-model:", "empty.mlmodel: is empty", "serialized Core ML Model")


def test_truncated_model_file(ws: Workspace) -> None:
    (ws.root / "cut.mlmodel").write_bytes(MODEL.read_bytes()[:300])
    usage_error(ws.run(model="cut.mlmodel"), "cut.mlmodel: cannot be read as a Core ML model", "DecodeError")


def test_garbage_model_file(ws: Workspace) -> None:
    (ws.root / "noise.mlmodel").write_bytes(bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8)))
    usage_error(ws.run(model="noise.mlmodel"), "noise.mlmodel: cannot be read as a Core ML model")


def test_directory_named_like_a_model_file(ws: Workspace) -> None:
    (ws.root / "folder.mlmodel").mkdir()
    usage_error(ws.run(model="folder.mlmodel"), "folder.mlmodel: is not a file", "expected a .mlmodel file")


def test_directory_that_is_not_a_package(ws: Workspace) -> None:
    (ws.root / "Plain.mlpackage" / "stuff").mkdir(parents=True)
    usage_error(ws.run(model="Plain.mlpackage"), "Plain.mlpackage: has no Manifest.json")


def test_package_without_its_weights_folder(ws: Workspace) -> None:
    shutil.copytree(PACKAGE, ws.root / "Partial.mlpackage")
    shutil.rmtree(ws.root / "Partial.mlpackage" / "Data" / "com.apple.CoreML" / "weights")
    usage_error(
        ws.run(model="Partial.mlpackage"),
        "Partial.mlpackage/Manifest.json: field 'itemInfoEntries.",
        "names folder Data/com.apple.CoreML/weights, which is missing",
    )


def test_package_without_weight_bin(ws: Workspace) -> None:
    shutil.copytree(PACKAGE, ws.root / "NoBin.mlpackage")
    (ws.root / "NoBin.mlpackage" / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").unlink()
    usage_error(ws.run(model="NoBin.mlpackage"), "weights/weight.bin: is missing (expected the weights model.mlmodel references)")


def test_package_with_a_broken_manifest(ws: Workspace) -> None:
    shutil.copytree(PACKAGE, ws.root / "Odd.mlpackage")
    (ws.root / "Odd.mlpackage" / "Manifest.json").write_text("{not json")
    usage_error(ws.run(model="Odd.mlpackage"), "Odd.mlpackage/Manifest.json: cannot be read (JSONDecodeError")


def test_missing_model_file(ws: Workspace) -> None:
    usage_error(ws.run(model="gone/Seg.mlmodel"), "gone/Seg.mlmodel: no such file or directory")


def _loop(root: Path, name: str) -> Path:
    """``name`` -> ``name.other`` -> ``name``: resolving either never ends."""
    (root / f"{name}.other").symlink_to(root / name)
    (root / name).symlink_to(root / f"{name}.other")
    return root / name


def test_model_path_in_a_symlink_loop(ws: Workspace) -> None:
    _loop(ws.root, "Loop.mlmodel")
    usage_error(ws.run(model="Loop.mlmodel"), "--coreml-model / ini 'coreml_model': got 'Loop.mlmodel'", "symbolic-link loop")


# --- golden sets ------------------------------------------------------------------------------


def test_empty_golden_set(ws: Workspace) -> None:
    (ws.root / "bare" / "images").mkdir(parents=True)
    (ws.root / "bare" / "masks").mkdir()
    usage_error(ws.run(dataset="bare"), "invalid golden set (1 problem)", "the golden set is empty")


def test_golden_set_without_masks_folder_bounds_nothing_against_truth(ws: Workspace) -> None:
    # images/ only is an image-only set: a bound against the ground truth cannot be judged.
    shutil.rmtree(ws.golden / "masks")
    usage_error(ws.run("--coreml-min-iou=0.5"), "--coreml-min-iou", "has no ground-truth masks", "--coreml-dataset")


def test_golden_set_without_images_folder(ws: Workspace) -> None:
    shutil.rmtree(ws.golden / "images")
    usage_error(ws.run(), "golden/images: missing directory")


def test_golden_set_with_one_mask_missing(ws: Workspace) -> None:
    (ws.golden / "masks" / "scene_001.png").unlink()
    usage_error(ws.run(), "invalid golden set (1 problem)", "scene_001.png: image without mask")


def test_undecodable_photo(ws: Workspace) -> None:
    ws.image("scene_000").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    usage_error(ws.run(), "scene_000.jpg: cannot be decoded as an image")


def test_mask_of_another_size(ws: Workspace) -> None:
    mask = ws.golden / "masks" / "scene_002.png"
    with Image.open(mask) as im:
        im.resize((im.width + 1, im.height)).save(mask)
    usage_error(ws.run(), "scene_002.png: mask size", "differs from its image", "after EXIF orientation")


def test_golden_set_in_a_symlink_loop(ws: Workspace) -> None:
    _loop(ws.root, "goldloop")
    usage_error(ws.run(dataset="goldloop"), "--coreml-dataset / ini 'coreml_dataset'", "symbolic-link loop")


# --- manifests --------------------------------------------------------------------------------


def _manifest(ws: Workspace, name: str, content: str) -> str:
    (ws.golden / name).write_text(content)
    return f"golden/{name}"


def test_csv_manifest_without_image_column(ws: Workspace) -> None:
    path = _manifest(ws, "m.csv", "mask,weight\nmasks/scene_000.png,1\n")
    usage_error(ws.run(dataset=path), "m.csv: the header lacks column(s) image")


def test_json_manifest_that_is_not_json(ws: Workspace) -> None:
    path = _manifest(ws, "m.json", '[{"image": "images/scene_000.jpg",')
    usage_error(ws.run(dataset=path), "m.json: invalid JSON")


def test_json_manifest_that_is_not_a_list(ws: Workspace) -> None:
    path = _manifest(ws, "m.json", '{"image": "images/scene_000.jpg"}')
    usage_error(ws.run(dataset=path), "m.json: expected a list of")


def test_manifest_with_every_weight_zero(ws: Workspace) -> None:
    """Bug 7: all weights 0 used to pass validation and crash scoring with a raw ValueError."""
    rows = "".join(f"images/{ws.image(s).name},masks/{s}.png,0\n" for s in STEMS)
    path = _manifest(ws, "m.csv", "image,mask,weight\n" + rows)
    usage_error(ws.run(dataset=path), "m.csv: every listed sample has weight 0", "at least one weight > 0")


@pytest.mark.parametrize("weight", ["-1", "nan", "inf", "heavy"])
def test_manifest_with_an_impossible_weight(ws: Workspace, weight: str) -> None:
    path = _manifest(ws, "m.csv", f"image,mask,weight\nimages/scene_000.jpg,masks/scene_000.png,{weight}\n")
    usage_error(ws.run(dataset=path), "m.csv:2: field 'weight'", repr(weight))


def test_manifest_listing_one_image_twice_through_dotdot(ws: Workspace) -> None:
    """Bug 7: 'images/../images/x.jpg' is the same photo as 'images/x.jpg'."""
    rows = "images/scene_000.jpg,masks/scene_000.png\nimages/../images/scene_000.jpg,masks/scene_000.png\n"
    path = _manifest(ws, "m.csv", "image,mask\n" + rows)
    usage_error(ws.run(dataset=path), "m.csv:3: field 'image'", "scene_000.jpg is already listed at", "m.csv:2")


def test_manifest_listing_one_image_twice_through_a_symlink(ws: Workspace) -> None:
    (ws.golden / "alias").symlink_to(ws.golden / "images")
    rows = "images/scene_000.jpg,masks/scene_000.png\nalias/scene_000.jpg,masks/scene_000.png\n"
    path = _manifest(ws, "m.csv", "image,mask\n" + rows)
    usage_error(ws.run(dataset=path), "m.csv:3: field 'image'", "is already listed at")


def test_manifest_pointing_outside_its_folder_is_named_in_the_header(ws: Workspace) -> None:
    """Bug 7: allowed, but the header says which files lie outside the manifest's folder."""
    elsewhere = ws.root / "elsewhere"
    elsewhere.mkdir()
    shutil.copyfile(ws.image("scene_001"), elsewhere / ws.image("scene_001").name)
    rows = f"images/{ws.image('scene_000').name},masks/scene_000.png\n../elsewhere/{ws.image('scene_001').name},masks/scene_001.png\n"
    path = _manifest(ws, "m.csv", "image,mask\n" + rows)
    result = ws.run("--co", dataset=path)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [f"coreml-quality: dataset lists 1 file(s) outside {ws.golden}: {elsewhere / ws.image('scene_001').name}"]
    )


def test_manifest_inside_its_folder_adds_no_outside_line(ws: Workspace) -> None:
    path = _manifest(ws, "m.csv", "image,mask\nimages/scene_000.jpg,masks/scene_000.png\n")
    result = ws.run("--co", dataset=path)
    assert result.ret == pytest.ExitCode.OK
    assert "file(s) outside" not in result.stdout.str()


def test_manifest_of_an_unknown_type(ws: Workspace) -> None:
    path = _manifest(ws, "m.txt", "images/scene_000.jpg masks/scene_000.png\n")
    usage_error(ws.run(dataset=path), "m.txt: unsupported manifest type '.txt'")


# --- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "phrase"),
    [
        ("--coreml-load-rounds=0", "--coreml-load-rounds / ini 'coreml_load_rounds': got '0', expected a whole number >= 1"),
        ("--coreml-load-rounds=two", "got 'two', expected a whole number >= 1"),
        ("--coreml-max-mae=lots", "--coreml-max-mae / ini 'coreml_max_mae': got 'lots', expected a number"),
        ("--coreml-baseline-tolerance-size=x%", "--coreml-baseline-tolerance-size / ini 'coreml_baseline_tolerance_size'"),
        ("--coreml-backend=tpu", "got 'tpu', expected one of auto, coreml, onnx"),
        ("--coreml-precision=int4", "got 'int4', expected one of fp32, fp16"),
        ("--coreml-resample=sharp", "--coreml-resample / ini 'coreml_resample': got 'sharp'"),
        ("--coreml-variants=q99", "q99"),
    ],
)
def test_bad_option_values(ws: Workspace, option: str, phrase: str) -> None:
    usage_error(ws.run(option), phrase)


@pytest.mark.parametrize("option", ["--coreml-dataset", "--coreml-model", "--coreml-cache-dir", "--coreml-report-json"])
def test_an_empty_path_on_the_command_line_is_refused(ws: Workspace, option: str) -> None:
    """Weak spot: `--coreml-dataset=$GOLDEN` with GOLDEN unset skipped every quality item and
    passed; `--coreml-model=` opened the current folder as a model."""
    usage_error(ws.run(f"{option}="), f"{option}: got an empty value", "expected a path")


@pytest.mark.parametrize("spec", ["mean=0.5;std=0", "mean=0.5,0.5,0.5;std=0.2,0,0.2", "mean=0.5;std=nan", "mean=inf;std=1"])
def test_normalization_with_a_zero_or_non_finite_std_is_refused_at_start(ws: Workspace, spec: str) -> None:
    """Weak spot: a zero std used to be accepted until an item failed."""
    usage_error(
        ws.run(f"--coreml-normalization={spec}"),
        f"--coreml-normalization / ini 'coreml_normalization': got '{spec}'",
        "finite non-zero stds",
    )


def test_unknown_normalization_name(ws: Workspace) -> None:
    usage_error(ws.run("--coreml-normalization=zscore"), "got 'zscore', expected one of 0..1")


def test_unknown_output_name_is_refused_before_any_variant_is_built(ws: Workspace) -> None:
    """Weak spot: --coreml-output=missing used to be found only after the variants were built."""
    usage_error(
        ws.run("--coreml-output=alpha", "--coreml-variants=q8"),
        "--coreml-output:",
        "TinySeg.mlmodel",
        "has no output named 'alpha'",
        "one of 'activation_out'",
    )
    assert not (ws.cache / "variants").exists()


def test_output_that_cannot_hold_a_mask_is_refused_at_start(ws: Workspace) -> None:
    import coremltools as ct

    spec = ct.utils.load_spec(str(MODEL))
    spec.description.output[0].type.doubleType.SetInParent()  # a scalar output: no mask in it
    ct.utils.save_spec(spec, str(ws.root / "Scalar.mlmodel"))
    usage_error(
        ws.run("--coreml-output=activation_out", model="Scalar.mlmodel"),
        "--coreml-output:",
        "Scalar.mlmodel: output 'activation_out' is a double",
        "expected an image or multiarray output",
    )


@pytest.mark.parametrize("option", ["--coreml-min-tensor-psnr=30", "--coreml-max-kl=0.1", "--coreml-max-keypoints-moved=0.1"])
def test_a_bound_no_output_kind_of_the_run_has_is_refused_at_start(ws: Workspace, option: str) -> None:
    """Weak spot: a PSNR bound on a segmenter was never judged, and the run passed and recommended base."""
    usage_error(
        ws.run(option, "--coreml-variants=q8"),
        option.split("=")[0],
        "bounds a figure that is not measured here, since the model's output is read as: mask",
    )
    assert not (ws.cache / "variants").exists()


@pytest.mark.parametrize("spec", ["channel:1", "channel:5", "logits"])
def test_contract_an_8bit_image_output_cannot_follow_is_refused_at_start(ws: Workspace, spec: str) -> None:
    """Weak spot: these were ignored on a grayscale image output and the mask scored as 'prob'."""
    usage_error(
        ws.run(f"--coreml-mask={spec}", "--coreml-variants=q8"),
        "TinySeg.mlmodel",
        "--coreml-mask",
        "output 'activation_out' is an 8-bit grayscale image",
        f"which '{spec}' cannot read",
        "expected auto or prob",
    )
    assert not (ws.cache / "variants").exists()


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML exists on macOS")
def test_coreml_backend_off_macos_is_refused_at_start(ws: Workspace) -> None:
    usage_error(ws.run("--coreml-backend=coreml"), "--coreml-backend", "coreml backend needs macOS; use onnx or auto")


def test_ini_switch_with_an_unknown_value(ws: Workspace) -> None:
    ws.pytester.makeini("[pytest]\ncoreml_logits = maybe\n")
    usage_error(ws.run(), "--coreml-logits / ini 'coreml_logits': got 'maybe'")


@pytest.mark.parametrize(
    "option", ["--coreml-report-json", "--coreml-report-html", "--coreml-save-baseline", "--coreml-baseline"]
)
def test_report_path_in_a_symlink_loop(ws: Workspace, option: str) -> None:
    """Bug 6: a loop in any path option used to be an INTERNALERROR with a raw traceback."""
    _loop(ws.root, "out")
    usage_error(ws.run(f"{option}=out/report.json"), f"{option} / ini", "got 'out/report.json'", "symbolic-link loop")


# --- the cache directory ----------------------------------------------------------------------


def test_cache_dir_in_a_symlink_loop(ws: Workspace) -> None:
    _loop(ws.root, "cacheloop")
    usage_error(ws.run("--coreml-cache-dir=cacheloop"), "--coreml-cache-dir / ini 'coreml_cache_dir'", "symbolic-link loop")


def test_cache_dir_that_is_a_regular_file(ws: Workspace) -> None:
    """Bug 5: used to give a raw NotADirectoryError in every item."""
    (ws.root / "cachefile").write_text("my notes")
    usage_error(
        ws.run(f"--coreml-cache-dir={ws.root / 'cachefile'}"),
        "field '--coreml-cache-dir'",
        f"the cache directory {ws.root / 'cachefile'} is a regular file, not a directory",
    )


def test_cache_dir_under_a_regular_file(ws: Workspace) -> None:
    (ws.root / "cachefile").write_text("my notes")
    usage_error(
        ws.run(f"--coreml-cache-dir={ws.root / 'cachefile' / 'sub'}"),
        f"lies under {ws.root / 'cachefile'}, which is a regular file",
    )


def test_read_only_cache_dir(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root ignores chmod, so the permission check is shown a read-only directory instead."""
    ro = ws.root / "ro-cache"
    real_access = os.access

    def access(path: object, mode: int, *args: object, **kwargs: object) -> bool:
        if Path(os.fspath(path)) == ro and mode & os.W_OK:  # type: ignore[arg-type]
            return False
        return real_access(path, mode, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cachecheck.os, "access", access)
    usage_error(ws.run(f"--coreml-cache-dir={ro}"), f"the cache directory {ro} is not writable (permission denied)")


def test_cache_dir_that_is_a_broken_symlink(tmp_path: Path) -> None:
    (tmp_path / "cache").symlink_to(tmp_path / "unmounted" / "cache")
    problem = cachecheck.check_cache_dir(tmp_path / "cache")
    assert problem == f"is a symbolic link to a missing target ({tmp_path / 'unmounted' / 'cache'})"


def test_cache_dir_on_a_read_only_file_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(cachecheck.tempfile, "mkstemp", read_only)
    assert cachecheck.check_cache_dir(tmp_path / "c") == "is not writable (read-only file system)"


def test_cache_dir_that_cannot_be_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(Path, "mkdir", denied)
    assert cachecheck.check_cache_dir(tmp_path / "c") == "cannot be created (permission denied)"


def test_a_build_stopped_by_a_full_disk_leaves_the_old_entry_and_no_scratch(tmp_path: Path) -> None:
    from pytest_coreml_quality.cachefs import atomic_output

    entry = tmp_path / "variants" / "q8.mlpackage"
    entry.mkdir(parents=True)
    (entry / "old").write_text("previous build")
    with pytest.raises(CacheSpaceError, match=r"q8.mlpackage \(its size is unknown, .* free\)"):
        with atomic_output(entry) as tmp:
            tmp.mkdir()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what coremltools' save would raise
    assert [p.name for p in entry.parent.iterdir()] == ["q8.mlpackage"]
    assert (entry / "old").read_text() == "previous build"


def _fail_fsync_for(monkeypatch: pytest.MonkeyPatch, marker: str, code: int) -> None:
    """Make ``fsync`` fail with ``code`` for files whose path holds ``marker`` (Linux /proc)."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell which file an fsync is for")
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if marker in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_cache_dir_on_a_full_disk_is_refused_at_start(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_fsync_for(monkeypatch, ".coreml-quality-probe-", errno.ENOSPC)
    usage_error(ws.run(), f"the cache directory {ws.cache} is not writable (no space left on the device)")
    assert list(ws.cache.iterdir()) == []  # the probe cleaned up after itself


def test_full_disk_mid_run_is_one_clear_error_and_nothing_half_written(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug 5: ENOSPC while storing a prediction names the directory and the space needed."""
    _fail_fsync_for(monkeypatch, f"{os.sep}predictions{os.sep}", errno.ENOSPC)
    result = ws.run("-k", "quality and base", "--coreml-variants=")
    result.assert_outcomes(failed=1, deselected=4)
    out = result.stdout.str()
    assert "Traceback" not in out and "OSError" not in out
    result.stdout.fnmatch_lines(
        [
            f"*{ws.cache / 'predictions'}*: no space left on the device while writing the cache entry *.mask "
            "(* needed, * free); free some space or point --coreml-cache-dir at a larger disk*"
        ]
    )
    leftovers = [p.name for p in (ws.cache / "predictions").rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert leftovers == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_atomic_write_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    target = tmp_path / "entries" / "e.npy"
    target.parent.mkdir()
    _fail_fsync_for(monkeypatch, "entries", code)
    with pytest.raises(CacheSpaceError) as info:
        atomic_write_bytes(target, b"x" * 5000)
    message = str(info.value)
    assert message.startswith(f"{target.parent}: ")
    assert "e.npy (5.0 KB needed, " in message and " free)" in message
    assert ("quota" in message) == (code == errno.EDQUOT)
    assert list(target.parent.iterdir()) == []  # no temporary file, no partial entry


def test_other_write_errors_are_not_dressed_up_as_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_fsync_for(monkeypatch, str(tmp_path), errno.EIO)
    with pytest.raises(OSError) as info:
        atomic_write_bytes(tmp_path / "e.bin", b"x")
    assert not isinstance(info.value, CacheSpaceError) and info.value.errno == errno.EIO


# --- pytest-benchmark switched off ------------------------------------------------------------


def test_load_items_fall_back_to_the_plain_timer_without_pytest_benchmark(ws: Workspace) -> None:
    """Weak spot: '-p no:benchmark' used to make the load items error: fixture 'benchmark' not found."""
    report = ws.root / "report.json"
    result = ws.run("-p", "no:benchmark", "-k", "load", "--coreml-variants=", "--coreml-load-rounds=1",
                    f"--coreml-report-json={report}", dataset=None)
    result.assert_outcomes(passed=2, deselected=3)
    assert "fixture 'benchmark' not found" not in result.stdout.str()
    assert '"load_timer": "perf_counter (pytest-benchmark disabled)"' in report.read_text()
    report.unlink()  # written by the run on purpose: not a change to what the user had


# --- huge photos ------------------------------------------------------------------------------


def _pair(root: Path, size: tuple[int, int], mask_size: tuple[int, int] | None = None, fmt: str = "JPEG") -> None:
    """A photo with a bright block and its 1-bit mask marking the block."""
    w, h = size
    arr = np.full((h, w), 30, dtype=np.uint8)
    arr[h // 4 : h // 2, w // 4 : w // 2] = 220
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "L").convert("RGB").save(root / "images" / ("big.jpg" if fmt == "JPEG" else "big.png"), fmt)
    mw, mh = mask_size or size
    mask = np.zeros((mh, mw), dtype=bool)
    mask[mh // 4 : mh // 2, mw // 4 : mw // 2] = True
    Image.fromarray(mask).save(root / "masks" / "big.png")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_photos_above_the_working_size_are_decoded_reduced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    monkeypatch.setattr(dataset_module, "MAX_WORKING_PIXELS", 100 * 100)
    _pair(tmp_path, (400, 300), fmt=fmt)
    sample = next(iter(Dataset.open(tmp_path)))
    # The smallest whole factor within 10 000 pixels is 4: 100x75.
    assert sample.size == (100, 75) and sample.full_size == (400, 300)
    assert sample.mask.shape == (75, 100)
    full = np.zeros((300, 400), dtype=np.float32)
    full[75:150, 100:200] = 1.0
    # Each working pixel is the mean of the 4x4 block it stands for: soft only on the edges.
    np.testing.assert_allclose(sample.mask, full.reshape(75, 4, 100, 4).mean(axis=(1, 3)), atol=1 / 255)
    photo = np.asarray(sample.image)
    assert photo[25, 35].mean() > 200 and photo[60, 80].mean() < 50


def test_reduced_photos_keep_their_exif_orientation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A phone photo stored 400x300 and shown 300x400: reduced, it is still shown upright."""
    monkeypatch.setattr(dataset_module, "MAX_WORKING_PIXELS", 100 * 100)
    stored = np.full((300, 400, 3), 40, dtype=np.uint8)
    stored[:150, :200] = (250, 10, 10)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(stored).save(tmp_path / "images" / "phone.jpg", exif=exif.tobytes())
    shown = np.rot90(stored[..., 0] > 128, k=-1)  # the red block as displayed, 300 wide
    Image.fromarray(shown).save(tmp_path / "masks" / "phone.png")
    sample = next(iter(Dataset.open(tmp_path)))
    assert sample.size == (75, 100) and sample.full_size == (300, 400)
    red = np.asarray(sample.image)[..., 0] > 128
    assert (red == (sample.mask > 0.5)).mean() > 0.97  # the photo and its mask still overlap


def test_photos_within_the_working_size_are_decoded_as_before(tmp_path: Path) -> None:
    _pair(tmp_path, (400, 300))
    sample = next(iter(Dataset.open(tmp_path)))
    assert sample.size == (400, 300) and sample.full_size is None
    with Image.open(tmp_path / "images" / "big.jpg") as im:
        assert np.array_equal(np.asarray(sample.image), np.asarray(im.convert("RGB")))


def test_sizes_are_compared_before_reduction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 400x300 photo and a 399x300 mask both reduce to 100x75: still a mismatch."""
    monkeypatch.setattr(dataset_module, "MAX_WORKING_PIXELS", 100 * 100)
    _pair(tmp_path, (400, 300), mask_size=(399, 300))
    with pytest.raises(DatasetError, match=r"mask size 399x300 differs from its image .*\(400x300"):
        Dataset.open(tmp_path)


def test_pillows_decompression_bomb_limit_still_applies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50 * 50)  # 400x300 is more than twice that
    _pair(tmp_path, (400, 300))
    with pytest.raises(DatasetError, match="big.jpg: cannot be decoded as an image .DecompressionBombError") as info:
        Dataset.open(tmp_path)
    assert "expected at most 5000 pixels; for a file you trust, raise PIL.Image.MAX_IMAGE_PIXELS" in str(info.value)


def test_photos_below_twice_pillows_limit_open_without_its_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow's DecompressionBombWarning came out of PIL/Image.py on the user's terminal for a
    # photo the plugin decodes reduced anyway (the header names it).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400 * 200)  # 400x300 is above it, below twice it
    _pair(tmp_path, (400, 300))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert Dataset.open(tmp_path).sample("big").size == (400, 300)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_header_names_photos_decoded_reduced(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset_module, "MAX_WORKING_PIXELS", 100 * 100)
    _pair(ws.root / "bigset", (400, 300))
    result = ws.run("--co", dataset="bigset")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["coreml-quality: dataset image big is 400x300, scored at 100x75 (decoded reduced*"])


_MEASURE = """
import resource, sys
from pytest_coreml_quality.dataset import Dataset
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sample = next(iter(Dataset.open(sys.argv[1])))
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
print(sample.size[0], sample.size[1], grown)
"""


def test_a_144_megapixel_photo_is_decoded_in_bounded_memory(tmp_path: Path) -> None:
    """Weak spot: one 12000x12000 photo took gigabytes; decoding it now stays well under one."""
    side = 12000
    photo = Image.new("L", (side, side), 30)
    photo.paste(220, (side // 4, side // 4, side // 2, side // 2))
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    photo.save(tmp_path / "images" / "huge.jpg", quality=60)
    photo.point(lambda v: 255 if v > 128 else 0).save(tmp_path / "masks" / "huge.png")
    del photo
    # A fresh process, so its peak memory is this decode's alone.
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", _MEASURE, str(tmp_path)], capture_output=True, text=True, check=True
    )
    width, height, grown = (int(v) for v in done.stdout.split())
    assert (width, height) == (4000, 4000)  # factor 3 fits 16.8 MP
    # Full-size decoding held the RGB photo, copies and a float32 mask: over 1.2 GB.
    assert grown < 600e6, f"decoding grew the process by {grown / 1e6:.0f} MB"
