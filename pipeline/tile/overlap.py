"""Mirror padding shared by the tiles and the whole-image reference.

Every tile reads its window through the same index map as :func:`reflect_pad`, so a pixel
outside the image has the same value whichever tile asks for it, and the stitched result can
equal the whole-image reference exactly.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["reflect_index", "reflect_pad"]


def reflect_index(start: int, stop: int, size: int) -> npt.NDArray[np.intp]:
    """Map positions ``start..stop-1`` onto ``0..size-1`` by mirroring at the edges.

    The mirror is numpy's ``mode="reflect"`` (the edge pixel is not repeated), repeated as
    often as needed, so pads larger than the image are handled the way ``np.pad`` does.

    Parameters
    ----------
    start, stop
        Half-open range of positions, possibly outside ``[0, size)``.
    size
        Length of the axis.

    Returns
    -------
    numpy.ndarray
        ``stop - start`` indices into the axis.

    Examples
    --------
    >>> reflect_index(-3, 5, 3).tolist()
    [1, 2, 1, 0, 1, 2, 1, 0]
    """
    positions = np.arange(start, stop, dtype=np.intp)
    if size == 1:
        return np.zeros_like(positions)
    period = 2 * (size - 1)
    folded = np.mod(positions, period)
    return np.where(folded >= size, period - folded, folded)


def reflect_pad(
    image: npt.NDArray[np.generic], before: tuple[int, int], after: tuple[int, int]
) -> npt.NDArray[np.generic]:
    """Mirror-pad the last two axes of ``image`` (rows, cols).

    Parameters
    ----------
    image
        Array of shape ``(..., H, W)``.
    before, after
        Pixels added above/left and below/right, as ``(rows, cols)``.

    Returns
    -------
    numpy.ndarray
        ``(..., H + before[0] + after[0], W + before[1] + after[1])``.
    """
    height, width = image.shape[-2:]
    rows = reflect_index(-before[0], height + after[0], height)
    cols = reflect_index(-before[1], width + after[1], width)
    return image[..., rows[:, None], cols[None, :]]
