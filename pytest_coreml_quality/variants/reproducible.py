"""Byte-reproducible variant files: the same base, recipe and coremltools version give the
same bytes in any process.

Two things make coremltools' own saves differ from run to run:

* protobuf serializes map entries (``description.metadata.userDefined``) in hash-table
  order, which changes from process to process: a spec is rewritten with
  ``SerializeToString(deterministic=True)``, which sorts map entries by key;
* an ``.mlpackage``'s ``Manifest.json`` names its items by random UUIDs: they are replaced
  by UUIDs derived from each item's path (still unique within the package, which is all
  Core ML asks of them).

A variant's content hash keys its cached predictions, so a rebuilt variant (another CI
job, a shard, a cleared cache) must hash alike to reuse them.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from pytest_coreml_quality.cachefs import atomic_write_bytes, atomic_write_text

PACKAGE_MANIFEST = "Manifest.json"
PACKAGE_DATA = "Data"
# A fixed namespace: item identifiers are uuid5(namespace, item path), the same everywhere.
_ITEM_NAMESPACE = uuid.UUID("6f1c1f55-4d2a-5d6e-9a31-2c0c5e0b7c11")


def spec_bytes(spec: Any) -> bytes:
    """The spec serialized with map entries in key order (independent of the process)."""
    return spec.SerializeToString(deterministic=True)


def save_spec(spec: Any, path: Path) -> None:
    """Write a ``Model`` spec as an ``.mlmodel`` file, deterministically and atomically."""
    atomic_write_bytes(path, spec_bytes(spec))


def make_reproducible(path: Path) -> None:
    """Rewrite the model file or package at ``path`` (just saved by coremltools) in place."""
    path = Path(path)
    if path.is_dir():
        _package(path)
    else:
        _rewrite_spec(path)


def _rewrite_spec(path: Path) -> None:
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString(path.read_bytes())
    save_spec(spec, path)


def _package(root: Path) -> None:
    manifest_path = root / PACKAGE_MANIFEST
    manifest = json.loads(manifest_path.read_text("utf-8"))
    entries: dict[str, Any] = manifest.get("itemInfoEntries", {})
    renamed = {old: str(uuid.uuid5(_ITEM_NAMESPACE, str(info.get("path", old)))) for old, info in entries.items()}
    for old, info in entries.items():
        item = root / PACKAGE_DATA / str(info.get("path", ""))
        if item.is_file() and item.suffix == ".mlmodel":
            _rewrite_spec(item)
    manifest["itemInfoEntries"] = {renamed[old]: info for old, info in entries.items()}
    if manifest.get("rootModelIdentifier") in renamed:
        manifest["rootModelIdentifier"] = renamed[manifest["rootModelIdentifier"]]
    atomic_write_text(manifest_path, json.dumps(manifest, indent=4, sort_keys=True))
