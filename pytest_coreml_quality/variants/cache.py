"""Content-addressed cache of built variants, safe against killed runs and parallel workers.

An entry is a directory ``<cache_dir>/variants/<key>/`` holding the variant model and a
``manifest.json``. The key hashes (model content hash, normalised recipe, coremltools
version), so a changed model or a coremltools upgrade builds anew. Entries are built in
a temporary sibling and renamed into place (``cachefs.atomic_output``) under a file lock
(``cachefs.build_lock``): a killed build leaves nothing a later run trusts, and workers
that ask for the same variant at once build it once. A ``digest.json`` over the entry's
key, the manifest and the variant (``cachefs.write_entry_digest``) is checked on every
read: an entry that is damaged, incomplete or copied from another key is rebuilt, with a
one-line note through ``progress``. :func:`start_build` splits a build in two (build, then
commit with the download size) so that :mod:`.sweep_build` can zip one variant while it
builds the next.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import Timeout

from pytest_coreml_quality.cachefs import (
    ABSENT,
    atomic_output,
    atomic_write_text,
    build_lock,
    entry_problem,
    path_size,
    remove_path,
    report_repair,
    write_entry_digest,
)
from pytest_coreml_quality.download import zip_size
from pytest_coreml_quality.model import Model, content_hash
from pytest_coreml_quality.variants import build as _build
from pytest_coreml_quality.variants.kmeans1d import DistinctMemo
from pytest_coreml_quality.variants.recipes import Recipe, parse_recipe
from pytest_coreml_quality.variants.summary import WeightSummary, weight_summary
from pytest_coreml_quality.variants.unchanged import compression_note, weight_encodings

CACHE_SUBDIR = "variants"
MANIFEST = "manifest.json"
FORMAT_VERSION = 5  # 2: entries carry a digest.json; 3: manifests say when a recipe changed nothing; 4: and carry download_bytes; 5: kmeans_lut tables from kmeans1d. Bump when the entry layout or the build logic changes what is written

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Variant:
    """One model to evaluate: the base model or a compressed build of it."""

    recipe: Recipe
    path: Path
    kind: str
    size_bytes: int
    base_size_bytes: int
    weights: WeightSummary
    cached: bool = False  # True when this call reused an existing cache entry
    build_seconds: float = 0.0  # how long the build took (when it was built, possibly in an earlier run)
    unchanged: bool = False  # the recipe compressed no weight (they were already compressed, say)
    note: str = ""  # e.g. 'q8: no change, weights already 8-bit (LUT)'; '' when compression went as expected
    download_bytes: int | None = None  # the deflate zip as it would be served (see :mod:`..download`)

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def ratio(self) -> float:
        """Size on disk relative to the base model (0.25 = a quarter of the size)."""
        return self.size_bytes / self.base_size_bytes if self.base_size_bytes else 0.0

    @property
    def parameters(self) -> int:
        return self.weights.parameters

    @property
    def bits_per_weight(self) -> float:
        return self.weights.bits_per_weight

    def open(self) -> Model:
        """The variant as a :class:`Model`, ready for a runtime backend."""
        return Model.open(self.path)


def coremltools_version() -> str:
    import coremltools

    return str(coremltools.__version__)


def cache_key(model: Model, recipe: Recipe) -> str:
    """The entry name for (model content, normalised recipe, coremltools version)."""
    text = f"v{FORMAT_VERSION}\0{model.content_hash}\0{recipe.name}\0{coremltools_version()}"
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def entry_dir(model: Model, recipe: Recipe, cache_dir: Path) -> Path:
    return Path(cache_dir) / CACHE_SUBDIR / cache_key(model, recipe)


def build_variant(
    model: Model,
    recipe: Recipe | str,
    cache_dir: Path,
    progress: Progress | None = None,
    *,
    fast_nn: bool = True,
    note: Progress | None = None,
    memo: DistinctMemo | None = None,
) -> Variant:
    """Return the variant of ``model`` for ``recipe``, from the cache or built into it.

    ``progress`` receives one line per variant actually built (nothing on a cache hit);
    coremltools' own output is captured. ``note`` (default: ``progress``) receives one line
    when a damaged entry is rebuilt. ``memo`` shares k-means sorts between the builds of
    one sweep. Raises :class:`RecipeError` when the recipe is malformed, does not apply to
    the model, or coremltools fails to apply it.
    """
    recipe = parse_recipe(recipe) if isinstance(recipe, str) else recipe
    recipe.check_applies_to(model)
    if recipe.is_base:
        # No download size here: nothing is written for the base (the session measures it, cached).
        base_summary = weight_summary(model)
        return Variant(recipe, model.path, model.kind, model.size_bytes, model.size_bytes, base_summary)
    started = start_build(model, recipe, cache_dir, progress, fast_nn=fast_nn, note=note, memo=memo)
    if isinstance(started, PendingVariant):
        try:
            download = zip_size(started.file)
        except BaseException:
            started.abandon()  # else the entry's lock and scratch build outlive the failure
            raise
        return started.commit(download)
    return started


def start_build(
    model: Model,
    recipe: Recipe,
    cache_dir: Path,
    progress: Progress | None = None,
    *,
    fast_nn: bool = True,
    note: Progress | None = None,
    memo: DistinctMemo | None = None,
    before_wait: Callable[[], None] | None = None,
) -> "Variant | PendingVariant":
    """The cached variant, or a :class:`PendingVariant`: built, waiting for its download size.

    Split from :func:`build_variant` so that a sweep can zip one variant (zlib releases the
    GIL) while it builds the next. The pending variant holds its entry's lock and scratch
    directory until :meth:`PendingVariant.commit` or :meth:`PendingVariant.abandon`.
    ``before_wait`` runs when another process holds the entry's lock, before waiting for
    it: a caller holding pending variants commits them there, so that no one waits for a
    lock while holding others (two workers sweeping in different orders would deadlock).
    """
    recipe.check_applies_to(model)
    base_summary = weight_summary(model)
    entry = entry_dir(model, recipe, cache_dir)
    found, _ = _load_entry(entry)  # the common case needs no lock
    if found is not None:
        return _variant(model, recipe, entry, base_summary, found)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(build_lock(entry, timeout=-1 if before_wait is None else 0))
        except Timeout:  # only with before_wait (timeout 0)
            if before_wait is None:
                raise
            before_wait()
            stack.enter_context(build_lock(entry))
        found, problem = _load_entry(entry)  # another worker may have built it while we waited
        if found is not None:
            return _variant(model, recipe, entry, base_summary, found)
        if problem is not None:
            report_repair(note or progress, f"variant cache entry {recipe.name} of {model.name} ignored and rebuilt: {problem}")
        pending = _build_into_scratch(model, recipe, entry, stack, base_summary, fast_nn, memo, progress)
        pending.stack = stack.pop_all()  # the lock and scratch now live until commit() or abandon()
        return pending


def _variant(model: Model, recipe: Recipe, entry: Path, base: WeightSummary, found: tuple[dict[str, Any], bool]) -> Variant:
    manifest, cached = found
    path = entry / manifest["file"]
    weights = WeightSummary(parameters=base.parameters, weight_bytes=int(manifest["weight_bytes"]))
    download = manifest.get("download_bytes")
    if not isinstance(download, int):  # not expected since FORMAT_VERSION 3; measure rather than fail
        download = zip_size(path)
    return Variant(
        recipe=recipe,
        path=path,
        kind=manifest["kind"],
        size_bytes=int(manifest["size_bytes"]),
        base_size_bytes=model.size_bytes,
        weights=weights,
        cached=cached,
        build_seconds=float(manifest["build_seconds"]),
        unchanged=bool(manifest.get("unchanged", False)),
        note=str(manifest.get("note", "")),
        download_bytes=download,
    )


def is_cached(model: Model, recipe: Recipe, cache_dir: Path) -> bool:
    """Whether the variant is in the cache, undamaged (so using it costs no build)."""
    return recipe.is_base or _load_entry(entry_dir(model, recipe, cache_dir))[0] is not None


def _load_entry(entry: Path) -> tuple[tuple[dict[str, Any], bool] | None, str | None]:
    """``((manifest, True), None)`` for a complete, undamaged entry; else ``(None, what is wrong)``.

    What is wrong is None for a plain miss (no entry at all).
    """
    problem = entry_problem(entry, entry.name, required=(MANIFEST,))
    if problem is not None:
        return None, None if problem == ABSENT else problem
    try:
        manifest = json.loads((entry / MANIFEST).read_text("utf-8"))
        if not (entry / manifest["file"]).exists():
            return None, "the variant file is missing"
    except FileNotFoundError:  # removed by a concurrent cache clear since the check
        return None, None
    except (OSError, ValueError, KeyError, TypeError):
        return None, f"its {MANIFEST} is unreadable"
    return (manifest, True), None


@dataclass
class PendingVariant:
    """A variant built into its entry's scratch directory, not yet in the cache.

    It holds the entry's build lock; :meth:`commit` writes the manifest (with the download
    size, which the caller measures, possibly in another thread) and moves the entry into
    place; :meth:`abandon` removes the scratch. Either must be called, from the thread that
    called :func:`start_build` (file locks belong to a thread).
    """

    model: Model
    recipe: Recipe
    entry: Path
    scratch: Path
    manifest: dict[str, Any]  # everything but download_bytes
    base: WeightSummary
    progress: Progress | None
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    @property
    def file(self) -> Path:
        """The built model file or package (in the scratch directory until committed)."""
        return self.scratch / self.manifest["file"]

    def commit(self, download_bytes: int) -> Variant:
        """Finish the entry with its download size; return the variant, now cached."""
        with self.stack:  # on success the entry is renamed into place, then the lock released
            manifest: dict[str, Any] = {}
            for key, value in self.manifest.items():
                manifest[key] = value
                if key == "build_seconds":  # the manifest's usual key order
                    manifest["download_bytes"] = download_bytes
            atomic_write_text(self.scratch / MANIFEST, json.dumps(manifest, indent=2))
            write_entry_digest(self.scratch, self.entry.name, (MANIFEST, manifest["file"]))
        if self.progress is not None:
            size, base = manifest["size_bytes"], self.model.size_bytes
            ratio = size / base if base else 0.0
            self.progress(
                f"built variant {self.recipe.name} of {self.model.name} in {manifest['build_seconds']:.1f}s "
                f"({_mb(base)} -> {_mb(size)}, x{ratio:.3f})"
            )
        return _variant(self.model, self.recipe, self.entry, self.base, (manifest, False))

    def abandon(self) -> None:
        """Drop the scratch build and release the lock (the cache is left as it was)."""
        # Exiting with an exception is what makes atomic_output discard rather than rename.
        reason = _Abandoned()
        with contextlib.suppress(_Abandoned):
            self.stack.__exit__(_Abandoned, reason, None)


class _Abandoned(Exception):
    """Passed to a pending variant's contexts so that they clean up instead of committing."""


