"""Pixels for the reports: photos, ground truth and predicted masks of a run, by image name.

The session offers them to the HTML report through :class:`ImageSource`; the report
never opens the golden set or runs a model itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from PIL import Image


class ImageSource(Protocol):
    """Where the HTML report gets pixels from; ``model`` is the model's file name in the run."""

    def names(self, model: str) -> list[str]:
        """The image names of the golden set used for ``model`` (as in ``per_image``)."""
        ...

    def photo(self, model: str, name: str) -> Image.Image:
        """The input photo."""
        ...

    def truth(self, model: str, name: str) -> NDArray[Any]:
        """The ground-truth mask, floats in [0, 1]."""
        ...

    def prediction(self, model: str, recipe: str, name: str) -> NDArray[Any] | None:
        """The variant's predicted mask in [0, 1], or None when it was not computed.

        ``recipe`` is a results key: on a lane it names the lane too (``q4@onnx``).
        """
        ...

    def partner(self, model: str, key: str) -> str | None:
        """The results key of the second backend's lane that ``key``'s backend drift compares with
        (``q4@onnx`` for ``q4@coreml:ALL``), or None outside a side-by-side run."""
        ...


@dataclass
class DatasetImageSource:
    """An :class:`ImageSource` over golden sets and a look-up of predicted masks.

    ``datasets`` maps a model name to an object with ``ids`` and ``sample(id)`` returning
    ``.image`` (PIL) and ``.mask`` (float array), like :class:`pytest_coreml_quality.dataset.Dataset`;
    ``predictions(model, recipe)`` returns id -> mask, or None for a variant not evaluated;
    ``partners(model, key)`` names the lane a side-by-side run compares ``key`` with.
    """

    datasets: Mapping[str, Any]
    predictions: Callable[[str, str], Mapping[str, NDArray[Any]] | None]
    partners: Callable[[str, str], str | None] | None = None  # (model, key) -> the second backend's key

    def names(self, model: str) -> list[str]:
        ds = self.datasets.get(model)
        return [] if ds is None else list(ds.ids)

    def photo(self, model: str, name: str) -> Image.Image:
        return self.datasets[model].sample(name).image

    def truth(self, model: str, name: str) -> NDArray[Any]:
        return np.asarray(self.datasets[model].sample(name).mask)

    def prediction(self, model: str, recipe: str, name: str) -> NDArray[Any] | None:
        masks = self.predictions(model, recipe)
        return None if masks is None else masks.get(name)

    def partner(self, model: str, key: str) -> str | None:
        return None if self.partners is None else self.partners(model, key)
