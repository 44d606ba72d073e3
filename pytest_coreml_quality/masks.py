"""Mask contracts: how a model's raw output becomes one foreground probability per pixel.

``--coreml-mask=SPEC`` names the contract (:func:`parse_mask_spec`):

* ``prob``: one channel of probabilities in [0, 1];
* ``logits``: one channel of logits (a sigmoid is applied);
* ``channel:K``: channel K of a C-channel map; a softmax over the channels is applied
  first unless they already are probabilities (all in [0, 1], summing to 1 per pixel);
* ``class:K`` / ``class:K1,K2``: pixels whose class is among those, from a class-index
  map (integer values) or from the argmax of a C-channel score map;
* ``auto`` (default): :func:`decide_auto` picks one of the above from the base model's
  first output where that is safe (one channel in [0, 1] -> ``prob``; two channels ->
  ``channel:1``) and refuses everything else with the values that would work.

Layouts read: ``(H,W)``, ``(1,H,W)``, ``(1,1,H,W)``, ``(C,H,W)``, ``(1,C,H,W)`` and
``(H,W,C)`` (see :func:`channels_first`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pytest_coreml_quality.errors import CoreMLQualityError

MASK_KINDS = ("auto", "prob", "logits", "channel", "class")

# Float rounding lets probabilities overshoot [0, 1] or miss a sum of 1 by this much, not more.
PROBABILITY_TOLERANCE = 1e-3

# How many class ids an error message lists before it stops.
_MAX_IDS_SHOWN = 20

MASK_VALUES_HELP = "auto, prob, logits, channel:K or class:K[,K2...]"


class MaskError(CoreMLQualityError):
    """The mask spec is malformed, or does not fit the model's output."""


@dataclass(frozen=True)
class MaskSpec:
    """A parsed ``--coreml-mask`` value."""

    kind: str = "auto"
    channel: int | None = None
    classes: tuple[int, ...] = ()

    def __str__(self) -> str:
        if self.kind == "channel":
            return f"channel:{self.channel}"
        if self.kind == "class":
            return "class:" + ",".join(map(str, self.classes))
        return self.kind


def parse_mask_spec(text: str) -> MaskSpec:
    """Parse ``auto``, ``prob``, ``logits``, ``channel:K`` or ``class:K[,K2...]`` (K >= 0)."""
    value = str(text).strip().lower()
    kind, _, arg = value.partition(":")
    kind = {"probabilities": "prob", "probability": "prob"}.get(kind, kind)
    try:
        if kind in ("auto", "prob", "logits") and not arg:
            return MaskSpec(kind)
        if kind == "channel" and arg:
            channel = int(arg)
            if channel >= 0:
                return MaskSpec("channel", channel=channel)
        if kind == "class" and arg:
            classes = tuple(sorted({int(v) for v in arg.split(",")}))
            if all(c >= 0 for c in classes):
                return MaskSpec("class", classes=classes)
    except ValueError:
        pass
    raise MaskError(f"got '{text}'", field="--coreml-mask", expected=f"{MASK_VALUES_HELP}, with K a whole number >= 0")


# --- layouts -------------------------------------------------------------------------------


def channels_first(arr: NDArray[Any]) -> tuple[NDArray[Any], str]:
    """``(C, H, W)`` view of an output and the name of the layout it was read as.

    Leading batch axes of size 1 are dropped. A 3-D output is ``(C,H,W)`` when its first
    axis is smaller than the other two, ``(H,W,C)`` when its last one is; anything else is
    ambiguous and refused rather than guessed.
    """
    a = np.asarray(arr)
    shape = tuple(a.shape)
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 2:
        return a[None], "(H,W)"
    if a.ndim == 3:
        c_first, c_last = a.shape[0], a.shape[2]
        if c_first == 1 or (c_first < a.shape[1] and c_first < c_last):
            return a, "(C,H,W)"
        if c_last == 1 or (c_last < a.shape[0] and c_last < a.shape[1]):
            return np.moveaxis(a, -1, 0), "(H,W,C)"
    raise MaskError(
        f"output has shape {shape}: cannot tell its channel axis",
        field="--coreml-mask",
        expected="(H,W), (1,H,W), (1,1,H,W), (C,H,W), (1,C,H,W) or (H,W,C) with fewer channels than rows and columns",
    )


