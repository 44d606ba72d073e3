"""Open a Core ML model file and describe it: kind, features, preprocessing, size, hash.

``Model`` is the single entry point every other part of the project uses to learn about
the user's model. It reads the protobuf spec with coremltools' generated protobuf
module (which works on every platform; see :mod:`.coreml_proto`, which avoids importing
the rest of coremltools) and never compiles or runs the model.
"""

from __future__ import annotations

import os
import struct
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pytest_coreml_quality.cachefs import hash_path, path_size
from pytest_coreml_quality import integrity
from pytest_coreml_quality.errors import ModelFormatError

if TYPE_CHECKING:  # coremltools is heavy: import it only when a spec is read.
    from coremltools.proto import Model_pb2

MODEL_SUFFIXES = (".mlmodel", ".mlpackage")

ColorLayout = Literal["RGB", "BGR", "GRAYSCALE", "GRAYSCALE_FLOAT16", "UNKNOWN"]

# FeatureTypes.proto ArrayFeatureType.ArrayDataType enum values -> numpy dtype names.
_ARRAY_DTYPES = {65568: "float32", 65600: "float64", 131104: "int32", 65552: "float16", 131080: "int8"}


def _suffix_hint(p: Path) -> str:
    """Why a path without a model suffix is not a model, when a user could not tell."""
    if p.suffix.lower() == ".mlmodelc":
        return (": a compiled model (Xcode's or Core ML's output) holds no spec to compress or translate; "
                "give the .mlmodel or .mlpackage it was compiled from")
    if p.is_dir():
        inside = sorted(c.name for c in p.iterdir() if c.suffix.lower() in MODEL_SUFFIXES)
        if inside:
            return f": a folder holding {', '.join(inside[:3])}{', ...' if len(inside) > 3 else ''}; give the model itself"
    return ""


@dataclass(frozen=True)
class ImagePreprocessing:
    """What Core ML applies to an image input before the network: ``pixel * scale + bias``.

    ``bias`` has one entry per channel in the input's colour layout order (R, G, B for RGB,
    B, G, R for BGR, one for grayscale). ``mean_image`` is set when a NeuralNetwork uses
    ``meanImage`` preprocessing instead of a scaler.
    """

    scale: float = 1.0
    bias: tuple[float, ...] = ()
    mean_image: tuple[float, ...] | None = None


@dataclass(frozen=True)
class FeatureDescription:
    """One model input or output, as the spec's ``ModelDescription`` states it."""

    name: str
    type: Literal["image", "multiarray", "double", "int64", "string", "dictionary", "sequence", "state", "other"]
    # Image features.
    width: int | None = None
    height: int | None = None
    color_layout: ColorLayout | None = None
    enumerated_sizes: tuple[tuple[int, int], ...] = ()  # (width, height) pairs
    size_ranges: tuple[tuple[int, int], tuple[int, int]] | None = None  # ((wmin, wmax), (hmin, hmax)); -1 = unbounded
    # Multiarray features.
    shape: tuple[int, ...] = ()
    dtype: str | None = None
    enumerated_shapes: tuple[tuple[int, ...], ...] = ()
    shape_ranges: tuple[tuple[int, int], ...] = ()
    # Image inputs only: what Core ML does to the pixels before the network.
    preprocessing: ImagePreprocessing | None = None
    optional: bool = False

    @property
    def is_image(self) -> bool:
        return self.type == "image"

    @property
    def is_multiarray(self) -> bool:
        return self.type == "multiarray"

    @property
    def is_flexible(self) -> bool:
        return bool(self.enumerated_sizes or self.size_ranges or self.enumerated_shapes or self.shape_ranges)

    @property
    def channels(self) -> int | None:
        """Channel count for an image feature (3 for colour, 1 for grayscale)."""
        if self.color_layout is None:
            return None
        return 3 if self.color_layout in ("RGB", "BGR") else 1


