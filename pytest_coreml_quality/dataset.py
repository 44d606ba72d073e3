"""The golden set: photos paired with ground-truth masks, validated before any model runs.

Two layouts are accepted (each may also be *image-only*, see below):

* a directory with ``images/`` and ``masks/`` subdirectories, paired by file stem
  (``images/cat.jpg`` <-> ``masks/cat.png``; stems compare case-insensitively;
  extensions jpg, jpeg, png, webp, bmp, tif, tiff in any case; other files and hidden
  files are ignored; a sub-folder holding pictures is an error, not skipped);
* a manifest, CSV or JSON, listing ``image`` and ``mask`` paths relative to the
  manifest, with an optional ``weight`` (default 1) and ``tags``. A directory holding
  ``manifest.csv`` or ``manifest.json`` (and no ``images/``) is read through it.

Image-only golden sets: a directory with ``images/`` and no ``masks/``, a CSV manifest
without a ``mask`` column, or a JSON manifest none of whose rows has a ``mask``. Its
samples have no ground truth (``Sample.mask`` is None): figures against the ground truth
are not measured, drift against the base model still is. A set that has masks must
have one for every image (a missing mask is an error, never a silent image-only row).

Validation decodes every file and reports *every* problem at once in one
:class:`~pytest_coreml_quality.errors.DatasetError` (pairing by position, as the
article's script did, would silently shift all pairs after a missing file).

Decoding rules:

* EXIF orientation is applied to images and masks (``PIL.ImageOps.exif_transpose``),
  so a phone photo and its mask are compared the way they are displayed.
* Images become 8-bit RGB.
* A photo or mask larger than :data:`MAX_WORKING_PIXELS` (16.8 MP) is decoded reduced
  by the smallest whole factor that fits (JPEG draft mode, then a box filter), photo
  and mask alike: its figures are computed at that size and the report header says so.
  Pillow's decompression-bomb limit still refuses absurd files.
* Masks become float32 in [0, 1]: 8-bit grayscale / 255, 16-bit grayscale / 65535,
  1-bit as 0/1, float masks as they are (must lie in [0, 1]). Colour masks: the alpha
  channel when it is not fully opaque (a cut-out PNG), otherwise the luminance
  (ITU-R 601 luma, Pillow's ``convert("L")``). Soft masks stay soft; metrics that
  need a binary mask binarise at ``>= 0.5`` (see :mod:`pytest_coreml_quality.metrics`).

Decoded samples are cached in the :class:`Dataset` object: every variant of a run
evaluates the same decoded pixels, decoded once.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

from pytest_coreml_quality.errors import DatasetError
from pytest_coreml_quality.integrity import LFS_MESSAGE, is_lfs_pointer

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
MANIFEST_NAMES = ("manifest.csv", "manifest.json")
# Photos and masks above this many pixels are decoded reduced by a whole factor (photo and
# mask alike), and every figure of that pair is computed at the reduced size. Scoring one
# image takes about 70 bytes per pixel, so this bounds it near 1.2 GB; 12 MP phone photos
# and 4K frames stay below it and are scored at full size.
MAX_WORKING_PIXELS = 4096 * 4096
_EXIF_ORIENTATION = 0x0112
# Enough problems to act on without flooding the terminal.
_MAX_LISTED_PROBLEMS = 50


@dataclass(frozen=True)
class SampleEntry:
    """One image/mask pair as listed, before decoding (``mask_path`` None: image-only)."""

    id: str
    image_path: Path
    mask_path: Path | None
    weight: float = 1.0
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sample:
    """A decoded pair: ``image`` (RGB, EXIF-oriented) and ``mask`` (float32 in [0, 1], same size; None: no truth)."""

    entry: SampleEntry
    image: Image.Image = field(repr=False)
    mask: NDArray[np.float32] | None = field(repr=False)
    image_hash: str
    mask_hash: str  # "" without a mask
    # The files' (width, height) when they were decoded reduced (larger than MAX_WORKING_PIXELS).
    full_size: tuple[int, int] | None = None

    @property
    def id(self) -> str:
        return self.entry.id

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the image and its mask."""
        return self.image.size

    @property
    def weight(self) -> float:
        return self.entry.weight


