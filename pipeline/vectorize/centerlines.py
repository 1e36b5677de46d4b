"""Road centre-lines: skeleton per chunk, one graph across chunks, spurs pruned (pure).

Each chunk skeletonises its road mask over the chunk plus a ``halo`` of context. Thinning is
local: a pixel's fate depends only on pixels within the road's half-width, so with a halo
wider than the roads the skeleton inside the chunk equals the whole-raster skeleton. The
chunk then emits one 2-point segment per pair of 8-adjacent skeleton pixels whose *first*
pixel (in raster order) lies in its core, the second possibly in the next chunk. A diagonal
pair is skipped when an orthogonal path joins the two pixels (no small triangles). Every
pair is emitted by exactly one chunk and segments end on identical pixel-centre
coordinates, so at the driver ``line_merge`` joins them across seams without gaps; spurs
(short dead ends off a junction) are pruned on the joined graph, so a seam never creates or
hides one.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import shapely

__all__ = ["join_segments", "prune_spurs", "skeleton_segments"]


def skeleton_segments(
    mask: np.ndarray, *, row_off: int, col_off: int, core: tuple[int, int, int, int]
) -> np.ndarray:
    """Skeleton segments of one chunk, merged into lines, in global pixel coordinates.

    Parameters
    ----------
    mask
        Boolean road mask of the window (chunk core plus halo, clipped to the raster).
    row_off, col_off
        Global position of the window's top-left pixel.
    core
        ``(row0, row1, col0, col1)``: the chunk's core, as global half-open ranges.

    Returns
    -------
    numpy.ndarray
        Object array of LineStrings through pixel centres (``col + 0.5, row + 0.5``).
    """
    from skimage.morphology import skeletonize

    skel = skeletonize(mask.astype(bool))  # type: ignore[no-untyped-call]
    h, w = skel.shape
    rows = np.arange(h)[:, None] + row_off
    cols = np.arange(w)[None, :] + col_off
    r0, r1, c0, c1 = core
    owned = (rows >= r0) & (rows < r1) & (cols >= c0) & (cols < c1)
    pad = np.zeros((h + 2, w + 2), bool)
    pad[1:-1, 1:-1] = skel

    def at(dr: int, dc: int) -> np.ndarray:
        return pad[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]

    here = skel & owned
    pairs = [
        (here & at(0, 1), 0, 1),
        (here & at(1, 0), 1, 0),
        (here & at(1, 1) & ~at(0, 1) & ~at(1, 0), 1, 1),
        (here & at(1, -1) & ~at(0, -1) & ~at(1, 0), 1, -1),
    ]
    coords = []
    for sel, dr, dc in pairs:
        rr, cc = np.nonzero(sel)
        if len(rr) == 0:
            continue
        start = np.column_stack([cc + col_off + 0.5, rr + row_off + 0.5])
        end = start + np.array([dc, dr], float)
        coords.append(np.stack([start, end], axis=1))
    if not coords:
        return np.empty(0, object)
    segs = shapely.linestrings(np.concatenate(coords))
    merged = shapely.line_merge(shapely.MultiLineString(list(segs)))
    return np.asarray(shapely.get_parts(merged), dtype=object)


def _endpoint_degrees(lines: np.ndarray) -> Counter[tuple[float, float]]:
    degree: Counter[tuple[float, float]] = Counter()
    for line in lines:
        xy = shapely.get_coordinates(line)
        degree[(xy[0, 0], xy[0, 1])] += 1
        degree[(xy[-1, 0], xy[-1, 1])] += 1
    return degree


def join_segments(lines: np.ndarray | list[shapely.LineString]) -> np.ndarray:
    """Node lines at shared vertices and merge them through degree-2 points."""
    parts = [g for g in lines if g is not None and not g.is_empty]
    if not parts:
        return np.empty(0, object)
    # chunk lines may pass through a point that is a junction only globally: node first
    noded = shapely.node(shapely.MultiLineString(parts))
    merged = shapely.line_merge(noded)
    return np.asarray(shapely.get_parts(merged), dtype=object)


def prune_spurs(lines: np.ndarray, spur_length: float, *, rounds: int = 5) -> np.ndarray:
    """Remove dead-end branches shorter than ``spur_length`` (pixels), then re-join.

    A spur is a line with one free end (degree 1) whose other end is a junction (degree
    3 or more). Isolated lines shorter than ``spur_length`` (both ends free) are dropped too:
    they are blobs, not roads. Runs a few rounds, since pruning can expose new spurs.

    Examples
    --------
    >>> road = shapely.LineString([(0, 0), (100, 0)])
    >>> spur = shapely.LineString([(50, 0), (50, 3)])
    >>> left, right = shapely.LineString([(0, 0), (50, 0)]), shapely.LineString([(50, 0), (100, 0)])
    >>> [g.length for g in prune_spurs(np.array([left, right, spur], object), 5.0)]
    [100.0]
    """
    current = join_segments(lines)
    for _ in range(rounds):
        degree = _endpoint_degrees(current)
        keep = []
        removed = False
        for line in current:
            xy = shapely.get_coordinates(line)
            a = degree[(xy[0, 0], xy[0, 1])]
            b = degree[(xy[-1, 0], xy[-1, 1])]
            short = line.length < spur_length
            spur = short and ((a == 1 and b >= 3) or (b == 1 and a >= 3))
            isolated = short and a == 1 and b == 1
            if spur or isolated:
                removed = True
            else:
                keep.append(line)
        current = join_segments(keep)
        if not removed:
            break
    return current
