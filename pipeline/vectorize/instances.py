"""Separate touching objects into instances with local rules of bounded reach (pure computation).

Two methods turn a label raster into instances, each object its own id:

``boundary``
    For interior / boundary / background models (``gigaseg train`` with ``data.boundary``):
    the *markers* are the connected interior regions of each class; the foreground is the
    interior plus the boundary class.
``distance``
    For plain foreground models: the distance to the background is clipped at ``reach``
    pixels; a foreground pixel is a marker pixel when its clipped distance is at least
    ``threshold`` and no pixel within ``separation`` has a larger one (maxima with a minimum
    separation). Markers are computed per class.

Marker components (8-connected marker pixels of one class) with fewer than ``min_marker``
pixels are dropped before they grow, for both methods: small interior fragments or noise
maxima then do not split an object; their pixels go to the neighbouring markers.

Then the markers grow through the foreground, one ring of pixels per step, for ``reach``
steps; steps alternate between the 8 and the 4 neighbours (an octagonal distance, closer to
Euclidean than either alone). A pixel reached in a step takes, of its neighbours reached
before, the owner marker pixel that comes first in raster order (lowest row, then column).
The instance of a pixel is the marker component (8-connected marker pixels of one class) of
its owner. Pixels no marker reaches within ``reach`` steps belong to no instance. Instances
are 8-connected regions and are traced with 8-connectivity.

Why this is exact on chunks: each step is a rule of radius 1 and the tie-break is a global
order, not the order of a flooding queue, so after ``reach`` steps a pixel's owner depends
only on the pixels within ``reach`` of it (by induction over the steps). Every rule
looks at most ``halo`` pixels away (:attr:`InstanceRules.halo`: ``reach`` for ``boundary``;
``reach`` for the clipped distance + ``separation`` for the maxima + ``reach`` for the
expansion, for ``distance``; plus ``min_marker - 1`` for the marker size), so a chunk read
with that halo decides its pixels exactly as the whole raster does. The marker size is
local too: a component has at least ``n`` pixels exactly when the part of it within
``n - 1`` steps of any one of its pixels has (a connected set's breadth-first layers are
not empty until it is exhausted), so a window reaching ``min_marker - 1`` beyond a marker
pixel counts it right. Window edges at the raster edge are the raster edge itself, and
everything outside the raster counts as "not background" for the distance, the same in
both. Only the *identity* of a marker that continues past the window is not local; the
chunked driver (:mod:`pipeline.vectorize.instance_tasks`) joins marker pieces with the seam
machinery (:func:`~pipeline.vectorize.seams.merge_border_pieces`).

Instances are connected: a pixel takes its owner from a neighbour reached earlier that has
the same owner, so a chain of neighbours with that owner leads back to the marker pixel;
marker components are connected, so each instance is one 8-connected region.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import shapely

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from affine import Affine

__all__ = [
    "METHODS",
    "InstanceRules",
    "WindowInstances",
    "class_mask",
    "clipped_distance",
    "distance_markers",
    "expand_markers",
    "first_pixels",
    "instance_polygons",
    "instance_raster",
    "label_markers",
    "window_instances",
]

#: Instance separation methods (``none`` keeps connected components).
METHODS = ("boundary", "distance", "none")

_NONE = np.iinfo(np.int32).max


@dataclass(frozen=True)
class InstanceRules:
    """An instance separation method and its reaches, in pixels.

    Attributes
    ----------
    method
        ``boundary`` or ``distance``.
    reach
        Largest geodesic distance (steps) from a marker pixel to a pixel it takes; for
        ``distance`` also the radius the distance transform is clipped at.
    separation
        ``distance``: a marker pixel has the largest clipped distance within this radius.
    threshold
        ``distance``: smallest clipped distance of a marker pixel.
    marker_classes
        Class ids whose pixels are markers (``boundary``: the interior classes) or whose
        objects are separated (``distance``); empty: every non-zero id but the boundary.
    boundary_class
        ``boundary``: the class id of boundary pixels (foreground, never markers).
    min_marker
        Marker components with fewer pixels are dropped (1: keep all).

    Examples
    --------
    >>> InstanceRules("distance", reach=6, separation=2, threshold=1.5).halo
    14
    >>> InstanceRules("distance", reach=6, separation=2, threshold=1.5, min_marker=5).halo
    18
    """

    method: Literal["boundary", "distance"]
    reach: int = 8
    separation: float = 2.0
    threshold: float = 2.0
    marker_classes: tuple[int, ...] = ()
    boundary_class: int | None = None
    min_marker: int = 1

    def __post_init__(self) -> None:
        if self.method not in ("boundary", "distance"):
            raise ConfigError(
                f"instance method {self.method!r} is not one of 'boundary', 'distance'"
            )
        if self.reach < 1:
            raise ConfigError(f"instance reach must be at least 1 pixel, got {self.reach}")
        if self.separation < 0 or self.threshold < 0:
            raise ConfigError(
                f"min separation and marker threshold must be >= 0, got {self.separation} "
                f"and {self.threshold}"
            )
        if self.min_marker < 1:
            raise ConfigError(
                f"minimum marker size must be at least 1 pixel, got {self.min_marker}"
            )
        if self.method == "boundary" and self.boundary_class is None:
            raise ConfigError(
                "instance method 'boundary' needs a boundary class; the input has no class "
                "named 'boundary' (train with data.boundary, or use --instances distance)"
            )

    @property
    def halo(self) -> int:
        """Pixels of context a chunk needs on each side to decide its own pixels exactly."""
        size = self.min_marker - 1
        if self.method == "boundary":
            return self.reach + size
        return 2 * self.reach + math.floor(self.separation) + size

    def classes_in(self, labels: np.ndarray) -> tuple[int, ...]:
        """Return the marker classes, or (when none are set) the non-zero ids in ``labels``."""
        if self.marker_classes:
            return self.marker_classes
        present = np.unique(labels)
        return tuple(int(c) for c in present if c not in (0, self.boundary_class))

    def foreground(self, labels: np.ndarray) -> np.ndarray:
        """Pixels that belong to some instance if a marker is within reach."""
        classes = list(self.classes_in(labels))
        if self.boundary_class is not None and self.method == "boundary":
            classes.append(self.boundary_class)
        return class_mask(labels, classes)


def class_mask(labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Pixels whose class is one of ``classes`` (``numpy.isin``, by table look-up for uint8).

    ``numpy.isin`` sorts; a 256-entry table indexed by the labels is one pass, about ten
    times faster on the uint8 label rasters the stores hold.

    Examples
    --------
    >>> class_mask(np.array([[0, 1, 2, 3]], np.uint8), [1, 3])
    array([[False,  True, False,  True]])
    """
    if labels.dtype == np.uint8:
        table = np.zeros(256, bool)
        wanted = [int(c) for c in classes if 0 <= int(c) < 256]
        table[wanted] = True
        picked: np.ndarray = table[labels]
        return picked
    return np.isin(labels, np.asarray(list(classes), dtype=np.int64))