class Dataset:
    """A validated golden set. Use :meth:`open`; iterate to get decoded :class:`Sample` objects."""

    def __init__(self, root: Path, entries: Sequence[SampleEntry], source: Path) -> None:
        self.root = root
        self.source = source  # the directory or the manifest file it was read from
        self.entries: tuple[SampleEntry, ...] = tuple(entries)
        self._decoded: dict[str, Sample] = {}
        self._lock = threading.Lock()
        self.whole: Dataset | None = None  # the golden set this is a shard of (see :meth:`shard`)

    # --- construction ---------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str], *, validate: bool = True, shard: tuple[int, int] | None = None) -> "Dataset":
        """Discover the golden set at ``path`` (directory or manifest) and validate it.

        ``shard=(index, count)`` gives that shard of it (:meth:`shard`), of which only the
        shard's own images are decoded and validated: the others are other jobs' work.
        Raises one :class:`DatasetError` listing every problem found.
        """
        if shard is not None:
            part = cls.open(path, validate=False).shard(*shard)
            if validate:
                part.validate()
            return part
        p = Path(path).expanduser()
        if not p.exists():
            raise DatasetError("no such file or directory", path=p, expected="a golden-set directory or manifest")
        if p.is_file():
            entries, problems = _read_manifest(p)
            root = p.parent
        elif (p / "images").is_dir() or (p / "masks").is_dir() or not _manifest_in(p):
            # images/ without masks/ is an image-only set (drift figures only).
            entries, problems = _discover_pairs(p)
            root = p
        else:
            manifest = _manifest_in(p)
            assert manifest is not None
            entries, problems = _read_manifest(manifest)
            root = p
        dataset = cls(root, entries, p)
        if not entries and not problems:
            problems.append(f"{p}: the golden set is empty (no image/mask pairs found)")
        if validate:
            # Decode the pairs that were found even when pairing failed elsewhere, so the
            # user sees every problem in one run, not one batch per attempt.
            problems.extend(dataset._decode_all())
        if problems:
            _raise(p, problems)
        return dataset

    def shard(self, index: int, count: int) -> "Dataset":
        """Shard ``index`` of ``count`` (numbered from 1): the images whose rank among the ids
        sorted by name is ``index - 1`` modulo ``count``, in this set's own order.

        Sorted ids make the split independent of manifest row order; shard sizes differ by
        one at most. Nothing is decoded here: :meth:`validate` the shard to decode its images.
        """
        rank = {sample_id: k for k, sample_id in enumerate(sorted(self.ids))}
        part = Dataset(self.root, [e for e in self.entries if rank[e.id] % count == index - 1], self.source)
        part.whole = self
        return part

    def listing_digest(self) -> str:
        """A hash of the listing (ids, weights, which have masks) in order: equal for the same golden
        set without decoding a pixel (shards compare it; :attr:`content_hash` needs every image)."""
        h = hashlib.blake2b(digest_size=16)
        for e in self.entries:
            h.update(f"{e.id}\0{e.weight!r}\0{e.mask_path is not None}\n".encode())
        return h.hexdigest()

    # --- access ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Sample]:
        for entry in self.entries:
            yield self.sample(entry.id)

    @property
    def outside_paths(self) -> tuple[Path, ...]:
        """Listed images and masks outside the golden set's folder (allowed, but worth saying).

        A manifest may point anywhere; a path outside its folder is often a mistake
        (``../`` one level too many) or a file the next checkout will not have.
        """
        root = _normal(self.root)
        outside: list[Path] = []
        for entry in self.entries:
            for p in (entry.image_path, entry.mask_path):
                if p is not None and not _normal(p).is_relative_to(root) and p not in outside:
                    outside.append(p)
        return tuple(outside)

    @property
    def reduced_samples(self) -> tuple[Sample, ...]:
        """Decoded samples whose files were too large and were decoded reduced."""
        with self._lock:
            decoded = list(self._decoded.values())
        return tuple(s for s in decoded if s.full_size is not None)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(e.id for e in self.entries)

    @property
    def has_truth(self) -> bool:
        """Whether the samples have ground-truth masks (False: an image-only golden set)."""
        if self.whole is not None:  # a shard scores what the whole set would
            return self.whole.has_truth
        return bool(self.entries) and all(e.mask_path is not None for e in self.entries)

    def sample(self, sample_id: str) -> Sample:
        """The decoded sample ``sample_id`` (decoded on first use, then served from memory)."""
        with self._lock:
            cached = self._decoded.get(sample_id)
        if cached is not None:
            return cached
        entry = next((e for e in self.entries if e.id == sample_id), None)
        if entry is None:
            raise KeyError(sample_id)
        problems: list[str] = []
        sample = _decode(entry, problems)
        if sample is None:
            _raise(self.source, problems)
        assert sample is not None
        with self._lock:
            return self._decoded.setdefault(sample_id, sample)

    def validate(self) -> None:
        """Decode every pair (keeping the result) and raise one error listing every problem."""
        problems = self._decode_all()
        if problems:
            _raise(self.source, problems)

    def _decode_all(self) -> list[str]:
        """Decode every pair not decoded yet; return the problems found."""
        problems: list[str] = []
        for entry in self.entries:
            if entry.id in self._decoded:
                continue
            sample = _decode(entry, problems)
            if sample is not None:
                with self._lock:
                    self._decoded.setdefault(entry.id, sample)
        return problems

    @property
    def content_hash(self) -> str:
        """A hash of every sample's id, weight, pixels and mask (stable across copies)."""
        return content_digest((s.id, s.weight, s.image_hash, s.mask_hash) for s in self)

    def __repr__(self) -> str:
        return f"Dataset({str(self.source)!r}, {len(self)} samples)"


