"""coremltools' generated protobuf modules (``Model_pb2``) without importing coremltools.

``import coremltools.proto`` first runs ``coremltools/__init__``, which imports its
converters and, through them, torch: one to several seconds, most of a small model's cold
load, for a module that only describes messages. With protobuf's default ``upb`` backend
message classes belong to their descriptors, so the same generated files loaded under a
private package name give the very classes ``coremltools.proto`` gives (coremltools can
still be imported later: re-adding an identical file to the descriptor pool is allowed).
With another protobuf backend, or once coremltools is imported anyway, its own module is used.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from pathlib import Path

_ALIAS = "pytest_coreml_quality._coremltools_proto"
_LOCK = threading.Lock()


def model_pb2() -> types.ModuleType:
    """The ``Model_pb2`` module of the installed coremltools (``Model``, ``FeatureType``, ...)."""
    real = sys.modules.get("coremltools.proto.Model_pb2")
    if real is not None:
        return real
    with _LOCK:
        if _ALIAS in sys.modules:
            return importlib.import_module(f"{_ALIAS}.Model_pb2")
        folder = _proto_folder()
        if folder is None or not _shared_message_classes():
            from coremltools.proto import Model_pb2

            return Model_pb2
        package = types.ModuleType(_ALIAS)
        package.__path__ = [str(folder)]
        sys.modules[_ALIAS] = package
        try:
            return importlib.import_module(f"{_ALIAS}.Model_pb2")
        except Exception:  # an unexpected layout: fall back to the regular import
            sys.modules.pop(_ALIAS, None)
            from coremltools.proto import Model_pb2

            return Model_pb2


def _proto_folder() -> Path | None:
    """coremltools' ``proto`` folder, located without executing the package."""
    try:
        spec = importlib.util.find_spec("coremltools")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "proto"
    return folder if (folder / "Model_pb2.py").is_file() else None


def _shared_message_classes() -> bool:
    from google.protobuf.internal import api_implementation

    return api_implementation.Type() == "upb"


__all__ = ["model_pb2"]
