"""Interior / boundary / background targets for instance-aware training (pure computation).

The SpaceNet winners' three-class scheme: a model that also predicts a thin *boundary* class
along every object's outline keeps touching objects apart, because their interiors no longer
touch. ``vectorize --instances boundary`` then takes the interior components as markers and
gives the boundary pixels back to the nearest marker (:mod:`pipeline.vectorize.instances`).

A labelled pixel is *boundary* when some pixel within ``radius`` (Euclidean, centre to
centre) carries a different object id -- background or a neighbouring object. The band is
therefore inside each object: interior and boundary together are exactly the object mask, and
between two touching objects both sides of the contact get a band. Computed on a window padded
by the radius, the result does not depend on where the window was cut.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["BOUNDARY_NAME", "boundary_classes", "boundary_targets", "disk"]

#: Name of the boundary output channel in a checkpoint's class list.
BOUNDARY_NAME = "boundary"


def disk(radius: float) -> np.ndarray:
    """Return the boolean footprint of pixels whose centres lie within ``radius`` of the centre.

    Examples
    --------
    >>> disk(1.0).astype(int)
    array([[0, 1, 0],
           [1, 1, 1],
           [0, 1, 0]])
    """
    reach = math.floor(radius)
    offsets = np.arange(-reach, reach + 1)
    return np.asarray(offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius * radius)


def boundary_targets(
    ids: np.ndarray, classes: np.ndarray, radius: float, boundary: int
) -> np.ndarray:
    """Turn an object-id raster into interior / boundary / background class ids.

    Parameters
    ----------
    ids
        ``(h, w)`` integer object ids, 0 = background; each object its own id.
    classes
        ``(h, w)`` class ids (0 = background) of the same pixels.
    radius
        Boundary width in pixels (> 0): labelled pixels with a differently labelled pixel
        within this distance become ``boundary``. Pixels nearer than ``radius`` to the array
        edge only see what is inside, so pad the window by ``ceil(radius)`` and crop after.
    boundary
        The class id given to boundary pixels.

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` uint8: ``classes`` inside objects, ``boundary`` on their rims, 0 elsewhere.

    Examples
    --------
    >>> ids = np.zeros((5, 7), dtype=np.int32)
    >>> ids[:, 1:4], ids[:, 4:6] = 1, 2
    >>> boundary_targets(ids, (ids > 0).astype(np.uint8), 1.0, 2)[2]
    array([0, 2, 1, 2, 2, 2, 0], dtype=uint8)
    """
    from scipy import ndimage

    if radius <= 0:
        raise ValueError(f"boundary radius must be positive, got {radius}")
    footprint = disk(radius)
    # Some pixel within the radius has another id <=> the max and min over the disk differ.
    # Outside the array counts as "same" (mode="nearest"): the caller pads instead.
    high = ndimage.maximum_filter(ids, footprint=footprint, mode="nearest")
    low = ndimage.minimum_filter(ids, footprint=footprint, mode="nearest")
    rim = (ids > 0) & (high != low)
    out = np.where(ids > 0, classes, 0).astype(np.uint8)
    out[rim] = boundary
    return out


def boundary_classes(classes: tuple[str, ...] | list[str]) -> list[str]:
    """Return the output channel names of a boundary model: background, classes, boundary.

    Examples
    --------
    >>> boundary_classes(["building"])
    ['background', 'building', 'boundary']
    """
    return ["background", *classes, BOUNDARY_NAME]