@dataclass
class Model:
    """A Core ML model on disk (``.mlmodel`` file or ``.mlpackage`` directory).

    Use :meth:`open`, which validates the path and reads the spec once.
    """

    path: Path
    spec: "Model_pb2.Model" = field(repr=False)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> "Model":
        """Open ``path``; raise :class:`ModelFormatError` naming it if it is not a Core ML model."""
        p = Path(path).expanduser()
        if not p.exists():
            raise ModelFormatError("no such file or directory", path=p, expected="a .mlmodel file or .mlpackage directory")
        if p.suffix.lower() not in MODEL_SUFFIXES:
            raise ModelFormatError(
                f"unrecognised suffix '{p.suffix}'{_suffix_hint(p)}", path=p, expected="a .mlmodel file or .mlpackage directory"
            )
        if p.suffix.lower() == ".mlmodel" and not p.is_file():
            raise ModelFormatError("is not a file", path=p, expected="a .mlmodel file")
        root = None
        if p.suffix.lower() == ".mlpackage":
            _check_package_layout(p)
            root = integrity.check_package_items(p)  # missing items, LFS pointers
        else:
            integrity.check_not_lfs_pointer(p)
        if not os.access(p, os.R_OK):
            raise ModelFormatError("is not readable (permission denied)", path=p)
        spec = _load_spec(p, root)
        if root is not None and spec.WhichOneof("Type") == "mlProgram":
            integrity.check_weight_files(p, root, spec.mlProgram)
        return cls(path=p, spec=spec)

    # --- identity -----------------------------------------------------------------
    @property
    def name(self) -> str:
        """The file name, e.g. ``ISNet.mlmodel``: used in test ids and reports."""
        return self.path.name

    @property
    def is_package(self) -> bool:
        return self.path.suffix.lower() == ".mlpackage"

    @property
    def kind(self) -> str:
        """The spec's model type: ``neuralNetwork``, ``mlProgram``, ``pipeline``, ...."""
        return self.spec.WhichOneof("Type") or "unknown"

    @property
    def spec_version(self) -> int:
        return int(self.spec.specificationVersion)

    @property
    def weights_dir(self) -> Path | None:
        """The ``weights/`` directory of an ML Program package (``weight.bin`` lives there)."""
        if not self.is_package:
            return None
        return self.path / "Data" / "com.apple.CoreML" / "weights"

    @cached_property
    def size_bytes(self) -> int:
        """Size on disk; for a package, the sum over every file in it."""
        return path_size(self.path)

    @property
    def size_mb(self) -> float:
        return self.size_bytes / 1e6

    @property
    def content_hash(self) -> str:
        """A hash of the model's bytes: equal for copies, different after any change."""
        return content_hash(self.path)

    # --- features -----------------------------------------------------------------
    @cached_property
    def inputs(self) -> tuple[FeatureDescription, ...]:
        pre = self._image_preprocessing()
        return tuple(_describe_feature(f, pre.get(f.name)) for f in self.spec.description.input)

    @cached_property
    def outputs(self) -> tuple[FeatureDescription, ...]:
        return tuple(_describe_feature(f, None) for f in self.spec.description.output)

    def input(self, name: str) -> FeatureDescription:
        return _by_name(self.inputs, name, self.path, "input")

    def output(self, name: str) -> FeatureDescription:
        return _by_name(self.outputs, name, self.path, "output")

    @property
    def metadata(self) -> dict[str, str]:
        md = self.spec.description.metadata
        out = {k: v for k, v in md.userDefined.items()}
        for key in ("shortDescription", "author", "license", "versionString"):
            value = getattr(md, key)
            if value:
                out[key] = value
        return out

    def summary(self) -> str:
        """One line for report headers: name, kind, size and features."""
        ins = ", ".join(_short(f) for f in self.inputs)
        outs = ", ".join(_short(f) for f in self.outputs)
        return f"{self.name} ({self.kind}, spec v{self.spec_version}, {self.size_mb:.1f} MB): {ins} -> {outs}"

    def _image_preprocessing(self) -> dict[str, ImagePreprocessing]:
        if self.kind == "mlProgram":
            return _mlprogram_preprocessing(self.spec)
        return _neuralnetwork_preprocessing(self.spec)


# --- spec reading ---------------------------------------------------------------------


def _check_package_layout(p: Path) -> None:
    if not p.is_dir():
        raise ModelFormatError("is not a directory", path=p, expected="an .mlpackage directory")
    manifest = p / "Manifest.json"
    if not manifest.is_file():
        raise ModelFormatError("has no Manifest.json", path=p, expected="an .mlpackage written by coremltools or Xcode")


def _load_spec(p: Path, root: Path | None = None) -> "Model_pb2.Model":
    """Parse the spec of ``p`` (a .mlmodel, or a package whose root spec file is ``root``)."""
    try:
        from pytest_coreml_quality.coreml_proto import model_pb2

        message = model_pb2().Model
    except ImportError as exc:  # pragma: no cover - coremltools is a hard dependency
        raise ModelFormatError(f"coremltools is not importable ({exc})", path=p) from exc
    if p.is_file() and p.stat().st_size == 0:
        raise ModelFormatError("is empty", path=p, expected="a serialized Core ML Model protobuf")
    try:
        spec = message()
        spec.ParseFromString((root or p).read_bytes())
    except Exception as exc:  # protobuf DecodeError, RuntimeError from the package reader, ...
        raise ModelFormatError(
            f"cannot be read as a Core ML model ({type(exc).__name__}: {exc})".rstrip(),
            path=p,
            expected="a serialized Core ML Model protobuf",
        ) from None
    if spec.WhichOneof("Type") is None:
        raise ModelFormatError("holds no model (the spec's 'Type' is empty)", path=p, field="Type")
    if not spec.description.input:
        raise ModelFormatError("declares no inputs", path=p, field="description.input")
    return spec