def content_digest(samples: Iterable[tuple[str, float, str, str]]) -> str:
    """:attr:`Dataset.content_hash` from (id, weight, image hash, mask hash) in the set's order
    (a merge of shard reports recomputes the whole set's hash from its shards' pieces)."""
    h = hashlib.blake2b(digest_size=16)
    for sample_id, weight, image_hash, mask_hash in samples:
        h.update(f"{sample_id}\0{weight!r}\0{image_hash}\0{mask_hash}\n".encode())
    return h.hexdigest()


# --- discovery -----------------------------------------------------------------------


def _manifest_in(directory: Path) -> Path | None:
    for name in MANIFEST_NAMES:
        if (directory / name).is_file():
            return directory / name
    return None


def _listed_files(directory: Path, problems: list[str]) -> list[Path]:
    listed = sorted(
        f for f in directory.iterdir() if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES
    )
    # A name that is not UTF-8 reaches Python as lone surrogates, which no id, hash, report
    # or JUnit file can encode: name it here rather than fail deep inside a report.
    unnamed = [f for f in listed if not _is_utf8(f.name)]
    for f in unnamed:
        shown = os.fsencode(f).decode("utf-8", "backslashreplace")
        problems.append(f"{shown}: the file name is not valid UTF-8 (expected a UTF-8 name: rename the file)")
    for folder in _folders_with_pictures(directory):
        problems.append(
            f"{folder}: a folder of pictures inside {directory.name}/, whose sub-folders are not read "
            f"(expected the files directly in {directory}, or a manifest listing them)"
        )
    return [f for f in listed if f not in unnamed]


def _folders_with_pictures(directory: Path) -> list[Path]:
    """Sub-folders of ``directory`` holding files of a read type, at any depth: without this
    their photos would be left out of the golden set without a word. Hidden folders and macOS
    archive leftovers (``__MACOSX``) are not golden-set content; symbolic links are not followed."""
    found = []
    for sub in sorted(directory.iterdir()):
        if sub.name.startswith(".") or sub.name == "__MACOSX" or sub.is_symlink() or not sub.is_dir():
            continue
        try:
            if any(f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".") for f in sub.rglob("*")):
                found.append(sub)
        except OSError:  # an unreadable sub-folder cannot hold what the user meant to include
            continue
    return found


