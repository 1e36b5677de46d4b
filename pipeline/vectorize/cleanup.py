"""Clean polygons in a metric frame: fill small holes, simplify without breaking validity.

Every function takes and returns geometries in the working frame of
:class:`~pipeline.vectorize.georef.Frame` (metres, micrometres or pixels), with thresholds
already in that frame's units, and never returns an invalid geometry.
"""

from __future__ import annotations

import shapely
from shapely.geometry.base import BaseGeometry

__all__ = ["fill_holes", "polygonal_part", "simplify_valid"]


def polygonal_part(geom: BaseGeometry) -> BaseGeometry:
    """Return the Polygon/MultiPolygon part of a geometry (empty Polygon if there is none)."""
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon")]
    if not parts:
        return shapely.Polygon()
    merged = shapely.union_all(parts)
    return merged if merged.geom_type in ("Polygon", "MultiPolygon") else shapely.Polygon()


def fill_holes(geom: BaseGeometry, max_area: float, *, scale: float = 1.0) -> BaseGeometry:
    """Fill the holes whose area (times ``scale``) is below ``max_area``.

    Parameters
    ----------
    geom
        A Polygon or MultiPolygon.
    max_area
        Holes strictly smaller than this are filled; 0 keeps every hole.
    scale
        Factor from the frame's area unit to the unit of ``max_area`` (e.g. ft² -> m²).

    Examples
    --------
    >>> ring = shapely.box(0, 0, 10, 10).difference(shapely.box(4, 4, 5, 5))
    >>> fill_holes(ring, 2.0).area
    100.0
    """
    if max_area <= 0 or geom.is_empty:
        return geom
    polys = []
    changed = False
    for poly in shapely.get_parts(geom):
        holes = [r for r in poly.interiors if shapely.Polygon(r).area * scale >= max_area]
        changed |= len(holes) != len(poly.interiors)
        polys.append(shapely.Polygon(poly.exterior, holes))
    if not changed:
        return geom
    out = polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)
    if out.is_valid:
        return out
    # filled parts of a MultiPolygon may now overlap other parts: dissolve them
    return polygonal_part(shapely.union_all(polys))


def simplify_valid(geom: BaseGeometry, tolerance: float) -> BaseGeometry:
    """Douglas-Peucker simplification that keeps the geometry valid and non-empty.

    ``preserve_topology=True`` keeps rings from crossing themselves or each other; if GEOS
    still returns an invalid or empty result (rare, thin slivers), it is repaired, and if
    the repair loses the polygon the original is returned.
    """
    if tolerance <= 0 or geom.is_empty:
        return geom
    out = shapely.simplify(geom, tolerance, preserve_topology=True)
    if out.is_empty:
        return geom
    if not out.is_valid:
        out = polygonal_part(shapely.make_valid(out))
        if out.is_empty or not out.is_valid:
            return geom
    return out