def are_probabilities(chw: NDArray[Any]) -> bool:
    """Whether C >= 2 channels are already probabilities: in [0, 1] and summing to 1 per pixel."""
    values = np.asarray(chw, dtype=np.float64)
    if not np.isfinite(values).all() or values.min() < -PROBABILITY_TOLERANCE or values.max() > 1 + PROBABILITY_TOLERANCE:
        return False
    return bool(np.abs(values.sum(axis=0) - 1.0).max() <= PROBABILITY_TOLERANCE)


def softmax(chw: NDArray[Any]) -> NDArray[np.float64]:
    """Softmax over the channel axis (numerically stable)."""
    values = np.asarray(chw, dtype=np.float64)
    e = np.exp(values - values.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def is_integral(values: NDArray[Any]) -> bool:
    """Whether an output holds whole numbers only (an int dtype, or floats such as 15.0)."""
    a = np.asarray(values)
    if np.issubdtype(a.dtype, np.integer):
        return True
    return bool(a.size) and bool(np.isfinite(a).all()) and bool((a == np.round(a)).all())


# --- reading a mask ----------------------------------------------------------------------------


def read_mask(value: Any, spec: MaskSpec, output_name: str) -> NDArray[np.float64]:
    """The (H, W) foreground probability in [0, 1] that ``spec`` reads from a raw output."""
    chw, layout = channels_first(value)
    channels = chw.shape[0]
    kind = spec.kind
    if kind == "auto":  # a caller that did not decide: decide from this output alone
        kind_spec, _ = decide_auto(value, output_name)
        return read_mask(value, kind_spec, output_name)
    where = f"output '{output_name}' {layout} with {channels} channel{'s' if channels != 1 else ''}"
    if kind in ("prob", "logits"):
        if channels != 1:
            raise MaskError(
                f"{where}: '{kind}' reads one channel",
                field="--coreml-mask",
                expected=f"channel:K (K in 0..{channels - 1}) or class:K",
            )
        plane = np.asarray(chw[0], dtype=np.float64)
        if kind == "logits":
            with np.errstate(over="ignore"):
                return 1.0 / (1.0 + np.exp(-plane))
        _check_probability_range(plane, output_name)
        return np.clip(plane, 0.0, 1.0)
    if kind == "channel":
        assert spec.channel is not None
        if channels < 2 or spec.channel >= channels:
            raise MaskError(
                f"{where}: has no channel {spec.channel}",
                field="--coreml-mask",
                expected=f"channel:K with K in 0..{channels - 1}" if channels >= 2 else "prob or logits for one channel",
            )
        probs = chw if are_probabilities(chw) else softmax(chw)
        return np.clip(np.asarray(probs[spec.channel], dtype=np.float64), 0.0, 1.0)
    # class:K
    if channels == 1:
        labels = np.asarray(chw[0])
        if not is_integral(labels):
            raise MaskError(
                f"{where} holds non-integer values in [{labels.min():.4g}, {labels.max():.4g}]: not a class-index map",
                field="--coreml-mask",
                expected="an integer class map for class:K, or prob / logits",
            )
        classes = np.rint(labels).astype(np.int64)
    else:
        too_big = [k for k in spec.classes if k >= channels]
        if too_big:
            raise MaskError(
                f"{where}: no class {too_big[0]} among its channels",
                field="--coreml-mask",
                expected=f"class:K with K in 0..{channels - 1}",
            )
        classes = np.argmax(chw, axis=0)
    return np.isin(classes, spec.classes).astype(np.float64)


def _check_probability_range(plane: NDArray[np.float64], output_name: str) -> None:
    if plane.size and (
        not np.isfinite(plane).all() or plane.min() < -PROBABILITY_TOLERANCE or plane.max() > 1 + PROBABILITY_TOLERANCE
    ):
        raise MaskError(
            f"output '{output_name}' has values in [{plane.min():.4g}, {plane.max():.4g}], not probabilities",
            field="--coreml-mask",
            expected="probabilities in [0, 1], or --coreml-mask=logits to apply a sigmoid",
        )


# --- auto -----------------------------------------------------------------------------------------


def decide_auto(value: Any, output_name: str, where: str = "") -> tuple[MaskSpec, str | None]:
    """The contract ``auto`` reads from one raw output, and a note for the report (or None).

    Only the safe cases are decided; anything else raises :class:`MaskError` showing the
    output's shape, dtype and value range, and the ``--coreml-mask`` values that would work.
    ``where`` says which image the output came from, for the message.
    """
    arr = np.asarray(value)
    chw, layout = channels_first(arr)
    channels = chw.shape[0]
    finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (float("nan"), float("nan"))
    seen = f"output '{output_name}'{where}: shape {tuple(arr.shape)} {layout}, dtype {arr.dtype}, values in [{low:.4g}, {high:.4g}]"
    if channels == 2:
        spec = MaskSpec("channel", channel=1)
        return spec, describe(arr, spec)
    if channels == 1:
        plane = chw[0]
        integer_dtype = np.issubdtype(arr.dtype, np.integer)
        # Floats read as class ids only when they cannot be probabilities: whole, >= 0, some > 1.
        if integer_dtype or (is_integral(plane) and low >= 0 and high > 1):
            ids = np.unique(np.rint(plane).astype(np.int64))
            shown = ", ".join(map(str, ids[:_MAX_IDS_SHOWN])) + (", ..." if ids.size > _MAX_IDS_SHOWN else "")
            foreground = [int(i) for i in ids if i != 0] or [int(ids[0])]
            example = ",".join(map(str, foreground[:2])) if len(foreground) > 1 else "K1,K2"
            raise MaskError(
                f"{seen}: a class-index map (class ids seen: {shown}); say which classes are the mask",
                field="--coreml-mask",
                expected=f"--coreml-mask=class:{foreground[0]}, or several as --coreml-mask=class:{example}",
            )
        if low >= -PROBABILITY_TOLERANCE and high <= 1 + PROBABILITY_TOLERANCE:
            return MaskSpec("prob"), None
        raise MaskError(
            f"{seen}: far outside [0, 1], so not probabilities; these look like logits",
            field="--coreml-mask",
            expected="--coreml-mask=logits to apply a sigmoid (or --coreml-logits)",
        )
    raise MaskError(
        f"{seen}: {channels} channels, cannot tell which one is the mask",
        field="--coreml-mask",
        expected=(
            f"--coreml-mask=channel:K with K in 0..{channels - 1} (softmax applied unless already probabilities), "
            f"or --coreml-mask=class:K / class:K1,K2 (argmax over the {channels} channels)"
        ),
    )


def describe(value: Any, spec: MaskSpec) -> str | None:
    """How ``spec`` reads this output, for the report header (None where nothing needs saying)."""
    chw, _ = channels_first(value)
    channels = chw.shape[0]
    if spec.kind == "channel":
        return f"channel {spec.channel} of {channels}, {'already probabilities' if are_probabilities(chw) else 'softmax'}"
    if spec.kind == "class":
        source = "a class-index map" if channels == 1 else f"the argmax of {channels} channels"
        return f"class {', '.join(map(str, spec.classes))} of {source}"
    return None


def stretch(mask: NDArray[Any]) -> NDArray[np.float32]:
    """Min-max stretch of one prediction to span [0, 1] (the published protocol; constant masks stay)."""
    arr = np.asarray(mask, dtype=np.float64)
    low, high = arr.min(), arr.max()
    if high > low:
        arr = (arr - low) / (high - low)
    return arr.astype(np.float32)


__all__ = [
    "MASK_KINDS",
    "MASK_VALUES_HELP",
    "MaskError",
    "MaskSpec",
    "are_probabilities",
    "channels_first",
    "decide_auto",
    "describe",
    "is_integral",
    "parse_mask_spec",
    "read_mask",
    "softmax",
    "stretch",
]
