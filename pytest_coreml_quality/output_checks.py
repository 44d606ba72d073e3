"""Checks on raw model outputs before they are read as masks.

A NaN cast to an 8-bit mask is 0 and a NaN probability compares false with every
threshold, so a model that emits NaN would be scored as an empty mask with no error.
Every place that turns a raw output into a mask or a pixel buffer calls
:func:`require_finite` first.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_coreml_quality.errors import CoreMLQualityError
from pytest_coreml_quality.model import Model


class NonFiniteOutputError(CoreMLQualityError):
    """A model output holds NaN or infinite values: it cannot be read as a mask."""

    def __init__(self, model: Model, output: str, nans: int, infs: int, size: int, image: str | None = None) -> None:
        self.model, self.output, self.image = model, output, image
        self.counts = (nans, infs, size)
        found = " and ".join(part for part in (f"{nans} NaN" if nans else "", f"{infs} infinite" if infs else "") if part)
        where = f" for image '{image}'" if image is not None else ""
        super().__init__(
            f"output '{output}' of model {model.name} has {found} value(s) out of {size}{where}",
            path=model.path,
            field=output,
            expected="finite numbers (the model produced NaN/infinity: check its weights and input normalisation)",
        )

    def for_image(self, image: str) -> "NonFiniteOutputError":
        """The same error naming ``image`` (raised where the runtime did not know which image it ran)."""
        if self.image is not None:
            return self
        return NonFiniteOutputError(self.model, self.output, *self.counts, image=image)


def require_finite(values: Any, *, model: Model, output: str, image: str | None = None) -> None:
    """Raise :class:`NonFiniteOutputError` if ``values`` (array-like or PIL image) has NaN or infinities.

    The message names the model, the output, the image (when known) and how many values are bad.
    """
    arr = np.asarray(values)
    if arr.dtype.kind not in "fc":  # integer and boolean outputs cannot hold NaN
        return
    finite = np.isfinite(arr)
    if finite.all():
        return
    nans = int(np.isnan(arr).sum())
    infs = int(arr.size - finite.sum()) - nans
    raise NonFiniteOutputError(model, output, nans, infs, int(arr.size), image=image)


__all__ = ["NonFiniteOutputError", "require_finite"]