def _unsupported_hint(directory: Path, stem: str) -> str:
    """Name the partner file that is there but was skipped for its type (``cat.gif``), if any."""
    skipped = sorted(
        f.name for f in directory.iterdir()
        if f.stem.casefold() == stem and f.is_file() and f.suffix.lower() not in IMAGE_SUFFIXES
    )
    if not skipped:
        return ""
    supported = ", ".join(sorted(s[1:] for s in IMAGE_SUFFIXES))
    return f"; {', '.join(skipped)} is there but not read (expected one of the types {supported})"


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _group_by_stem(files: list[Path], kind: str, problems: list[str]) -> tuple[dict[str, Path], set[str]]:
    """Files by case-folded stem, and the stems shared by several files (reported as problems)."""
    groups: dict[str, list[Path]] = {}
    for f in files:
        groups.setdefault(f.stem.casefold(), []).append(f)
    unique: dict[str, Path] = {}
    shared: set[str] = set()
    for stem, group in groups.items():
        if len(group) > 1:
            names = ", ".join(str(f) for f in group)
            problems.append(f"{names}: {len(group)} {kind} files share the stem '{group[0].stem}' (keep one)")
            shared.add(stem)
        else:
            unique[stem] = group[0]
    return unique, shared


def _discover_pairs(root: Path) -> tuple[list[SampleEntry], list[str]]:
    problems: list[str] = []
    images_dir, masks_dir = root / "images", root / "masks"
    if not images_dir.is_dir():
        problems.append(
            f"{images_dir}: missing directory (expected {root}/images, with {root}/masks for ground truth, or a manifest)"
        )
        return [], problems
    images, shared_images = _group_by_stem(_listed_files(images_dir, problems), "image", problems)
    if not masks_dir.is_dir():  # image-only: every image is a sample without ground truth
        return [SampleEntry(id=images[stem].stem, image_path=images[stem], mask_path=None) for stem in sorted(images)], problems
    masks, shared_masks = _group_by_stem(_listed_files(masks_dir, problems), "mask", problems)
    # A stem already reported as shared is not reported again as lacking its partner.
    for stem in sorted(images.keys() - masks.keys() - shared_masks):
        problems.append(
            f"{images[stem]}: image without mask (no file named '{images[stem].stem}.*' in {masks_dir})"
            + _unsupported_hint(masks_dir, stem)
        )
    for stem in sorted(masks.keys() - images.keys() - shared_images):
        problems.append(
            f"{masks[stem]}: mask without image (no file named '{masks[stem].stem}.*' in {images_dir})"
            + _unsupported_hint(images_dir, stem)
        )
    entries = [
        SampleEntry(id=images[stem].stem, image_path=images[stem], mask_path=masks[stem])
        for stem in sorted(images.keys() & masks.keys())
    ]
    return entries, problems


def _read_manifest(path: Path) -> tuple[list[SampleEntry], list[str]]:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        return [], [f"{path}: unsupported manifest type '{path.suffix}' (expected .csv or .json)"]
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"{path}: cannot be read ({exc})"]
    rows: list[tuple[str, Any]] = []
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        fields = [f.strip().lower() for f in reader.fieldnames or []]
        if "image" not in fields:
            return [], [f"{path}: the header lacks column(s) image (expected image[,mask][,weight][,tags])"]
        for number, row in enumerate(reader, start=2):
            rows.append((f"{path}:{number}", {(k or "").strip().lower(): v for k, v in row.items()}))
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            return [], [f"{path}: invalid JSON ({exc})"]
        if isinstance(data, dict) and "samples" in data:
            data = data["samples"]
        if not isinstance(data, list):
            return [], [f"{path}: expected a list of {{\"image\", \"mask\"}} objects (or {{\"samples\": [...]}})"]
        rows = [(f"{path}: entry {i}", row) for i, row in enumerate(data)]
    return _entries_from_rows(path.parent, rows, path)


