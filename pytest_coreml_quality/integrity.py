"""Broken downloads and checkouts: Git LFS pointers, incomplete ``.mlpackage`` directories and
weight files that do not hold what the program references.

Without these checks coremltools reports such files as "Wire format was corrupt" or
"Storage Reader expects file format version 2"; here each names the file and what was
expected. Ground floor: no pytest, no coremltools import.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pytest_coreml_quality.errors import ModelFormatError

# Every Git LFS pointer file starts with this line (https://git-lfs.com/spec/v1).
LFS_SIGNATURE = b"version https://git-lfs.github.com/spec/v1"
LFS_MESSAGE = "this is a Git LFS pointer, not the file: run `git lfs pull`"

# Core ML's weight file (weight.bin): a 64-byte header (uint32 blob count, uint32 format
# version), then per blob a 64-byte record (uint32 sentinel, uint32 dtype, uint64 data size,
# uint64 data offset) that the program's blob references point at.
WEIGHT_FILE_VERSION = 2
_HEADER = struct.Struct("<II")
_RECORD = struct.Struct("<IIQQ")
_RECORD_SIZE = 64
_SENTINEL = 0xDEADBEEF
_MODEL_PATH = "@model_path"


def is_lfs_pointer(path: str | os.PathLike[str]) -> bool:
    """Whether the file at ``path`` is a Git LFS pointer instead of the content it stands for."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(LFS_SIGNATURE)) == LFS_SIGNATURE
    except OSError:
        return False


def check_not_lfs_pointer(path: Path) -> None:
    """Raise ``<path>: this is a Git LFS pointer, not the file: run `git lfs pull```."""
    if path.is_file() and is_lfs_pointer(path):
        raise ModelFormatError(LFS_MESSAGE, path=path)


def check_package_items(package: Path) -> Path:
    """Check ``Manifest.json`` and every item it names; return the root model spec file."""
    manifest_path = package / "Manifest.json"
    check_not_lfs_pointer(manifest_path)
    try:
        manifest = json.loads(manifest_path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"cannot be read ({type(exc).__name__}: {exc})", path=manifest_path,
                               expected="the JSON manifest coremltools or Xcode writes") from None
    entries, root_id = _manifest_field(manifest, "itemInfoEntries", dict, manifest_path), _manifest_field(
        manifest, "rootModelIdentifier", str, manifest_path)
    paths = {key: _manifest_field(_manifest_field(entries, key, dict, manifest_path, "itemInfoEntries."),
                                  "path", str, manifest_path, f"itemInfoEntries.{key}.")
             for key in entries}
    if root_id not in paths:
        raise ModelFormatError(f"names root model '{root_id}', which is not among its items", path=manifest_path,
                               field="rootModelIdentifier", expected=f"one of {sorted(paths)}")
    for key, rel in paths.items():
        item = package / "Data" / rel
        if not _inside(item, package):  # '../..' or an absolute path: never read files outside the package
            raise ModelFormatError(f"names Data/{rel}, which lies outside the package", path=manifest_path,
                                   field=f"itemInfoEntries.{key}.path", expected="a path inside the package's Data folder")
        if not item.exists():
            what = "folder" if key != root_id and not Path(rel).suffix else "file"
            raise ModelFormatError(f"names {what} Data/{rel}, which is missing (an incomplete copy or checkout?)",
                                   path=manifest_path, field=f"itemInfoEntries.{key}.path",
                                   expected=f"{item} in the package")
    root = package / "Data" / paths[root_id]
    check_not_lfs_pointer(root)
    return root


def _manifest_field(table: Any, name: str, kind: type, manifest: Path, prefix: str = "") -> Any:
    """``table[name]`` when ``table`` is a JSON object holding a value of ``kind`` there."""
    what = {dict: "a JSON object", str: "a string"}[kind]
    if not isinstance(table, dict):
        where = prefix.rstrip(".") or "the top level"
        raise ModelFormatError(f"{where} is a JSON {_json_type(table)}", path=manifest,
                               expected="a JSON object, as coremltools and Xcode write it")
    if name not in table:
        raise ModelFormatError("is missing", path=manifest, field=prefix + name,
                               expected=f"{what}, as coremltools and Xcode write it")
    value = table[name]
    if not isinstance(value, kind):
        raise ModelFormatError(f"is a JSON {_json_type(value)}", path=manifest, field=prefix + name,
                               expected=f"{what}, as coremltools and Xcode write it")
    return value