def _describe_feature(f: Any, pre: ImagePreprocessing | None) -> FeatureDescription:
    t = f.type
    which = t.WhichOneof("Type")
    optional = bool(t.isOptional)
    if which == "imageType":
        it = t.imageType
        layout = it.ColorSpace.Name(it.colorSpace) if it.colorSpace else "UNKNOWN"
        enumerated: tuple[tuple[int, int], ...] = ()
        ranges = None
        flex = it.WhichOneof("SizeFlexibility")
        if flex == "enumeratedSizes":
            enumerated = tuple((s.width, s.height) for s in it.enumeratedSizes.sizes)
        elif flex == "imageSizeRange":
            r = it.imageSizeRange
            ranges = ((r.widthRange.lowerBound, r.widthRange.upperBound), (r.heightRange.lowerBound, r.heightRange.upperBound))
        return FeatureDescription(
            name=f.name,
            type="image",
            width=int(it.width) or None,
            height=int(it.height) or None,
            color_layout=layout,  # type: ignore[arg-type]
            enumerated_sizes=enumerated,
            size_ranges=ranges,
            preprocessing=pre or ImagePreprocessing(),
            optional=optional,
        )
    if which == "multiArrayType":
        at = t.multiArrayType
        enumerated_shapes: tuple[tuple[int, ...], ...] = ()
        shape_ranges: tuple[tuple[int, int], ...] = ()
        flex = at.WhichOneof("ShapeFlexibility")
        if flex == "enumeratedShapes":
            enumerated_shapes = tuple(tuple(int(d) for d in s.shape) for s in at.enumeratedShapes.shapes)
        elif flex == "shapeRange":
            shape_ranges = tuple((int(r.lowerBound), int(r.upperBound)) for r in at.shapeRange.sizeRanges)
        return FeatureDescription(
            name=f.name,
            type="multiarray",
            shape=tuple(int(d) for d in at.shape),
            dtype=_ARRAY_DTYPES.get(at.dataType, "unknown"),
            enumerated_shapes=enumerated_shapes,
            shape_ranges=shape_ranges,
            optional=optional,
        )
    simple = {
        "doubleType": "double",
        "int64Type": "int64",
        "stringType": "string",
        "dictionaryType": "dictionary",
        "sequenceType": "sequence",
        "stateType": "state",
    }
    return FeatureDescription(name=f.name, type=simple.get(which or "", "other"), optional=optional)  # type: ignore[arg-type]


def _network_of(spec: "Model_pb2.Model") -> Any | None:
    kind = spec.WhichOneof("Type")
    if kind in ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor"):
        return getattr(spec, kind)
    return None


def _neuralnetwork_preprocessing(spec: "Model_pb2.Model") -> dict[str, ImagePreprocessing]:
    """Scaler / meanImage preprocessing of a NeuralNetwork, or of each stage of a pipeline."""
    out: dict[str, ImagePreprocessing] = {}
    specs = [spec]
    if spec.WhichOneof("Type") in ("pipeline", "pipelineClassifier", "pipelineRegressor"):
        pipe = getattr(spec, spec.WhichOneof("Type"))
        pipe = pipe.pipeline if hasattr(pipe, "pipeline") and pipe.HasField("pipeline") else pipe
        specs = list(pipe.models)
    for s in specs:
        net = _network_of(s)
        if net is None:
            continue
        for pre in net.preprocessing:
            which = pre.WhichOneof("preprocessor")
            name = pre.featureName or (s.description.input[0].name if s.description.input else "")
            if which == "scaler":
                sc = pre.scaler
                # A channel's bias is stored per colour channel; grayscale uses grayBias.
                in_type = next((i.type.imageType for i in s.description.input if i.name == name), None)
                gray = in_type is not None and in_type.colorSpace in (10, 40)  # GRAYSCALE, GRAYSCALE_FLOAT16
                bias = (sc.grayBias,) if gray else (sc.redBias, sc.greenBias, sc.blueBias)
                if in_type is not None and in_type.colorSpace == 30:  # BGR: report in channel order
                    bias = (sc.blueBias, sc.greenBias, sc.redBias)
                out[name] = ImagePreprocessing(scale=sc.channelScale if sc.channelScale else 1.0, bias=tuple(bias))
            elif which == "meanImage":
                out[name] = ImagePreprocessing(mean_image=tuple(pre.meanImage.meanImage))
    return out


