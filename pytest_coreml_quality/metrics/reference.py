"""A reference mask prepared once and reused for every prediction scored against it.

Everything that depends only on the reference (its binary form, foreground count,
the distance transform and importance weights of the weighted F-measure, ...) is
computed on first use and kept: a golden set's ground truth is scored against every
variant of a run, and the base model's masks against every compressed variant.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from pytest_coreml_quality.metrics.core import BoolArray, FloatArray, as_float, binarize, to_uint8


class Reference:
    """A soft reference mask in [0, 1] and the derived data metrics need."""

    def __init__(self, mask: NDArray) -> None:
        self.soft: FloatArray = as_float(mask)
        self.binary: BoolArray = binarize(mask)
        self.shape: tuple[int, ...] = self.binary.shape

    @classmethod
    def of(cls, mask: "NDArray | Reference") -> "Reference":
        """``mask`` itself if already prepared, else a new :class:`Reference`."""
        return mask if isinstance(mask, Reference) else cls(mask)

    @cached_property
    def n_fg(self) -> int:
        return int(np.count_nonzero(self.binary))

    @cached_property
    def fg_share(self) -> float:
        return self.n_fg / self.binary.size

    @cached_property
    def binary_float(self) -> FloatArray:
        return self.binary.astype(np.float64)

    @cached_property
    def fg_box(self) -> tuple[slice, slice]:
        """Row and column slices of the foreground's bounding box (requires foreground)."""
        rows = np.flatnonzero(self.binary.any(axis=1))
        cols = np.flatnonzero(self.binary.any(axis=0))
        return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)

    @cached_property
    def levels_255(self) -> NDArray[np.uint8]:
        """The soft mask rounded to 8 bits (for the article's 0..255 loss)."""
        return to_uint8(self.soft)

    @cached_property
    def centroid(self) -> tuple[int, int]:
        """Rounded (row, column) of the foreground's centroid (requires foreground)."""
        rows, cols = np.nonzero(self.binary)
        return int(np.round(rows.mean())), int(np.round(cols.mean()))

    @cached_property
    def dependency_box(self) -> tuple[slice, slice]:
        """The foreground's bounding box grown by the weighted-F filter's reach (3 px), clipped."""
        rows, cols = self.fg_box
        h, w = self.shape
        return slice(max(rows.start - 3, 0), min(rows.stop + 3, h)), slice(max(cols.start - 3, 0), min(cols.stop + 3, w))

    @cached_property
    def nearest_fg(self) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """(rows, cols) of the nearest foreground pixel of each pixel of :attr:`dependency_box`.

        Coordinates are relative to the box. The weighted F-measure reads these only
        inside the box (its filter reaches 3 px beyond the foreground), and every
        foreground pixel lies in the box, so a transform of the box alone is exact.
        """
        self._distance_transforms()
        return self.__dict__["nearest_fg"]

    @cached_property
    def importance(self) -> FloatArray:
        """Weighted-F pixel importance: 1 inside, up to 2 far outside the object."""
        self._distance_transforms()
        return self.__dict__["importance"]

    def _distance_transforms(self) -> None:
        from scipy import ndimage  # SciPy is needed only for the weighted F-measure

        rows, cols = self.dependency_box
        background = ~self.binary
        if (rows.stop - rows.start) * (cols.stop - cols.start) * 2 > self.binary.size:
            # A large object: one transform with indices is cheaper than two transforms.
            dist, (iy, ix) = ndimage.distance_transform_edt(background, return_indices=True)
            nearest = (iy[rows, cols] - rows.start, ix[rows, cols] - cols.start)
        else:
            dist = ndimage.distance_transform_edt(background)
            _, nearest = ndimage.distance_transform_edt(background[rows, cols], return_indices=True)
        self.__dict__["nearest_fg"] = tuple(nearest)
        self.__dict__["importance"] = np.where(self.binary, 1.0, 2.0 - np.exp(np.log(0.5) / 5.0 * dist))