def _entries_from_rows(
    base: Path, rows: list[tuple[str, Any]], source: Path | None = None
) -> tuple[list[SampleEntry], list[str]]:
    problems: list[str] = []
    entries: list[SampleEntry] = []
    seen_images: dict[Path, str] = {}
    weights: list[float] = []
    base = _normal(base)
    # No row names a mask (CSV: no mask column): an image-only set. Otherwise every row needs one.
    with_masks = any(isinstance(row, dict) and "mask" in row for _, row in rows)
    for where, row in rows:
        if not isinstance(row, dict):
            problems.append(f"{where}: expected an object with 'image' and 'mask'")
            continue
        image, mask = row.get("image"), row.get("mask") if with_masks else ""
        bad = [k for k, v in (("image", image), ("mask", mask)) if (with_masks or k == "image") and (not isinstance(v, str) or not v.strip())]
        if bad:
            problems.append(f"{where}: field(s) {', '.join(repr(b) for b in bad)} missing or empty (expected a path)")
            continue
        assert isinstance(image, str) and isinstance(mask, str)
        image_path = _normal(base / image.strip())
        mask_path = _normal(base / mask.strip()) if with_masks else None
        row_ok = True
        for kind, p in (("image", image_path), ("mask", mask_path)):
            if p is not None and not p.is_file():
                problems.append(f"{where}: field '{kind}': {p} does not exist")
                row_ok = False
        weight = _parse_weight(row.get("weight"), where, problems)
        if weight is not None:
            weights.append(weight)
        tags = _parse_tags(row.get("tags"), where, problems)
        # One file reached by two spellings ('a.jpg', 'sub/../a.jpg', a symlink) is one image.
        identity = _identity(image_path)
        if identity in seen_images:
            problems.append(f"{where}: field 'image': {image_path} is already listed at {seen_images[identity]}")
            row_ok = False
        seen_images.setdefault(identity, where)
        if row_ok and weight is not None and tags is not None:
            entries.append(SampleEntry(_manifest_id(base, image_path), image_path, mask_path, weight, tags))
    if weights and not any(weights):
        # The weighted mean of the metrics would divide by zero at scoring time.
        problems.append(f"{source or base}: every listed sample has weight 0 (expected at least one weight > 0)")
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):  # two images differing only by suffix: give full names as ids
        entries = [SampleEntry(_rel(base, e.image_path), e.image_path, e.mask_path, e.weight, e.tags) for e in entries]
    return entries, problems


def _normal(p: Path) -> Path:
    """Absolute, with ``.`` and ``..`` taken away as written (as the manifest's author reads it)."""
    return Path(os.path.abspath(p))


def _identity(p: Path) -> Path:
    """The file ``p`` really is (symbolic links followed), for duplicate checks."""
    try:
        return p.resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte: reported as missing elsewhere
        return p


def _manifest_id(base: Path, image_path: Path) -> str:
    rel = Path(_rel(base, image_path))
    return rel.with_suffix("").as_posix()


def _rel(base: Path, p: Path) -> str:
    try:
        return p.relative_to(base).as_posix()
    except ValueError:
        return p.as_posix()


def _parse_weight(value: Any, where: str, problems: list[str]) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return 1.0
    try:
        weight = float(value)
    except (TypeError, ValueError):
        problems.append(f"{where}: field 'weight': {value!r} is not a number (expected a number >= 0)")
        return None
    if not np.isfinite(weight) or weight < 0:
        problems.append(f"{where}: field 'weight': {value!r} (expected a finite number >= 0)")
        return None
    return weight


def _parse_tags(value: Any, where: str, problems: list[str]) -> tuple[str, ...] | None:
    if value is None:
        return ()
    if isinstance(value, str):  # CSV: "indoor;hair" or "indoor hair"
        return tuple(t for t in value.replace(";", " ").replace(",", " ").split() if t)
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return tuple(value)
    problems.append(f"{where}: field 'tags': {value!r} (expected a list of strings or a ';'-separated string)")
    return None


# --- decoding ------------------------------------------------------------------------