def first_pixels(components: np.ndarray, count: int, band_pixels: int = 1 << 22) -> np.ndarray:
    """Flat index (row-major) of each component's first pixel in raster order.

    Parameters
    ----------
    components
        ``(h, w)`` non-negative int ids (0: none).
    count
        Largest id.
    band_pixels
        Pixels scanned at once (whole rows); bounds the index arrays on large windows.

    Returns
    -------
    numpy.ndarray
        ``(count + 1,)`` int64; -1 for ids (and 0) that hold no pixel. One linear pass:
        ``numpy.unique(..., return_index=True)`` would sort every pixel.

    Examples
    --------
    >>> first_pixels(np.array([[0, 2, 2], [1, 1, 0]]), 3)
    array([-1,  3,  1, -1])
    """
    height, width = components.shape
    first = np.full(count + 1, -1, np.int64)
    band = max(1, band_pixels // max(width, 1))
    for top in range(0, height, band):
        flat = components[top : top + band].ravel()
        where = np.flatnonzero(flat)
        if not len(where):
            continue
        found = np.full(count + 1, -1, np.int64)
        # on repeated indices the last assignment wins: walk backwards so the first pixel does
        found[flat[where[::-1]]] = where[::-1] + top * width
        new = (first < 0) & (found >= 0)
        first[new] = found[new]
    return first


def clipped_distance(foreground: np.ndarray, clip: float) -> np.ndarray:
    """Euclidean distance from each foreground pixel to the nearest background pixel, clipped.

    Pixels outside the array are not background; background pixels are 0. Clipping at
    ``clip`` makes the value depend only on the pixels within ``clip``.

    Examples
    --------
    >>> clipped_distance(np.array([[0, 1, 1, 1, 1]], bool), 2.0)
    array([[0., 1., 2., 2., 2.]])
    """
    from scipy import ndimage

    if not foreground.any():
        return np.zeros(foreground.shape, np.float64)
    if foreground.all():
        return np.full(foreground.shape, float(clip))
    distance = np.asarray(ndimage.distance_transform_edt(foreground), dtype=np.float64)
    return np.minimum(distance, float(clip))


def distance_markers(
    foreground: np.ndarray, clip: float, separation: float, threshold: float
) -> np.ndarray:
    """Marker pixels of a plain foreground mask: maxima of the clipped distance.

    A foreground pixel is a marker pixel when its clipped distance is at least ``threshold``
    and no pixel within ``separation`` (Euclidean, centre to centre) has a larger one.
    """
    from scipy import ndimage

    from pipeline.sample.boundary import disk

    distance = clipped_distance(foreground, clip)
    if separation >= 1:
        peak = ndimage.maximum_filter(distance, footprint=disk(separation), mode="constant")
    else:
        peak = distance
    found: np.ndarray = foreground & (distance >= threshold) & (distance >= peak) & (distance > 0)
    return found


def expand_markers(foreground: np.ndarray, markers: np.ndarray, reach: int) -> np.ndarray:
    """Grow marker pixels through the foreground for ``reach`` steps (8, 4, 8, ... neighbours).

    Parameters
    ----------
    foreground
        ``(h, w)`` bool: where markers may grow and which pixels get an owner.
    markers
        ``(h, w)`` bool marker pixels (inside the foreground).
    reach
        Number of steps.

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` int32 flat index (row-major, in this array) of the owner marker pixel,
        -1 where there is none. Ties go to the lowest index, which is the global raster
        order whatever the window: the rule is the same in any window that holds the reach.

    Examples
    --------
    >>> fg = np.ones((1, 5), bool)
    >>> expand_markers(fg, np.array([[1, 0, 0, 0, 1]], bool), reach=1)
    array([[ 0,  0, -1,  4,  4]], dtype=int32)
    >>> expand_markers(fg, np.array([[1, 0, 0, 0, 1]], bool), reach=2)
    array([[0, 0, 0, 4, 4]], dtype=int32)
    """
    height, width = foreground.shape
    if (height + 2) * (width + 2) >= _NONE:
        raise ConfigError(
            f"a {height}x{width} window is too large for instance separation; use smaller chunks"
        )
    # owners in a frame one pixel wider than the window (_NONE: no owner), so neighbours of
    # edge pixels are plain offsets; only pixels still open are visited in each step
    stride = width + 2
    known = np.full((height + 2, width + 2), _NONE, np.int32)
    seeds = markers & foreground
    inner = known[1:-1, 1:-1]
    np.copyto(inner, np.arange(height * width, dtype=np.int32).reshape(height, width),
              where=seeds)  # fmt: skip
    flat = known.ravel()
    rows, cols = np.nonzero(foreground & ~seeds)
    open_ = (rows.astype(np.int64) + 1) * stride + cols + 1
    del rows, cols
    edges = [-stride, stride, -1, 1]
    corners = [-stride - 1, -stride + 1, stride - 1, stride + 1]
    idle = 0
    for step in range(reach):
        if not len(open_):
            break
        shifts = edges + corners if step % 2 == 0 else edges
        best = flat[open_ + shifts[0]]
        for shift in shifts[1:]:
            np.minimum(best, flat[open_ + shift], out=best)
        reached = best < _NONE
        if not reached.any():
            idle += 1
            if idle == 2:  # a 4-step and an 8-step found nothing: nothing more can grow
                break
            continue
        idle = 0
        flat[open_[reached]] = best[reached]
        open_ = open_[~reached]
    owner = np.ascontiguousarray(inner)
    owner[owner == _NONE] = -1
    return owner


def label_markers(
    labels: np.ndarray, markers: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label marker components: 8-connected marker pixels of one class.

    Returns
    -------
    components
        ``(h, w)`` int32, 0 off markers, 1..n in raster order of each component's first pixel.
    classes
        ``(n + 1,)`` class id of each component (index 0 unused).
    first
        ``(n + 1,)`` flat index of each component's first pixel (index 0: -1).
    """
    from scipy import ndimage

    structure = np.ones((3, 3), bool)
    values = labels[markers]
    if values.dtype.kind in "ui" and values.size and int(values.max()) < 65536:
        present = np.flatnonzero(np.bincount(values))  # no sort of every marker pixel
    else:
        present = np.unique(values)
    del values
    if len(present) == 1:
        components, count = ndimage.label(markers, structure=structure, output=np.int32)
        count = int(count)
    else:
        components = np.zeros(labels.shape, np.int32)
        count = 0
        for cid in present:
            found, n = ndimage.label(markers & (labels == cid), structure=structure,
                                     output=np.int32)  # fmt: skip
            if n:
                np.add(found, count, out=components, where=found > 0)
                count += n
    if count == 0:
        return components, np.zeros(1, np.int64), np.full(1, -1, np.int64)
    first = first_pixels(components, count)
    if (np.diff(first[1:]) < 0).any():
        # renumber in raster order of first pixels, so the labels do not depend on class order
        order = np.argsort(first[1:], kind="stable") + 1
        rank = np.zeros(count + 1, np.int32)
        rank[order] = np.arange(1, count + 1, dtype=np.int32)
        components = rank[components]
        first[1:] = first[order]
    classes = np.zeros(count + 1, np.int64)
    classes[1:] = labels.ravel()[first[1:]]
    return components, classes, first


@dataclass(frozen=True)
class WindowInstances:
    """The rules applied to one window.

    Attributes
    ----------
    owner
        ``(h, w)`` int32 flat index of each pixel's marker pixel (-1: none).
    components
        ``(h, w)`` int32 marker components (0 off markers).
    classes
        Class id per component (index 0 unused).
    first
        Flat index of each component's first pixel in raster order (index 0: -1).
    instances
        ``(h, w)`` int32 component of each pixel's marker (0: no instance).
    """

    owner: np.ndarray
    components: np.ndarray
    classes: np.ndarray
    first: np.ndarray
    instances: np.ndarray


def _grown(core: tuple[slice, slice], by: int, shape: tuple[int, ...]) -> tuple[slice, slice]:
    """Return the ``core`` box grown by ``by`` pixels on each side, within ``shape``."""
    rows, cols = core
    return (slice(max(rows.start - by, 0), min(rows.stop + by, shape[0])),
            slice(max(cols.start - by, 0), min(cols.stop + by, shape[1])))  # fmt: skip


def _only(mask: np.ndarray, box: tuple[slice, slice]) -> np.ndarray:
    """Return ``mask`` with everything outside ``box`` cleared."""
    out = np.zeros(mask.shape, bool)
    out[box] = mask[box]
    return out


def window_instances(
    labels: np.ndarray, rules: InstanceRules, core: tuple[slice, slice] | None = None
) -> WindowInstances:
    """Apply the rules to one window: owners, marker components and their classes.

    Parameters
    ----------
    labels
        ``(h, w)`` class ids of the window (a chunk plus ``rules.halo``, or the whole raster).
    rules
        The method and its reaches.
    core
        The chunk inside the window (``None``: the window is the whole raster). Markers are
        kept within ``reach`` of it, where they are decided exactly (their clipped distance,
        maxima and size need pixels up to the halo) and the only place core pixels can
        reach; their sizes are counted ``min_marker - 1`` further out.

    Returns
    -------
    WindowInstances
        Owners, marker components (with their classes and first pixels) and instances.
    """
    foreground = rules.foreground(labels)
    classes_in = rules.classes_in(labels)
    if rules.method == "boundary":
        markers = class_mask(labels, classes_in)
    else:
        markers = np.zeros(labels.shape, bool)
        for cid in classes_in:
            markers |= distance_markers(labels == cid, rules.reach, rules.separation,
                                        rules.threshold)  # fmt: skip
    if rules.min_marker > 1:
        if core is not None:
            markers = _only(markers, _grown(core, rules.reach + rules.min_marker - 1, labels.shape))
        components, _, _ = label_markers(labels, markers)
        sizes = np.bincount(components.ravel())
        markers = sizes[components] >= rules.min_marker
        markers[components == 0] = False
    if core is not None:
        markers = _only(markers, _grown(core, rules.reach, labels.shape))
    if rules.method == "distance" and len(classes_in) > 1:
        owner = np.full(labels.shape, -1, np.int32)
        for cid in classes_in:
            mask = labels == cid
            part = expand_markers(mask, markers & mask, rules.reach)
            owner[mask] = part[mask]
    else:
        owner = expand_markers(foreground, markers, rules.reach)
    components, classes, first = label_markers(labels, markers)
    instances = components.ravel()[np.maximum(owner, 0)]
    instances[owner < 0] = 0
    return WindowInstances(owner, components, classes, first, instances)


def instance_raster(labels: np.ndarray, rules: InstanceRules) -> tuple[np.ndarray, np.ndarray]:
    """Compute every pixel's instance in one window: the whole-raster reference.

    Returns
    -------
    instances
        ``(h, w)`` int32 instance ids (0: none), numbered in raster order of their markers.
    classes
        Class id per instance id.
    """
    found = window_instances(labels, rules)
    return found.instances, found.classes


def instance_polygons(instances: np.ndarray, transform: Affine | None = None) -> np.ndarray:
    """Trace an instance raster: one valid (Multi)Polygon per instance, in map coordinates.

    Parameters
    ----------
    instances
        ``(h, w)`` int32 instance ids (0: none), e.g. from :func:`instance_raster`.
    transform
        Pixel -> map affine (identity: pixel coordinates).

    Returns
    -------
    numpy.ndarray
        Object array of polygons, in order of first appearance of their ids.
    """
    from rasterio.features import shapes
    from rasterio.transform import Affine as RasterAffine

    from pipeline.vectorize.polygons import make_valid_polygonal

    traced = [
        shapely.geometry.shape(geometry)
        for geometry, _ in shapes(
            instances.astype(np.int32),
            mask=instances > 0,
            transform=transform or RasterAffine.identity(),
            connectivity=8,
        )
    ]
    out = np.empty(len(traced), dtype=object)
    out[:] = traced
    return make_valid_polygonal(out)
