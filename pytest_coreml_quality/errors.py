"""Errors a user can act on: each names the file, the field and what was expected."""

from __future__ import annotations

from os import PathLike


class CoreMLQualityError(Exception):
    """Base class for errors caused by the user's input (model, dataset, recipe, options).

    The plugin turns these into ``pytest.UsageError`` or a failed item with this message
    alone, never a traceback from deep inside coremltools or onnxruntime.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | PathLike[str] | None = None,
        field: str | None = None,
        expected: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.field = field
        self.expected = expected
        parts = []
        if self.path is not None:
            parts.append(self.path)
        if field is not None:
            parts.append(f"field '{field}'")
        prefix = ": ".join(parts)
        text = f"{prefix}: {message}" if prefix else message
        if expected is not None:
            text += f" (expected {expected})"
        self.message = message
        super().__init__(text)


class ModelFormatError(CoreMLQualityError):
    """The file is missing, unreadable, or not a well-formed Core ML model."""


class UnsupportedModelError(CoreMLQualityError):
    """The model is well formed but uses layers/ops this runtime cannot execute."""


class RecipeError(CoreMLQualityError):
    """A compression recipe is unknown, malformed, or does not apply to the model kind."""


class DatasetError(CoreMLQualityError):
    """The golden set is empty, incomplete or has unreadable files."""


class BackendUnavailableError(CoreMLQualityError):
    """The requested runtime backend cannot run on this machine."""


class SettingError(CoreMLQualityError):
    """A command-line option or ini key has a value it cannot take (a ``pytest.UsageError``)."""


class MarkerError(CoreMLQualityError):
    """A coreml marker's arguments are unknown or impossible; the message names the test."""


class PreprocessError(CoreMLQualityError):
    """An image cannot be turned into the model's input, or an output into a mask."""