def reduction_factor(size: tuple[int, int], max_pixels: int | None = None) -> int:
    """The smallest whole factor that brings ``size`` within ``max_pixels`` (1: no reduction)."""
    limit = MAX_WORKING_PIXELS if max_pixels is None else max_pixels
    width, height = size
    factor = 1
    while math.ceil(width / factor) * math.ceil(height / factor) > limit:
        factor += 1
    return factor


def _open_oriented(path: Path, problems: list[str], *, reduce: bool = False) -> tuple[Image.Image, tuple[int, int]] | None:
    """Fully decode ``path`` (so truncated files fail here) with EXIF orientation applied.

    Returns the image and its full (oriented) size. With ``reduce``, a file larger than
    :data:`MAX_WORKING_PIXELS` is decoded at a whole-factor reduced size (see
    :func:`_decode_reduced`); Pillow's decompression-bomb limit still applies at open.
    """
    try:
        with warnings.catch_warnings():
            # Pillow warns (from deep inside PIL) between its pixel limit and twice it: such a
            # photo is decoded reduced and the report header says so; above twice it still fails.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened as im:
            full = _oriented_size(im)
            factor = reduction_factor(im.size) if reduce else 1
            if factor > 1:
                im = _decode_reduced(im, factor)
            else:
                im.load()
            oriented = ImageOps.exif_transpose(im)
            oriented.load()
            return (oriented if oriented is not im else im.copy()), full
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        if is_lfs_pointer(path):  # a checkout without Git LFS: say so, not "cannot identify image"
            problems.append(f"{path}: {LFS_MESSAGE}")
        else:
            hint = ""
            if isinstance(exc, Image.DecompressionBombError):
                hint = (f" (expected at most {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels; for a file you trust, "
                        "raise PIL.Image.MAX_IMAGE_PIXELS in your conftest.py)")
            problems.append(f"{path}: cannot be decoded as an image ({type(exc).__name__}: {exc}){hint}")
        return None


def _oriented_size(im: Image.Image) -> tuple[int, int]:
    """(width, height) as displayed: EXIF orientations 5-8 turn the picture by 90 degrees."""
    orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    return (im.size[1], im.size[0]) if orientation in (5, 6, 7, 8) else im.size


def _decode_reduced(im: Image.Image, factor: int) -> Image.Image:
    """``im`` decoded at ``ceil(size / factor)`` without holding the full-size pixels if possible.

    JPEG decodes straight at 1/2, 1/4 or 1/8 scale (draft mode); other formats decode
    whole, once, and are box-filtered down. Photo and mask of one pair have the same
    size, hence the same factor and the same reduced size.
    """
    target = (math.ceil(im.size[0] / factor), math.ceil(im.size[1] / factor))
    if im.format == "JPEG":
        im.draft(None, target)  # picks the largest DCT scale whose result is >= target
    im.load()
    # Box-filter in a mode that averages: 1-bit and palette masks would snap to nearest.
    if im.mode == "1":
        im = im.convert("L")
    elif im.mode == "P":
        im = im.convert("RGBA")
    elif im.mode.startswith("I;16"):
        im = im.convert("I")
    return im if im.size == target else im.resize(target, Image.Resampling.BOX)


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(im, dtype=np.float64)
        scale = 255.0 / 65535.0 if im.mode != "F" else 255.0
        im = Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), "L")
    return im if im.mode == "RGB" else im.convert("RGB")


