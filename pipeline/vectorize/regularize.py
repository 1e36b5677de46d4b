"""Square building outlines: dominant orientation, right angles, no tiny edges (pure).

A traced outline is a pixel staircase, so its own edges are all axis-parallel whatever the
building's orientation. We first simplify it (Douglas-Peucker at about one pixel), which turns
staircases into the wall directions, and take the dominant orientation as the angle of
``sum(len² · exp(4iθ)) / 4`` over the edges (a 4-fold circular mean: walls at θ and θ+90°
vote together). In a frame rotated by that angle, consecutive edges within ``snap_angle`` of
horizontal (vertical) form a run that becomes one horizontal (vertical) line through the
runs' length-weighted mean position; runs shorter than ``min_edge`` are removed; corners are
the intersections of consecutive lines, so near-right angles become right. Edges far from
both directions (real diagonal walls) are kept as they are, unless shorter than three times
``min_edge``: those are corners cut by the pixel grid.

The result is checked against the traced outline: it must be valid and overlap it with an
IoU of at least ``min_iou``, otherwise the plain simplified outline is returned. The IoU is
returned with every result so the export can report it per feature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from pipeline.vectorize.cleanup import polygonal_part, simplify_valid

__all__ = ["dominant_angle", "iou", "regularize_building"]


@dataclass
class _Run:
    """Consecutive edges of one kind: H(orizontal), V(ertical) or D(iagonal, kept)."""

    kind: str
    edges: list[tuple[np.ndarray, np.ndarray, float]]


def iou(a: BaseGeometry, b: BaseGeometry) -> float:
    """Intersection over union of two polygonal geometries (1.0 for two empties)."""
    union = shapely.area(shapely.union(a, b))
    if union == 0:
        return 1.0
    return float(shapely.area(shapely.intersection(a, b)) / union)


def dominant_angle(ring: np.ndarray) -> float:
    """Dominant wall direction (radians, in [-π/4, π/4)) of a closed ring's coordinates.

    Examples
    --------
    >>> square = np.array([[0, 0], [1, 1], [0, 2], [-1, 1], [0, 0]], float)
    >>> round(math.degrees(dominant_angle(square)), 6)
    -45.0
    """
    d = np.diff(ring, axis=0)
    length2 = (d**2).sum(axis=1)
    theta = np.arctan2(d[:, 1], d[:, 0])
    total = (length2 * np.exp(4j * theta)).sum()
    angle = float(np.angle(total) / 4) if abs(total) > 0 else 0.0
    return (angle + math.pi / 4) % (math.pi / 2) - math.pi / 4


def _rotate(xy: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    rotated: np.ndarray = xy @ np.array([[c, s], [-s, c]])
    return rotated


def _intersect(p: np.ndarray, u: np.ndarray, q: np.ndarray, v: np.ndarray) -> np.ndarray | None:
    cross = u[0] * v[1] - u[1] * v[0]
    if abs(cross) < 1e-9:
        return None
    t = ((q[0] - p[0]) * v[1] - (q[1] - p[1]) * v[0]) / cross
    hit: np.ndarray = p + t * u
    return hit


def _square_ring(xy: np.ndarray, snap: float, min_edge: float) -> np.ndarray | None:
    """Square one closed ring already rotated into the dominant frame."""
    pts = xy[:-1]
    n = len(pts)
    if n < 3:
        return None
    edges = [(pts[i], pts[(i + 1) % n]) for i in range(n)]
    runs: list[_Run] = []
    for a, b in edges:
        d = b - a
        length = float(np.hypot(*d))
        if length == 0:
            continue
        ang = abs(math.atan2(d[1], d[0])) % math.pi
        kind = (
            "H"
            if min(ang, math.pi - ang) <= snap
            else "V"
            if abs(ang - math.pi / 2) <= snap
            else "D"
        )
        runs.append(_Run(kind, [(a, b, length)]))
    runs = _merge_runs(runs)
    # drop runs whose squared edge comes out shorter than min_edge, shortest first
    for _ in range(len(runs)):
        if len(runs) < 3:
            return None
        corners = _corners(runs)
        if len(runs) <= 4:
            return corners
        lengths = np.hypot(*np.diff(corners, axis=0).T)
        # a short diagonal between two walls is a cut corner: it must be 3x longer to stay
        limits = np.array([3 * min_edge if r.kind == "D" else min_edge for r in runs])
        shortest = int(np.argmin(lengths / limits))
        if lengths[shortest] >= limits[shortest]:
            return corners
        del runs[shortest]
        runs = _merge_runs(runs)
    return None


def _corners(runs: list[_Run]) -> np.ndarray:
    """Corners of a squared ring: intersections of consecutive run lines (closed)."""
    lines = []
    for r in runs:
        es = r.edges
        w = np.array([e[2] for e in es])
        mids = np.array([(e[0] + e[1]) / 2 for e in es])
        if r.kind == "H":
            lines.append((np.array([0.0, np.average(mids[:, 1], weights=w)]), np.array([1.0, 0.0])))
        elif r.kind == "V":
            lines.append((np.array([np.average(mids[:, 0], weights=w), 0.0]), np.array([0.0, 1.0])))
        else:
            a, b = es[0][0], es[-1][1]
            d = b - a
            lines.append((a, d / np.hypot(*d)))
    out = []
    for i in range(len(lines)):
        p, u = lines[i - 1]
        q, v = lines[i]
        hit = _intersect(p, u, q, v)
        if hit is None:  # parallel neighbours (two diagonals): keep the original corner
            hit = runs[i].edges[0][0]
        out.append(hit)
    out.append(out[0])
    return np.asarray(out)


def _merge_runs(runs: list[_Run]) -> list[_Run]:
    """Merge consecutive H/H and V/V runs, cyclically."""
    if not runs:
        return runs
    merged: list[_Run] = []
    for r in runs:
        if merged and r.kind != "D" and merged[-1].kind == r.kind:
            merged[-1] = _Run(r.kind, merged[-1].edges + r.edges)
        else:
            merged.append(r)
    if len(merged) > 1 and merged[0].kind != "D" and merged[0].kind == merged[-1].kind:
        last = merged.pop()
        merged[0] = _Run(last.kind, last.edges + merged[0].edges)
    return merged


def _regularize_polygon(
    poly: shapely.Polygon, tolerance: float, min_edge: float, snap: float
) -> BaseGeometry | None:
    simple = simplify_valid(poly, tolerance)
    if simple.is_empty or simple.geom_type != "Polygon":
        return None
    ext = np.asarray(simple.exterior.coords)
    angle = dominant_angle(ext)
    centre = np.asarray(simple.centroid.coords[0])
    rings: list[np.ndarray] = []
    for ring in [simple.exterior, *simple.interiors]:
        local = _rotate(np.asarray(ring.coords) - centre, -angle)
        squared = _square_ring(local, snap, min_edge)
        if squared is None:
            if not rings:
                return None
            continue  # a hole squared away to nothing is dropped
        rings.append(_rotate(squared, angle) + centre)
    shell = shapely.Polygon(rings[0])
    if not shell.is_valid:
        shell = polygonal_part(shapely.make_valid(shell))
        if shell.geom_type == "MultiPolygon":
            shell = max(shell.geoms, key=lambda g: g.area)
    holes = [shapely.Polygon(r) for r in rings[1:]]
    holes = [h if h.is_valid else polygonal_part(shapely.make_valid(h)) for h in holes]
    out = shell.difference(shapely.union_all(holes)) if holes else shell
    out = polygonal_part(out)
    return None if out.is_empty or not out.is_valid else out


def regularize_building(
    geom: BaseGeometry,
    pixel_size: float,
    *,
    tolerance: float | None = None,
    min_edge: float | None = None,
    snap_angle: float = 20.0,
    min_iou: float = 0.5,
) -> tuple[BaseGeometry, float]:
    """Square a traced building outline and report its IoU with the traced outline.

    Parameters
    ----------
    geom
        Traced Polygon or MultiPolygon in the working frame.
    pixel_size
        Size of one pixel in the working frame's unit; the defaults scale with it.
    tolerance
        Simplification before squaring (default: one pixel).
    min_edge
        Runs shorter than this are removed (default: two pixels).
    snap_angle
        Edges within this many degrees of the dominant direction or its perpendicular are
        snapped to it.
    min_iou
        Below this IoU with the traced outline, the simplified outline is returned instead.

    Returns
    -------
    geometry, iou
        The regularised (valid) geometry, and its IoU with ``geom``.
    """
    tol = pixel_size if tolerance is None else tolerance
    edge = 2 * pixel_size if min_edge is None else min_edge
    snap = math.radians(snap_angle)
    parts = []
    for part in shapely.get_parts(geom):
        squared = _regularize_polygon(part, tol, edge, snap)
        if squared is None or iou(squared, part) < min_iou:
            squared = simplify_valid(part, tol)
        parts.append(squared)
    out = parts[0] if len(parts) == 1 else polygonal_part(shapely.union_all(parts))
    if out.is_empty or not out.is_valid:
        out = geom
    return out, iou(out, geom)
