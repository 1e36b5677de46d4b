"""Trace one chunk of a label raster into exact pixel-edge polygons (pure computation).

``rasterio.features.shapes`` (GDAL's polygonizer) follows pixel edges exactly; we run it on
the chunk with a translation affine, so vertices are integer *global* pixel corners and
pieces from neighbouring chunks meet on identical coordinates. Pieces whose bounds reach an
internal chunk border are returned separately, to be joined across the seam
(:mod:`pipeline.vectorize.seams`); all others are final.

With probabilities, each connected component gets its own id first (``scipy.ndimage.label``
with the same connectivity as the trace), and the component image is traced instead of the
class image: the polygons are identical, and each one comes with its pixel count and
probability sum for the mean probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

__all__ = ["ChunkTrace", "make_valid_polygonal", "stable_ids", "trace_chunk"]

_SHAPES_DTYPES = (np.uint8, np.uint16, np.int16, np.int32)


@dataclass
class ChunkTrace:
    """Polygons of one chunk, in global pixel coordinates.

    Attributes
    ----------
    geometry
        Object array of Polygons (MultiPolygons for 8-connected diagonal touches).
    class_id
        Class of each polygon.
    pixels, prob_sum
        Pixel count and probability sum of each polygon (``prob_sum`` is ``None`` without
        probabilities; ``pixels`` is then derived from the area).
    border
        Whether the polygon reaches an internal chunk border (and may continue across it).
    """

    geometry: np.ndarray
    class_id: np.ndarray
    pixels: np.ndarray
    prob_sum: np.ndarray | None
    border: np.ndarray

    def subset(self, keep: np.ndarray) -> ChunkTrace:
        """Return the polygons selected by a boolean mask or index array."""
        return ChunkTrace(
            self.geometry[keep],
            self.class_id[keep],
            self.pixels[keep],
            None if self.prob_sum is None else self.prob_sum[keep],
            self.border[keep],
        )


def make_valid_polygonal(geoms: np.ndarray) -> np.ndarray:
    """Make polygons valid, keeping only their polygonal parts.

    GDAL traces an 8-connected diagonal touch as one ring that touches itself at the shared
    corner (OGC-invalid); its valid equivalent, with the same point set, is a MultiPolygon.
    """
    bad = ~shapely.is_valid(geoms)
    if bad.any():
        fixed = shapely.make_valid(geoms[bad], method="structure", keep_collapsed=False)
        geoms = geoms.copy()
        geoms[bad] = [_polygonal(g) for g in fixed]
    return geoms


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


class _Collector:
    """Gathers traced rings and builds all polygons in one vectorised shapely call.

    Building one ``shapely.Polygon`` per GeoJSON dict costs about as much as GDAL's own
    trace; one ``linearrings`` + ``polygons`` call over all rings costs a fraction.
    """

    def __init__(self) -> None:
        self.points: list[tuple[float, float]] = []
        self.lengths: list[int] = []
        self.owner: list[int] = []
        self.values: list[int] = []

    def add(self, rings: list[list[tuple[float, float]]], value: float) -> None:
        index = len(self.values)
        self.values.append(int(value))
        for ring in rings:
            self.points.extend(ring)
            self.lengths.append(len(ring))
            self.owner.append(index)

    def build(self) -> np.ndarray:
        if not self.values:
            return np.empty(0, object)
        coords = np.asarray(self.points, dtype=np.float64)
        ring_of_point = np.repeat(np.arange(len(self.lengths)), self.lengths)
        rings = shapely.linearrings(coords, indices=ring_of_point)
        polys = shapely.polygons(rings, indices=np.asarray(self.owner))
        return np.asarray(polys, dtype=object)


def _components(
    labels: np.ndarray, mask: np.ndarray, classes: np.ndarray, connectivity: int
) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    comp = np.zeros(labels.shape, np.int32)
    comp_class = [0]
    for cid in classes:
        lab, n = ndimage.label(mask & (labels == cid), structure=structure, output=np.int32)
        if n:
            sel = lab > 0
            comp[sel] = lab[sel] + (len(comp_class) - 1)
            comp_class.extend([int(cid)] * n)
    return comp, np.asarray(comp_class, np.int64)


def trace_chunk(
    labels: np.ndarray,
    *,
    row_off: int,
    col_off: int,
    shape: tuple[int, int],
    connectivity: int = 4,
    classes: tuple[int, ...] | None = None,
    probabilities: np.ndarray | None = None,
    channel_of: dict[int, int] | None = None,
    exclude: tuple[int, ...] = (),
) -> ChunkTrace:
    """Trace the polygons of one chunk in global pixel coordinates.

    Parameters
    ----------
    labels
        ``(h, w)`` class ids of the chunk (0 = background).
    row_off, col_off
        Position of the chunk's top-left pixel in the raster.
    shape
        ``(height, width)`` of the whole raster, to tell internal borders from the edge.
    connectivity
        4 or 8, as ``rasterio.features.shapes``.
    classes
        Class ids to trace; ``None`` traces every non-zero id.
    probabilities
        ``(channels, h, w)`` float probabilities, for the mean probability per polygon.
    channel_of
        Class id -> probability channel.
    exclude
        Class ids treated as background (e.g. roads traced as centre-lines instead).

    Returns
    -------
    ChunkTrace
        Polygons, classes, pixel counts, probability sums and border flags.
    """
    from rasterio.features import shapes
    from rasterio.transform import Affine

    h, w = labels.shape
    mask = labels != 0 if classes is None else np.isin(labels, classes)
    if exclude:
        mask &= ~np.isin(labels, exclude)
    transform = Affine.translation(col_off, row_off)
    traced = _Collector()
    pixels: np.ndarray
    prob_sum: np.ndarray | None = None
    if not mask.any():
        empty = np.empty(0, object)
        no_sum = None if probabilities is None else np.empty(0, np.float64)
        return ChunkTrace(empty, np.empty(0, np.int64), np.empty(0, np.int64), no_sum,
                          np.empty(0, bool))  # fmt: skip
    if probabilities is not None:
        present = np.unique(labels[mask])
        comp, comp_class = _components(labels, mask, present, connectivity)
        for geom, value in shapes(comp, mask=comp > 0, connectivity=connectivity,
                                  transform=transform):  # fmt: skip
            traced.add(geom["coordinates"], value)
        ids = np.asarray(traced.values, np.int64)
        class_id = comp_class[ids]
        counts = np.bincount(comp.ravel(), minlength=len(comp_class))
        sums = np.zeros(len(comp_class), np.float64)
        for cid in present:
            chan = (channel_of or {}).get(int(cid), 0)
            sel = comp_class == cid
            part = np.bincount(comp.ravel(), weights=probabilities[chan].ravel(),
                               minlength=len(comp_class))  # fmt: skip
            sums[sel] = part[sel]
        pixels = counts[ids]
        prob_sum = sums[ids]
    else:
        source = labels if labels.dtype in _SHAPES_DTYPES else labels.astype(np.int32)
        for geom, value in shapes(source, mask=mask, connectivity=connectivity,
                                  transform=transform):  # fmt: skip
            traced.add(geom["coordinates"], value)
        class_id = np.asarray(traced.values, np.int64)
        pixels = np.zeros(len(traced.values), np.int64)
    geometry = traced.build()
    geometry = make_valid_polygonal(geometry)
    if probabilities is None:
        pixels = np.rint(shapely.area(geometry)).astype(np.int64)
    height, width = shape
    xmin, ymin, xmax, ymax = shapely.bounds(geometry).T
    border = (
        ((xmin == col_off) & (col_off > 0))
        | ((ymin == row_off) & (row_off > 0))
        | ((xmax == col_off + w) & (col_off + w < width))
        | ((ymax == row_off + h) & (row_off + h < height))
    )
    return ChunkTrace(geometry, class_id, pixels, prob_sum, border)


def stable_ids(geoms: np.ndarray, width: int) -> np.ndarray:
    """Stable feature ids: ``row * width + col`` of each polygon's top-left pixel.

    The top-most row of a polygon, and the left-most vertex on it, is the top-left corner of
    a pixel that belongs to it; a pixel belongs to one polygon, so the id is unique, and it
    does not depend on the chunk size, the worker count or the order of completion.
    """
    if len(geoms) == 0:
        return np.empty(0, np.int64)
    xy, index = shapely.get_coordinates(geoms, return_index=True)
    # sort by (polygon, y, x): the first vertex of each polygon is its top-left corner
    order = np.lexsort((xy[:, 0], xy[:, 1], index))
    first = order[np.r_[0, np.flatnonzero(np.diff(index[order])) + 1]]
    out = np.zeros(len(geoms), np.int64)
    out[index[first]] = xy[first, 1].astype(np.int64) * width + xy[first, 0].astype(np.int64)
    return out