def mask_to_array(im: Image.Image, path: Path | None = None) -> NDArray[np.float32]:
    """Apply the mask rules of the module docstring: float32 in [0, 1] of the same size."""
    mode = im.mode
    if mode == "P":
        im, mode = im.convert("RGBA"), "RGBA"
    if mode == "1":
        return np.asarray(im, dtype=np.float32)
    if mode == "L":
        arr = np.asarray(im)
        _refuse_class_index_map(arr, "8-bit", 255, path)
        return arr.astype(np.float32) / np.float32(255.0)
    if mode in ("I", "I;16", "I;16B", "I;16L"):
        arr = np.asarray(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise DatasetError(
                f"integer mask values {arr.min()}..{arr.max()} are out of range", path=path, expected="0..65535"
            )
        _refuse_class_index_map(arr, "16-bit", 65535, path)
        return (arr.astype(np.float64) / 65535.0).astype(np.float32)
    if mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        if arr.size and (not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1):
            raise DatasetError("float mask values are outside [0, 1]", path=path, expected="values in [0, 1]")
        return arr.copy()
    if mode in ("LA", "RGBA", "PA"):
        alpha = np.asarray(im.getchannel("A"))
        if alpha.min() < 255:  # a cut-out: transparency is the mask
            return alpha.astype(np.float32) / np.float32(255.0)
    return np.asarray(im.convert("L"), dtype=np.float32) / np.float32(255.0)


def _refuse_class_index_map(arr: NDArray[Any], depth: str, full: int, path: Path | None) -> None:
    """Refuse a grey mask holding only 0 and 1: a class-index map saved as a picture.

    Read as 0..255 (or 0..65535) its foreground is 1/255, below every binarisation
    threshold: every figure would be measured against an empty mask, silently.
    """
    if arr.size and int(arr.max()) == 1:  # the minimum is 0 or 1: values are only 0 and 1
        raise DatasetError(
            f"{depth} mask holds only the values 0 and 1 (a class-index map?): read as 0..{full} its "
            "foreground is almost black and every figure would be measured against an empty mask",
            path=path, expected=f"foreground {full} and background 0 (or a 1-bit image): rescale the mask",
        )


def _decode(entry: SampleEntry, problems: list[str]) -> Sample | None:
    before = len(problems)
    opened_image = _open_oriented(entry.image_path, problems, reduce=True)
    if entry.mask_path is None:  # image-only golden set
        if opened_image is None or len(problems) > before:
            return None
        rgb = _to_rgb(opened_image[0])
        reduced = opened_image[1] if rgb.size != opened_image[1] else None
        return Sample(entry=entry, image=rgb, mask=None, image_hash=_pixels_hash(rgb), mask_hash="", full_size=reduced)
    opened_mask = _open_oriented(entry.mask_path, problems, reduce=True)
    mask: NDArray[np.float32] | None = None
    if opened_mask is not None:
        try:
            mask = mask_to_array(opened_mask[0], entry.mask_path)
        except DatasetError as exc:
            problems.append(str(exc))
    # Compare the files' full sizes: two different sizes may reduce to the same one.
    image_size = opened_image[1] if opened_image is not None else None
    mask_size = opened_mask[1] if opened_mask is not None else None
    if image_size is not None and mask_size is not None and image_size != mask_size:
        problems.append(
            f"{entry.mask_path}: mask size {mask_size[0]}x{mask_size[1]} differs from its image "
            f"{entry.image_path} ({image_size[0]}x{image_size[1]}, after EXIF orientation)"
        )
    if len(problems) > before or opened_image is None or mask is None:
        return None
    rgb = _to_rgb(opened_image[0])
    reduced = image_size if rgb.size != image_size else None
    return Sample(
        entry=entry, image=rgb, mask=mask, image_hash=_pixels_hash(rgb), mask_hash=_array_hash(mask), full_size=reduced
    )


def _pixels_hash(im: Image.Image) -> str:
    # Hash the decoded pixels (what the model sees), not the file bytes.
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{im.mode}:{im.size[0]}x{im.size[1]}\n".encode())
    h.update(im.tobytes())
    return h.hexdigest()


def _array_hash(arr: NDArray[Any]) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{arr.dtype.str}:{arr.shape}\n".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _raise(source: Path, problems: list[str]) -> None:
    shown = problems[:_MAX_LISTED_PROBLEMS]
    more = len(problems) - len(shown)
    lines = "\n".join(f"  - {p}" for p in shown)
    if more:
        lines += f"\n  ... and {more} more"
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    error = DatasetError(f"invalid golden set ({count}):\n{lines}", path=source)
    error.problems = list(problems)  # type: ignore[attr-defined]  # for callers that list them
    raise error
