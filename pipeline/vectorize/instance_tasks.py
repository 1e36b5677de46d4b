"""Instances chunk by chunk: what a worker does with one chunk, and the driver's join.

A chunk task reads its chunk plus :attr:`~pipeline.vectorize.instances.InstanceRules.halo`
pixels of context, so the owner of each of its pixels is exactly the whole raster's
(:mod:`pipeline.vectorize.instances`). It traces the core's pixels by the marker component of
their owner. What is left is the identity of marker components that continue outside the
window; the task sends three kinds of things:

- finished features: pieces that touch no internal chunk border and whose marker component
  lies inside the core without touching its internal border (then the piece is the whole
  instance, because instances are connected);
- unresolved pieces, each with one marker pixel of its instance (global row, col);
- marker pieces (traced marker components of the core) near an internal border, or holding
  such a marker pixel.

The driver joins marker pieces across seams with
:func:`~pipeline.vectorize.seams.merge_border_pieces` (the same rule as the polygon seams:
same class, shared edge), finds the marker piece under each unresolved piece's marker pixel,
and unions the pieces of each marker group: one polygon per instance, equal to the whole
raster's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import shapely

from pipeline.errors import GigasegError
from pipeline.export.features import FeatureBatch
from pipeline.vectorize.instances import class_mask, window_instances
from pipeline.vectorize.polygons import make_valid_polygonal
from pipeline.vectorize.seams import merge_border_pieces

__all__ = ["InstanceChunk", "InstancePieces", "instance_task", "join_instances"]


@dataclass
class InstancePieces:
    """Polygons of one chunk in global pixel coordinates, with per-piece attributes.

    Attributes
    ----------
    geometry
        Object array of (Multi)Polygons.
    class_id
        Class of each piece.
    pixels, prob_sum
        Pixel count and probability sum (``prob_sum`` ``None`` without probabilities).
    marker
        ``(n, 2)`` global (row, col) of one marker pixel of the piece's instance (instance
        pieces) or of the piece itself (marker pieces).
    """

    geometry: np.ndarray
    class_id: np.ndarray
    pixels: np.ndarray
    prob_sum: np.ndarray | None
    marker: np.ndarray

    def __len__(self) -> int:
        return len(self.geometry)

    @classmethod
    def empty(cls, probabilities: bool) -> InstancePieces:
        """No pieces."""
        return cls(np.empty(0, object), np.empty(0, np.int64), np.empty(0, np.int64),
                   np.empty(0) if probabilities else None, np.empty((0, 2), np.int64))  # fmt: skip

    def subset(self, keep: np.ndarray) -> InstancePieces:
        """Pieces selected by a boolean mask or an index array."""
        return InstancePieces(self.geometry[keep], self.class_id[keep], self.pixels[keep],
                              None if self.prob_sum is None else self.prob_sum[keep],
                              self.marker[keep])  # fmt: skip


@dataclass
class InstanceChunk:
    """What one instance chunk task returns to the driver."""

    index: int
    features: FeatureBatch
    dropped: int
    pieces: InstancePieces
    markers: InstancePieces
    seconds: dict[str, float]


def _trace(values: np.ndarray, row_off: int, col_off: int) -> tuple[np.ndarray, np.ndarray]:
    """Polygons of the 8-connected regions of equal non-zero value, and their values."""
    from rasterio.features import shapes
    from rasterio.transform import Affine

    if not values.any():
        return np.empty(0, object), np.empty(0, np.int64)
    points: list[tuple[float, float]] = []
    lengths: list[int] = []
    owner: list[int] = []
    found: list[int] = []
    for geom, value in shapes(values, mask=values > 0, connectivity=8,
                              transform=Affine.translation(col_off, row_off)):  # fmt: skip
        for ring in geom["coordinates"]:
            points.extend(ring)
            lengths.append(len(ring))
            owner.append(len(found))
        found.append(int(value))
    rings = shapely.linearrings(np.asarray(points, np.float64),
                                indices=np.repeat(np.arange(len(lengths)), lengths))  # fmt: skip
    polygons = np.asarray(shapely.polygons(rings, indices=np.asarray(owner)), dtype=object)
    return make_valid_polygonal(polygons), np.asarray(found, np.int64)


def _sums(
    values: np.ndarray, found: np.ndarray, geometry: np.ndarray, weights: np.ndarray | None,
    row_off: int, col_off: int,
) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
    """Pixel counts and weight sums per traced piece.

    The trace follows pixel edges on integer corners, so a piece's area is exactly its pixel
    count (no pass over the pixels). Weight sums come from one ``bincount`` per value; a value
    traced as several pieces (an instance the core's edge cuts in two) is summed per piece by
    rasterizing the piece within its own bounds.
    """
    pixels = np.rint(shapely.area(geometry)).astype(np.int64)
    if weights is None:
        return pixels, None
    top = int(values.max()) + 1
    sums = np.bincount(values.ravel(), weights=weights.ravel(), minlength=top)
    prob_sum = sums[found].astype(np.float64)
    repeated = np.flatnonzero(np.bincount(found, minlength=top)[found] > 1)
    if len(repeated):
        from rasterio.features import rasterize
        from rasterio.transform import Affine

        bounds = np.rint(shapely.bounds(geometry[repeated])).astype(np.int64)
        for i, (xmin, ymin, xmax, ymax) in zip(repeated, bounds, strict=True):
            r0, r1, c0, c1 = ymin - row_off, ymax - row_off, xmin - col_off, xmax - col_off
            mask = rasterize([(geometry[i], 1)], out_shape=(r1 - r0, c1 - c0), fill=0,
                             transform=Affine.translation(xmin, ymin), dtype="uint8")  # fmt: skip
            prob_sum[i] = float(weights[r0:r1, c0:c1][mask.astype(bool)].sum())
    return pixels, prob_sum


def _on_internal_edge(geometry: np.ndarray, box: tuple[int, int, int, int],
                      shape: tuple[int, int]) -> np.ndarray:  # fmt: skip
    """Whether each polygon reaches an edge of the core box that is not the raster edge."""
    r0, r1, c0, c1 = box
    height, width = shape
    xmin, ymin, xmax, ymax = shapely.bounds(geometry).T
    edge: np.ndarray = ((xmin == c0) & (c0 > 0)) | ((ymin == r0) & (r0 > 0))
    edge |= ((xmax == c1) & (c1 < width)) | ((ymax == r1) & (r1 < height))
    return edge


def _frame(shape: tuple[int, int], inner: tuple[int, int, int, int]) -> list[tuple[slice, slice]]:
    """Return the strips of a ``shape`` array outside the box ``(r0, r1, c0, c1)``."""
    r0, r1, c0, c1 = inner
    height, width = shape
    return [(slice(0, r0), slice(0, width)), (slice(r1, height), slice(0, width)),
            (slice(r0, r1), slice(0, c0)), (slice(r0, r1), slice(c1, width))]  # fmt: skip


def _marker_pixels(
    components: np.ndarray,
    first: np.ndarray,
    win_box: tuple[int, int, int, int],
    rows: tuple[int, int],
    cols: tuple[int, int],
    shape: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Return one marker pixel per component, and whether it is a whole marker.

    The pixel is the component's first in raster order (``first``: flat index in the window,
    turned into global row, column); a component is whole when it lies inside the core, off
    the core's internal edges.
    """
    win_row, win_col, top, left = win_box
    height, width = shape
    win_w = components.shape[1]
    count = len(first)
    first_of = np.maximum(first, 0)
    marker_rc = np.column_stack([first_of // win_w + win_row, first_of % win_w + win_col])
    r_lo = top + (1 if rows[0] > 0 else 0)
    r_hi = top + rows[1] - rows[0] - (1 if rows[1] < height else 0)
    c_lo = left + (1 if cols[0] > 0 else 0)
    c_hi = left + cols[1] - cols[0] - (1 if cols[1] < width else 0)
    whole = np.ones(count, bool)
    for strip in _frame(components.shape, (r_lo, r_hi, c_lo, c_hi)):
        whole[components[strip].ravel()] = False
    whole[0] = False
    return marker_rc, whole


def _near_markers(
    components: np.ndarray,
    classes: np.ndarray,
    wanted: np.ndarray,
    rows: tuple[int, int],
    cols: tuple[int, int],
    shape: tuple[int, int],
    halo: int,
) -> InstancePieces:
    """Marker pieces of the core within ``halo`` of an internal edge, or of ``wanted`` ids.

    Only those components are traced: a piece has a pixel within ``halo`` of an internal
    edge exactly when its bounds come that close, so the strips along the internal edges
    name them without tracing the others. Each strip's components (and the wanted rest) are
    traced within their joint bounds, a band along the edge, not the whole core: the trace
    costs by the pixels it scans.
    """
    height, width = shape
    core_h, core_w = components.shape
    inner = (halo if rows[0] > 0 else 0, core_h - halo if rows[1] < height else core_h,
             halo if cols[0] > 0 else 0, core_w - halo if cols[1] < width else core_w)  # fmt: skip
    group = np.full(len(classes), -1, np.int64)  # which band traces each component
    seen = np.zeros(len(classes), bool)
    for k, strip in enumerate([*_frame(components.shape, inner), None]):
        seen[:] = False
        if strip is None:
            seen[wanted] = True
        else:
            seen[components[strip].ravel()] = True
        group[seen & (group < 0)] = k
    group[0] = -1
    if (group < 0).all():
        return InstancePieces.empty(False)
    band_of = group.astype(np.int8)[components]  # 5 bands: int8, a quarter of the core
    band_rows, band_cols = np.nonzero(band_of >= 0)
    band = band_of[band_rows, band_cols]
    traced: list[tuple[np.ndarray, np.ndarray]] = []
    for k in np.unique(band):
        in_band = band == k
        r0, r1 = int(band_rows[in_band].min()), int(band_rows[in_band].max()) + 1
        c0, c1 = int(band_cols[in_band].min()), int(band_cols[in_band].max()) + 1
        crop = components[r0:r1, c0:c1]
        values = np.where(band_of[r0:r1, c0:c1] == k, crop, 0)
        traced.append(_trace(values, rows[0] + r0, cols[0] + c0))
    geometry = np.concatenate([g for g, _ in traced] or [np.empty(0, object)])
    found = np.concatenate([f for _, f in traced] or [np.empty(0, np.int64)])
    if not len(geometry):  # pragma: no cover - picked ids always hold core pixels
        return InstancePieces.empty(False)
    area = np.rint(shapely.area(geometry)).astype(np.int64)
    unknown = np.full((len(found), 2), -1, np.int64)
    return InstancePieces(geometry, classes[found], area, None, unknown)


def instance_task(
    job: object,
    index: int,
    rows: tuple[int, int],
    cols: tuple[int, int],
    data: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> InstanceChunk:
    """Separate and trace the instances of one chunk.

    Parameters
    ----------
    job
        The run (:class:`~pipeline.vectorize.tasks.Job` with ``instances`` set).
    index
        Chunk index.
    rows, cols
        The chunk's half-open row and column ranges.
    data
        Labels and probabilities of the chunk's window (chunk + halo), for in-memory
        sources; otherwise the task reads the source.
    """
    from pipeline.vectorize.tasks import Job, finish_polygons

    if not isinstance(job, Job) or job.instances is None:  # pragma: no cover - driver bug
        raise GigasegError("instance_task needs a Job with instance rules")
    t0, cpu0 = time.perf_counter(), time.process_time()
    rules, src = job.instances, job.source
    height, width = src.shape
    halo = rules.halo
    win_rows = (max(rows[0] - halo, 0), min(rows[1] + halo, height))
    win_cols = (max(cols[0] - halo, 0), min(cols[1] + halo, width))
    if data is None:
        labels, probs = src.read(win_rows, win_cols, probabilities=src.has_probabilities)
    else:
        labels, probs = data
    if job.classes is not None:  # unselected classes are background (boundary stays)
        keep = list(job.classes) + ([rules.boundary_class] if rules.boundary_class else [])
        labels = np.where(class_mask(labels, keep), labels, 0)
    t_read = time.perf_counter()
    top, left = rows[0] - win_rows[0], cols[0] - win_cols[0]
    core = (slice(top, top + rows[1] - rows[0]), slice(left, left + cols[1] - cols[0]))
    found_window = window_instances(labels, rules, core)
    components, classes, instances = (found_window.components, found_window.classes,
                                      found_window.instances)  # fmt: skip

    win_box = (win_rows[0], win_cols[0], top, left)
    marker_rc, whole = _marker_pixels(components, found_window.first, win_box, rows, cols,
                                      src.shape)  # fmt: skip
    core_instances = np.ascontiguousarray(instances[core])
    weights = None
    if probs is not None:
        channel = np.asarray([src.channel(int(c)) for c in classes], np.int64)
        core_probs = probs[(slice(None), *core)]
        picked = channel[core_instances]
        weights = np.take_along_axis(core_probs, picked[None], axis=0)[0].astype(np.float64)
    geometry, found = _trace(core_instances, rows[0], cols[0])
    pixels, prob_sum = _sums(core_instances, found, geometry, weights, rows[0], cols[0])
    box = (rows[0], rows[1], cols[0], cols[1])
    border = _on_internal_edge(geometry, box, src.shape)
    pieces = InstancePieces(geometry, classes[found], pixels,
                            None if probs is None else prob_sum, marker_rc[found])  # fmt: skip
    done = ~border & whole[found]
    t_trace = time.perf_counter()
    final = pieces.subset(done)
    batch, dropped = finish_polygons(job, final.geometry, final.class_id, final.pixels,
                                     final.prob_sum)  # fmt: skip
    left_over = pieces.subset(~done)

    # marker pieces of the core near an internal edge (other chunks may point into them)
    # or holding a marker pixel of a piece sent to the driver
    markers = _near_markers(components[core], classes, found[~done], rows, cols, src.shape, halo)
    t_end = time.perf_counter()
    # cpu: the task's CPU seconds (workers run one task at a time), which a loaded machine
    # moves much less than the wall clock
    seconds = {"read": t_read - t0, "trace": t_trace - t_read, "finish": t_end - t_trace,
               "cpu": time.process_time() - cpu0}  # fmt: skip
    return InstanceChunk(index, batch, dropped, left_over, markers, seconds)


def join_instances(
    pieces: list[tuple[int, InstancePieces]], markers: list[tuple[int, InstancePieces]]
) -> InstancePieces:
    """Join the unresolved pieces of all chunks into one polygon per instance.

    Parameters
    ----------
    pieces
        ``(chunk index, pieces)`` sent by the chunk tasks.
    markers
        ``(chunk index, marker pieces)`` sent by the chunk tasks.

    Returns
    -------
    InstancePieces
        One polygon per instance (``marker`` holds the marker pixel used to find it).
    """
    probabilities = any(p.prob_sum is not None for _, p in pieces)
    live = [(i, p) for i, p in pieces if len(p)]
    if not live:
        return InstancePieces.empty(probabilities)
    m_geometry = np.concatenate([m.geometry for _, m in markers if len(m)] or [np.empty(0, object)])
    m_class = np.concatenate([m.class_id for _, m in markers if len(m)] or [np.empty(0, np.int64)])
    m_chunk = np.concatenate([np.full(len(m), i) for i, m in markers if len(m)] or [np.empty(0)])
    merged = merge_border_pieces(m_geometry, m_class, m_chunk.astype(np.int64),
                                 np.zeros(len(m_geometry), np.int64), None,
                                 connectivity=8)  # fmt: skip
    group_of_marker = merged.group
    geometry = np.concatenate([p.geometry for _, p in live])
    class_id = np.concatenate([p.class_id for _, p in live])
    pixels = np.concatenate([p.pixels for _, p in live])
    prob_sum = (np.concatenate([p.prob_sum for _, p in live])
                if probabilities else None)  # fmt: skip
    marker = np.concatenate([p.marker for _, p in live])
    # the marker piece under each piece's marker pixel (pixel centres are strictly inside)
    points = shapely.points(marker[:, 1] + 0.5, marker[:, 0] + 0.5)
    tree = shapely.STRtree(m_geometry)
    hit_point, hit_marker = tree.query(points, predicate="intersects")
    found = np.full(len(points), -1, np.int64)
    found[hit_point] = hit_marker
    if (found < 0).any():  # pragma: no cover - would be a bug in the task's marker choice
        row, col = marker[np.flatnonzero(found < 0)[0]]
        raise GigasegError(f"no marker piece holds marker pixel ({row}, {col}); please report")
    group = group_of_marker[found]
    order = np.argsort(group, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(group[order]) != 0])
    ends = np.r_[starts[1:], len(order)]
    out_geometry = np.empty(len(starts), object)
    for k, (s, e) in enumerate(zip(starts, ends, strict=True)):
        members = order[s:e]
        out_geometry[k] = (geometry[members[0]] if len(members) == 1
                           else shapely.union_all(geometry[members]))  # fmt: skip
    first = order[starts]
    sums = np.add.reduceat(pixels[order], starts)
    prob = None if prob_sum is None else np.add.reduceat(prob_sum[order], starts)
    return InstancePieces(make_valid_polygonal(out_geometry), class_id[first],
                          sums.astype(np.int64), prob, marker[first])  # fmt: skip