def _build_into_scratch(
    model: Model,
    recipe: Recipe,
    entry: Path,
    stack: contextlib.ExitStack,
    base: WeightSummary,
    fast_nn: bool,
    memo: DistinctMemo | None,
    progress: Progress | None,
) -> PendingVariant:
    # We hold the lock: no one else is building this entry, so leftovers are debris of
    # killed builds (or a damaged entry) and can go.
    remove_path(entry)
    for debris in entry.parent.glob(f".{entry.name}.*.partial"):
        remove_path(debris)
    # A NeuralNetwork spec is self-contained and coremltools' NeuralNetwork writers make one
    # file, so its variants are .mlmodel files even when the user's model is a package.
    suffix = ".mlmodel" if model.kind == "neuralNetwork" else model.path.suffix
    file_name = f"{model.path.stem}-{_file_safe(recipe.name)}{suffix}"
    started = time.perf_counter()
    tmp = stack.enter_context(atomic_output(entry))
    tmp.mkdir()
    route = _build.build_recipe(model, recipe, tmp / file_name, fast_nn=fast_nn, memo=memo)
    seconds = time.perf_counter() - started
    built = Model.open(tmp / file_name)
    variant_hash = content_hash(built.path)
    outcome = compression_note(
        recipe, weight_encodings(model.spec), weight_encodings(built.spec), identical=variant_hash == model.content_hash
    )
    manifest = {
        "format": FORMAT_VERSION,
        "recipe": recipe.name,
        "file": file_name,
        "kind": built.kind,
        "model": model.name,
        "model_hash": model.content_hash,
        "coremltools": coremltools_version(),
        "variant_hash": variant_hash,
        "size_bytes": built.size_bytes,
        "weight_bytes": weight_summary(built).weight_bytes,
        "build_seconds": round(seconds, 3),
        "route": route,
        "unchanged": outcome.unchanged,
        "note": outcome.note,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return PendingVariant(model, recipe, entry, tmp, manifest, base, progress)


def _file_safe(name: str) -> str:
    return name.replace(":", "of").replace("+", "_")


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def clear_cache(cache_dir: Path) -> int:
    """Delete every cached variant under ``cache_dir``; return the bytes freed."""
    root = Path(cache_dir) / CACHE_SUBDIR
    if not root.exists():
        return 0
    freed = path_size(root)
    remove_path(root)
    return freed
