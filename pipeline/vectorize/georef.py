"""Coordinate frames of a label raster: pixels, map, a metric working frame, and outputs.

Tracing happens in global pixel coordinates (integer pixel corners, so seams compare exactly).
Clean-up (areas, hole filling, simplification, regularisation) happens in a *working frame*
whose unit is a real length: the map CRS itself when it is projected, a local Lambert
azimuthal equal-area CRS centred on the raster when the CRS is geographic (so m² are exact
whatever the latitude), micrometres for slides. Outputs are EPSG:4326 (GeoJSON), the source
CRS (GeoParquet, GeoPackage, FlatGeobuf) or level-0 pixels (QuPath).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import shapely

from pipeline.read.georef import Georef

if TYPE_CHECKING:
    from pyproj import CRS, Transformer
    from shapely.geometry.base import BaseGeometry

__all__ = ["Frame", "Target", "local_equal_area_crs"]

#: Output coordinate frames: lon/lat, the source CRS, or level-0 pixels.
Target = Literal["wgs84", "source", "pixel"]

WGS84_WKT = "EPSG:4326"


@functools.lru_cache(maxsize=32)
def _crs(text: str) -> CRS:
    from pyproj import CRS

    return CRS.from_user_input(text)


@functools.lru_cache(maxsize=32)
def _transformer(src: str, dst: str) -> Transformer:
    from pyproj import Transformer

    return Transformer.from_crs(_crs(src), _crs(dst), always_xy=True)


def local_equal_area_crs(crs_text: str, lon: float, lat: float) -> str:
    """Return the WKT of a Lambert azimuthal equal-area CRS centred on ``(lon, lat)``.

    It keeps the datum of ``crs_text``; areas in it are exact, and lengths and angles are
    near-true within a few hundred kilometres of the centre, which covers one scene.
    """
    from pyproj.crs import ProjectedCRS
    from pyproj.crs.coordinate_operation import LambertAzimuthalEqualAreaConversion

    geodetic = _crs(crs_text).geodetic_crs
    conversion = LambertAzimuthalEqualAreaConversion(
        latitude_natural_origin=lat, longitude_natural_origin=lon
    )
    return str(ProjectedCRS(conversion=conversion, geodetic_crs=geodetic).to_wkt())


def _affine(geom: BaseGeometry, gdal: tuple[float, ...]) -> BaseGeometry:
    c, a, b, f, d, e = gdal
    matrix = np.array([[a, d], [b, e]])
    offset = np.array([c, f])
    return shapely.transform(geom, lambda xy: xy @ matrix + offset)


def _reproject(geom: BaseGeometry, src: str, dst: str) -> BaseGeometry:
    if src == dst:
        return geom
    tr = _transformer(src, dst)

    def apply(xy: np.ndarray) -> np.ndarray:
        x, y = tr.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geom, apply)


@dataclass(frozen=True)
class Frame:
    """The working frames of a label raster, derived from its :class:`~pipeline.read.Georef`.

    Attributes
    ----------
    georef
        The raster's georeference (the one type every stage shares).
    work_crs
        WKT of the metric working CRS; equals the map CRS when that is projected.
    metres_per_unit
        Length of one working unit in metres (slides: micrometres; pixels: 1).
    """

    georef: Georef
    work_crs: str | None = None
    metres_per_unit: float = 1.0

    @classmethod
    def from_georef(cls, georef: Georef, shape: tuple[int, int]) -> Frame:
        """Build the frame of a ``shape`` = ``(height, width)`` raster on ``georef``.

        A raster with an affine but no CRS is traced in its own pixel coordinates: without a
        CRS the affine's units are unknown, so pixels are the honest frame.
        """
        if georef.kind == "pixel":
            return cls(Georef.pixel())
        if georef.kind != "geo":
            return cls(georef)
        src = _crs(str(georef.crs))
        wkt = str(georef.crs)
        if src.is_geographic:
            height, width = shape
            lon, lat = georef.transform @ (width / 2, height / 2)
            return cls(georef, local_equal_area_crs(wkt, lon, lat), 1.0)
        factor = float(src.axis_info[0].unit_conversion_factor or 1.0)
        return cls(georef, wkt, factor)

    @property
    def kind(self) -> Literal["geo", "slide", "pixel"]:
        """``"geo"`` (CRS + affine), ``"slide"`` (microns per pixel) or ``"pixel"``."""
        if self.georef.kind == "slide" and self.georef.mpp is None:
            return "pixel"
        return self.georef.kind

    @property
    def transform(self) -> tuple[float, float, float, float, float, float]:
        """Pixel -> map (level-0 pixels for slides) affine in GDAL order."""
        c, a, b, f, d, e = self.georef.to_gdal()
        return (c, a, b, f, d, e)

    @property
    def crs(self) -> str | None:
        """WKT of the map CRS (``kind == "geo"`` only)."""
        return self.georef.crs

    @property
    def mpp(self) -> tuple[float, float] | None:
        """Micrometres per level-0 pixel ``(x, y)`` for slides."""
        return self.georef.mpp

    @property
    def area_field(self) -> str:
        """Name of the area property: ``area_m2``, ``area_um2`` or ``area_px``."""
        return {"geo": "area_m2", "slide": "area_um2", "pixel": "area_px"}[self.kind]

    @property
    def length_field(self) -> str:
        """Name of the length property: ``length_m``, ``length_um`` or ``length_px``."""
        return {"geo": "length_m", "slide": "length_um", "pixel": "length_px"}[self.kind]

    def to_map(self, geom: BaseGeometry) -> BaseGeometry:
        """Pixel -> map coordinates (level-0 pixels for slides)."""
        return _affine(geom, self.transform)

    def to_work(self, geom_map: BaseGeometry) -> BaseGeometry:
        """Map -> metric working frame."""
        if self.kind == "slide":
            scale = np.asarray(self.mpp, dtype=float)
            return shapely.transform(geom_map, lambda xy: xy * scale)
        if self.kind == "geo" and self.work_crs != self.crs:
            return _reproject(geom_map, str(self.crs), str(self.work_crs))
        return geom_map

    def from_work(self, geom_work: BaseGeometry) -> BaseGeometry:
        """Metric working frame -> map."""
        if self.kind == "slide":
            scale = np.asarray(self.mpp, dtype=float)
            return shapely.transform(geom_work, lambda xy: xy / scale)
        if self.kind == "geo" and self.work_crs != self.crs:
            return _reproject(geom_work, str(self.work_crs), str(self.crs))
        return geom_work

    def area(self, geom_work: BaseGeometry) -> float:
        """Area in m² (geo), µm² (slides) or pixels of a working-frame geometry."""
        return float(shapely.area(geom_work)) * self.metres_per_unit**2

    def length(self, geom_work: BaseGeometry) -> float:
        """Length in m (geo), µm (slides) or pixels of a working-frame geometry."""
        return float(shapely.length(geom_work)) * self.metres_per_unit

    def to_target(
        self, geom_map: BaseGeometry, target: Target, crs: str | None = None
    ) -> BaseGeometry:
        """Map -> an output frame (or ``crs``); without a CRS every target is level-0 pixels."""
        if crs is not None and self.kind == "geo" and target == "source":
            return _reproject(geom_map, str(self.crs), crs)
        if self.kind != "geo" or target == "source":
            return geom_map
        if target == "wgs84":
            return _reproject(geom_map, str(self.crs), WGS84_WKT)
        # level-0 pixels of a georeferenced raster: undo the affine
        c, a, b, f, d, e = self.transform
        det = a * e - b * d
        inv = (
            (b * f - c * e) / det,
            e / det,
            -b / det,
            (c * d - a * f) / det,
            -d / det,
            a / det,
        )
        return _affine(geom_map, inv)

    def target_crs(self, target: Target, crs: str | None = None) -> str | None:
        """WKT/identifier of an output frame's CRS (``crs`` when given), ``None`` for pixels."""
        if self.kind != "geo" or target == "pixel":
            return None
        if crs is not None and target == "source":
            return crs
        return WGS84_WKT if target == "wgs84" else self.crs
