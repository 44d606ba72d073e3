"""Pixels for the reports: photos, ground truth and predicted masks of a run, by image name.

The session offers them to the HTML report through :class:`ImageSource`; the report
never opens the golden set or runs a model itself. Models whose output is not a mask
(``--coreml-output-kind`` tensor, heatmap or classifier) offer their raw outputs or
class probabilities instead of masks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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

    # The methods below serve models that are not segmenters. A source without them is
    # read as masks only (the report checks with getattr, so older sources keep working).

    def kind(self, model: str) -> str:
        """``mask`` for a segmenter, else the output kind: ``tensor``, ``heatmap`` or ``classifier``."""
        ...

    def outputs(self, model: str, recipe: str, name: str) -> dict[str, NDArray[Any]] | None:
        """Output name -> the array the variant returned (colour images as H x W x C pixels), or None."""
        ...

    def image_outputs(self, model: str) -> frozenset[str]:
        """The names of the outputs that are images (shown as pictures, not only as differences)."""
        ...

    def probabilities(self, model: str, recipe: str, name: str) -> dict[str, float] | None:
        """A classifier variant's class -> probability for the image, or None when not computed."""
        ...


@dataclass
class DatasetImageSource:
    """An :class:`ImageSource` over golden sets and a look-up of predicted masks.

    ``datasets`` maps a model name to an object with ``ids`` and ``sample(id)`` returning
    ``.image`` (PIL) and ``.mask`` (float array), like :class:`pytest_coreml_quality.dataset.Dataset`;
    ``predictions(model, recipe)`` returns id -> mask, or None for a variant not evaluated;
    ``partners(model, key)`` names the lane a side-by-side run compares ``key`` with.
    ``kinds`` maps the models that are not segmenters to their output kind, and
    ``tensors(model, recipe)`` returns their variant's outputs, an object like
    :class:`pytest_coreml_quality.tensors.TensorEvaluation` (``outputs``, ``output_names``,
    ``image_outputs``, ``labels``), or None for a variant not evaluated.
    """

    datasets: Mapping[str, Any]
    predictions: Callable[[str, str], Mapping[str, NDArray[Any]] | None]
    partners: Callable[[str, str], str | None] | None = None  # (model, key) -> the second backend's key
    kinds: Mapping[str, str] = field(default_factory=dict)
    tensors: Callable[[str, str], Any] | None = None

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

    def kind(self, model: str) -> str:
        return self.kinds.get(model, "mask")

    def _tensors(self, model: str, recipe: str) -> Any:
        return None if self.tensors is None else self.tensors(model, recipe)

    def outputs(self, model: str, recipe: str, name: str) -> dict[str, NDArray[Any]] | None:
        tev = self._tensors(model, recipe)
        if tev is None:
            return None
        found = tev.outputs
        return {out: found[out][name] for out in tev.output_names if name in found[out]} or None

    def image_outputs(self, model: str) -> frozenset[str]:
        tev = self._tensors(model, "base")
        return frozenset() if tev is None else frozenset(tev.image_outputs)

    def probabilities(self, model: str, recipe: str, name: str) -> dict[str, float] | None:
        tev = self._tensors(model, recipe)
        if tev is None or tev.labels is None:
            return None
        return class_probabilities(tev.labels, tev.outputs[tev.output_names[0]].get(name))


def class_probabilities(labels: Sequence[Any], vector: Any) -> dict[str, float] | None:
    """Class label (as text) -> probability, from a probability vector in the order of ``labels``."""
    if vector is None:
        return None
    return {str(label): float(p) for label, p in zip(labels, np.asarray(vector).ravel())}
