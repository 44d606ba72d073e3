"""Read tensors out of an ML Program's ``weights/weight.bin`` without coremltools.

The file is Core ML's MIL blob storage format (version 2): a 64-byte header
(``uint32 count, uint32 version``, reserved words), then per tensor a 64-byte metadata
record (``uint32 sentinel 0xDEADBEEF, uint32 data type, uint64 size in bytes, uint64 data
offset``, reserved words) followed by the data, each 64-byte aligned. A program's
``blobFileValue`` gives the offset of the *metadata record*.

The file is memory-mapped; :meth:`BlobFile.read` returns a read-only view of one tensor
(sub-byte types are unpacked into a new ``uint8``/``int8`` array), so reading a weight
costs only the pages it touches and nothing stays alive once the caller drops the view.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pytest_coreml_quality.errors import ModelFormatError

_HEADER = struct.Struct("<II")
_RECORD = struct.Struct("<IIQQQ")  # sentinel, data type, size, offset, padding bits (sub-byte types)
_RECORD_SIZE = 64
_SENTINEL = 0xDEADBEEF
_VERSION = 2

# Blob data type code -> (MIL dtype name, numpy dtype of the stored words, bits per value).
_BLOB_TYPES: dict[int, tuple[str, str, int]] = {
    1: ("fp16", "<f2", 16),
    2: ("fp32", "<f4", 32),
    3: ("uint8", "u1", 8),
    4: ("int8", "i1", 8),
    6: ("int16", "<i2", 16),
    7: ("uint16", "<u2", 16),
    8: ("int4", "u1", 4),
    9: ("uint1", "u1", 1),
    10: ("uint2", "u1", 2),
    11: ("uint4", "u1", 4),
    12: ("uint3", "u1", 3),
    13: ("uint6", "u1", 6),
    14: ("int32", "<i4", 32),
    15: ("uint32", "<u4", 32),
}
SUB_BYTE = {"int4": 4, "uint1": 1, "uint2": 2, "uint3": 3, "uint4": 4, "uint6": 6}


class BlobFile:
    """One memory-mapped ``weight.bin``; open it with :func:`open_blob_file`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with open(path, "rb") as fh:
                self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:  # ValueError: an empty file cannot be mapped
            raise ModelFormatError(f"cannot be read ({type(exc).__name__}: {exc})", path=path,
                                   expected="a Core ML weight file (weight.bin)") from None
        self.size = len(self._map)
        problem = None
        if self.size < _RECORD_SIZE:
            problem = self._error(0, f"is {self.size} bytes, shorter than its header")
        else:
            _, version = _HEADER.unpack_from(self._map, 0)
            if version != _VERSION:
                problem = self._error(0, f"is weight file format version {version}", f"version {_VERSION}")
        if problem is not None:
            self._map.close()  # the map holds a descriptor of its own: not until garbage collection
            raise problem

    def read(self, offset: int, dtype: str, shape: Sequence[int]) -> np.ndarray:
        """The tensor whose metadata record is at ``offset``, as ``dtype`` (a MIL dtype name) and ``shape``.

        Raises :class:`ModelFormatError` naming the file and the offset when the record is
        missing, of another type, or its data runs past the end of the file.
        """
        if offset < _RECORD_SIZE or offset + _RECORD_SIZE > self.size:
            raise self._error(offset, f"has no weight record at byte {offset} (the file is {self.size} bytes)")
        sentinel, code, nbytes, data_offset, _ = _RECORD.unpack_from(self._map, offset)
        if sentinel != _SENTINEL:
            raise self._error(offset, f"holds no weight record at byte {offset} (bad sentinel {sentinel:#x})")
        stored = _BLOB_TYPES.get(code)
        if stored is None:
            raise self._error(offset, f"has a weight of unknown data type {code} at byte {offset}")
        name, word, bits = stored
        if name != dtype:
            raise self._error(offset, f"holds {name} data at byte {offset} where the program declares {dtype}")
        if data_offset + nbytes > self.size:
            raise self._error(
                offset, f"is {self.size} bytes, too small for the weight at byte {offset} "
                f"({nbytes} bytes at byte {data_offset}; a truncated copy?)")
        count = int(np.prod(shape, dtype=np.int64))
        if dtype in SUB_BYTE:
            if nbytes * 8 < count * bits:
                raise self._error(offset, f"holds {nbytes} bytes at byte {offset}, fewer than {count} {dtype} values")
            packed = np.frombuffer(self._map, np.uint8, count=nbytes, offset=data_offset)
            return _unpack(packed, bits, count, signed=dtype == "int4").reshape(tuple(shape))
        itemsize = np.dtype(word).itemsize
        if nbytes != count * itemsize:
            raise self._error(offset, f"holds {nbytes} bytes at byte {offset} where the program declares "
                                      f"{count} {dtype} values ({count * itemsize} bytes)")
        return np.frombuffer(self._map, np.dtype(word), count=count, offset=data_offset).reshape(tuple(shape))

    def close(self) -> None:
        try:
            self._map.close()
        except BufferError:  # a view is still alive: the map goes when the last view does
            pass

    def _error(self, offset: int, message: str, expected: str | None = None) -> ModelFormatError:
        return ModelFormatError(message, path=self.path, field=f"offset {offset}",
                                expected=expected or "the weight.bin written with this model's program")


def _unpack(packed: np.ndarray, bits: int, count: int, signed: bool) -> np.ndarray:
    """``count`` values of ``bits`` bits stored LSB first; int4 is sign-extended."""
    flat = np.unpackbits(packed, bitorder="little")[: count * bits].reshape(count, bits)
    values = (flat.astype(np.uint8) << np.arange(bits, dtype=np.uint8)).sum(axis=1, dtype=np.uint8)
    if signed:
        return values.astype(np.int8) - (values >= 1 << (bits - 1)).astype(np.int8) * np.int8(1 << bits)
    return values


def open_blob_file(path: Path) -> BlobFile:
    """Map ``path``; a missing or unreadable file is a :class:`ModelFormatError` naming it."""
    return BlobFile(path)


__all__ = ["BlobFile", "SUB_BYTE", "open_blob_file"]