def _mlprogram_preprocessing(spec: "Model_pb2.Model") -> dict[str, ImagePreprocessing]:
    """Recover ``scale``/``bias`` that coremltools inlines as the first ``mul``/``add`` ops.

    For an ``ImageType(scale=s, bias=b)`` input ``x``, coremltools emits
    ``x__scaled__ = mul(x, s)`` and ``x__biased__ = add(x__scaled__, b)`` at the top of
    ``main`` (possibly after a cast to fp16). We read those patterns; a program without
    them has scale 1 and no bias.
    """
    image_inputs = {i.name for i in spec.description.input if i.type.WhichOneof("Type") == "imageType"}
    if not image_inputs or "main" not in spec.mlProgram.functions:
        return {}
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    consts: dict[str, Any] = {}
    alias = {name: name for name in image_inputs}  # var -> image input it is derived from
    scale: dict[str, float] = {}
    bias: dict[str, tuple[float, ...]] = {}
    for op in block.operations:
        outs = [o.name for o in op.outputs]
        if op.type == "const":
            consts[outs[0]] = _decode_value(op.attributes["val"])
            continue
        args = {k: [a.name for a in v.arguments] for k, v in op.inputs.items()}
        x = (args.get("x") or [None])[0]
        y = (args.get("y") or [None])[0]
        if x not in alias:
            continue
        src = alias[x]
        if op.type == "cast":
            alias[outs[0]] = src
        elif op.type == "mul" and y in consts and src not in scale and src not in bias:
            scale[src] = float(_flat(consts[y])[0])
            alias[outs[0]] = src
        elif op.type == "add" and y in consts and src not in bias:
            bias[src] = tuple(float(v) for v in _flat(consts[y]))
            alias[outs[0]] = src
    return {name: ImagePreprocessing(scale=scale.get(name, 1.0), bias=bias.get(name, ())) for name in image_inputs}


def _decode_value(value: Any) -> Any:
    """Decode the small immediate tensors coremltools writes for scalar/vector consts."""
    if not value.HasField("immediateValue"):
        return None
    tensor = value.immediateValue.tensor
    which = tensor.WhichOneof("value")
    if which == "floats":
        return list(tensor.floats.values)
    if which == "ints":
        return list(tensor.ints.values)
    if which == "doubles":
        return list(tensor.doubles.values)
    if which == "bytes":
        dt = value.type.tensorType.dataType
        raw = tensor.bytes.values
        if dt == 10:  # FLOAT16
            return list(struct.unpack(f"<{len(raw) // 2}e", raw))
    return None


def _flat(v: Any) -> list[float]:
    if v is None:
        return [0.0]
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _by_name(features: tuple[FeatureDescription, ...], name: str, path: Path, what: str) -> FeatureDescription:
    for f in features:
        if f.name == name:
            return f
    names = ", ".join(repr(f.name) for f in features) or "none"
    raise ModelFormatError(f"has no {what} named '{name}'", path=path, field=f"description.{what}", expected=f"one of {names}")


def _short(f: FeatureDescription) -> str:
    if f.is_image:
        return f"{f.name}: image {f.color_layout} {f.width}x{f.height}"
    if f.is_multiarray:
        return f"{f.name}: {f.dtype}[{'x'.join(str(d) for d in f.shape)}]"
    return f"{f.name}: {f.type}"


# --- content hash, memoised per (path, size, mtime) so a 176 MB file is hashed once ---------

_HASH_MEMO: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def content_hash(path: str | os.PathLike[str]) -> str:
    """Content hash of a model file or package (blake2b, 64 hex digits).

    Hashing 176 MB takes a fraction of a second; the result is memoised per process
    keyed by the path's size and modification time, so repeated calls are free.
    """
    p = Path(path).resolve()
    stamp = _stamp(p)
    key = (str(p), *stamp)
    with _HASH_LOCK:
        if key in _HASH_MEMO:
            return _HASH_MEMO[key]
    digest = hash_path(p)
    with _HASH_LOCK:
        _HASH_MEMO[key] = digest
    return digest


def forget_content_hash(path: str | os.PathLike[str]) -> None:
    """Drop the memoised hash of ``path``, so the next :func:`content_hash` reads its bytes again.

    A timed cold load starts from the file: it must not reuse a hash an earlier load computed.
    """
    p = str(Path(path).resolve())
    with _HASH_LOCK:
        for key in [k for k in _HASH_MEMO if k[0] == p]:
            del _HASH_MEMO[key]


def _stamp(p: Path) -> tuple[int, int]:
    if p.is_dir():
        files = [f.stat() for f in p.rglob("*") if f.is_file()]
        return sum(s.st_size for s in files), max((s.st_mtime_ns for s in files), default=0)
    st = p.stat()
    return st.st_size, st.st_mtime_ns