def _inside(item: Path, package: Path) -> bool:
    # Lexically ('..', absolute paths): symbolic links inside a package (git-annex, content
    # stores) may point anywhere and are the user's business.
    data = os.path.normpath(package / "Data")
    return os.path.normpath(item).startswith(data + os.sep)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    names = {dict: "object", list: "array", str: "string", int: "number", float: "number"}
    return names.get(type(value), "null")


def blob_references(program: Any) -> Iterator[tuple[str, int]]:
    """``(fileName, offset)`` of every weight blob an ML Program spec references."""
    if program.DESCRIPTOR.name == "Program":
        # The MIL layout directly (ops' attributes and argument values): several times
        # faster than reflecting over every field of a program with thousands of ops.
        for fn in program.functions.values():
            for block in fn.block_specializations.values():
                yield from _block_blobs(block)
        return
    yield from _walk(program)


def _block_blobs(block: Any) -> Iterator[tuple[str, int]]:
    for op in block.operations:
        for value in op.attributes.values():
            yield from _value_blobs(value)
        for argument in op.inputs.values():
            for binding in argument.arguments:
                if binding.HasField("value"):
                    yield from _value_blobs(binding.value)
        for nested in op.blocks:
            yield from _block_blobs(nested)


def _value_blobs(value: Any) -> Iterator[tuple[str, int]]:
    if value.HasField("blobFileValue"):
        yield str(value.blobFileValue.fileName), int(value.blobFileValue.offset)
    elif value.HasField("immediateValue") and value.immediateValue.WhichOneof("value") != "tensor":
        yield from _walk(value)  # lists and dictionaries of values: rare, walk them generically


def _walk(program: Any) -> Iterator[tuple[str, int]]:
    """Every ``BlobFileValue`` anywhere in a message, by reflection."""
    for field, value in program.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.name == "BlobFileValue":
            yield str(value.fileName), int(value.offset)
        elif not _repeated(field):
            yield from _walk(value)
        elif field.message_type.GetOptions().map_entry:
            for item in value.values():
                if hasattr(item, "ListFields"):
                    yield from _walk(item)
        else:
            for item in value:
                yield from _walk(item)


def _repeated(field: Any) -> bool:
    flag = getattr(field, "is_repeated", None)  # protobuf >= 5; older ones only have label
    return bool(flag) if flag is not None else field.label == field.LABEL_REPEATED


def check_weight_files(package: Path, root: Path, program: Any) -> None:
    """Check that each weight file the program references exists and holds its blobs."""
    offsets: dict[str, list[int]] = {}
    for name, offset in blob_references(program):
        offsets.setdefault(name, []).append(offset)
    for name, wanted in offsets.items():
        rel = name[len(_MODEL_PATH):].lstrip("/") if name.startswith(_MODEL_PATH) else name
        path = root.parent / rel
        if not path.is_file():
            if not path.parent.is_dir():
                raise ModelFormatError(f"the {path.parent.name}/ folder is missing", path=path.parent,
                                       expected=f"{path.name} with the weights {root.name} references")
            raise ModelFormatError("is missing", path=path, expected=f"the weights {root.name} references")
        check_not_lfs_pointer(path)
        _check_weight_file(path, wanted)


def _check_weight_file(path: Path, offsets: list[int]) -> None:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        header = fh.read(_RECORD_SIZE)
        if len(header) < _HEADER.size:
            raise ModelFormatError(f"is {size} bytes, shorter than its header", path=path,
                                   expected="a Core ML weight file (weight.bin)")
        _, version = _HEADER.unpack_from(header)
        if version != WEIGHT_FILE_VERSION:
            raise ModelFormatError(f"is weight file format version {version}", path=path,
                                   expected=f"version {WEIGHT_FILE_VERSION}, the format Core ML ML Programs use")
        for offset in sorted(set(offsets)):
            fh.seek(offset)
            record = fh.read(_RECORD_SIZE)
            if len(record) < _RECORD.size:
                raise ModelFormatError(
                    f"is {size} bytes, too small for the weights the program references (a record at byte {offset})",
                    path=path, expected="the complete file (a truncated download or copy?)")
            sentinel, _, data_size, data_offset = _RECORD.unpack_from(record)
            if sentinel != _SENTINEL:
                raise ModelFormatError(f"holds no weight record at byte {offset}, which the program references",
                                       path=path, expected="the weight.bin written with this model.mlmodel")
            if data_offset + data_size > size:
                raise ModelFormatError(
                    f"is {size} bytes, too small for the weights the program references "
                    f"({data_size} bytes at byte {data_offset})",
                    path=path, expected="the complete file (a truncated download or copy?)")
