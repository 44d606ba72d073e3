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

    def prepare(self) -> "Reference":
        """Compute now everything :func:`~pytest_coreml_quality.metrics.scores.score_mask` reads."""
        names = ["n_fg", "fg_share", "binary_float", "background", "fg_offset", "levels_255_int16"]
        if self.n_fg:  # these need a foreground
            names += ["centroid", "importance", "nearest_fg"]
        for name in names:
            getattr(self, name)
        return self

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

    @cached_property
    def background(self) -> BoolArray:
        return ~self.binary

    @cached_property
    def fg_offset(self) -> NDArray[np.uint16]:
        """256 on foreground pixels, 0 elsewhere: added to a prediction's 8-bit levels, one
        histogram counts the levels of foreground and background pixels apart."""
        return self.binary.astype(np.uint16) << 8

    @cached_property
    def levels_255_int16(self) -> NDArray[np.int16]:
        """:attr:`levels_255` widened for a signed difference (the 0..255 loss)."""
        return self.levels_255.astype(np.int16)

    @cached_property
    def transform_box(self) -> tuple[slice, slice]:
        """The foreground's box grown by :data:`IMPORTANCE_REACH` px, clipped: beyond it every
        pixel's weighted-F importance is exactly 2.0, so only the box needs a distance transform."""
        rows, cols = self.fg_box
        h, w = self.shape
        reach = IMPORTANCE_REACH
        return slice(max(rows.start - reach, 0), min(rows.stop + reach, h)), slice(max(cols.start - reach, 0), min(cols.stop + reach, w))

    def _distance_transforms(self) -> None:
        """One distance transform, of :attr:`transform_box`, for both the importance and :attr:`nearest_fg`.

        Every foreground pixel lies in the box, so the distances (and nearest pixels) of the
        box's pixels are those of a whole-frame transform; outside the box the distance
        exceeds :data:`IMPORTANCE_REACH` and the importance rounds to exactly 2.0.
        """
        from scipy import ndimage  # SciPy is needed only for the weighted F-measure

        rows, cols = self.transform_box
        dist, (iy, ix) = ndimage.distance_transform_edt(self.background[rows, cols], return_indices=True)
        dep_rows, dep_cols = self.dependency_box
        r0, c0 = dep_rows.start - rows.start, dep_cols.start - cols.start
        inside = slice(r0, dep_rows.stop - rows.start), slice(c0, dep_cols.stop - cols.start)
        self.__dict__["nearest_fg"] = (iy[inside] - r0, ix[inside] - c0)
        importance = np.full(self.shape, 2.0)
        importance[rows, cols] = np.where(self.binary[rows, cols], 1.0, 2.0 - np.exp(np.log(0.5) / 5.0 * dist))
        self.__dict__["importance"] = importance


#: Distance (px) from the object beyond which the weighted-F importance ``2 - 0.5 ** (d / 5)``
#: is exactly 2.0 in float64: 0.5 ** (d / 5) <= 2 ** -53 (half the spacing of floats below 2)
#: from d = 265 on; 270 leaves room for the rounding of the exponent (tests check the claim).
IMPORTANCE_REACH = 270
