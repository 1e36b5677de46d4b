"""The one georeference type: where a source's pixels lie in the world.

Every reader, the store, vectorize, evaluate and preview describe a grid with a
:class:`Georef`, in one of three kinds:

- ``"geo"``: a CRS (WKT) and the pixel -> map affine, as GDAL and rasterio give them;
- ``"slide"``: a whole-slide image read at a pyramid level (or a resampled resolution): the
  affine maps working pixels to **level-0 pixels** with the level's true per-axis downsample
  (Aperio levels are 4.0002 x 4.0005, not 4), and ``mpp`` holds the microns per level-0 pixel;
- ``"pixel"``: neither, the affine is the identity (or a plain scale).

Stores keep it in their attributes through :meth:`Georef.to_attrs` / :meth:`Georef.from_attrs`
(``crs`` WKT + ``transform`` in GDAL order, or ``mpp`` + ``downsample`` + ``level0_shape``),
the contract older stores already follow.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from affine import Affine

from pipeline.errors import InputError

if TYPE_CHECKING:
    from pyproj import CRS

__all__ = ["Georef", "GeorefKind"]

#: The three kinds of grid.
GeorefKind = Literal["geo", "slide", "pixel"]


@functools.lru_cache(maxsize=64)
def _parse_crs(text: str) -> CRS:
    from pyproj import CRS

    return CRS.from_user_input(text)


def _as_affine(transform: Any) -> Affine:
    if transform is None:
        return Affine.identity()
    if isinstance(transform, Affine):
        return transform
    values = [float(v) for v in transform]
    if len(values) == 6:  # GDAL order (c, a, b, f, d, e), what stores and GDAL write
        return Affine.from_gdal(*values)
    if len(values) == 9:  # an Affine flattened (a, b, c, d, e, f, 0, 0, 1)
        return Affine(*values[:6])
    raise InputError(f"transform must hold 6 numbers (GDAL order), got {list(transform)!r}")


_IDENTITY = Affine.identity()


@dataclass(frozen=True)
class Georef:
    """Pixel -> world mapping of a grid (immutable, picklable, comparable).

    Attributes
    ----------
    transform
        Pixel -> map affine (``"geo"``), or pixel -> level-0 pixel (``"slide"``, ``"pixel"``).
    crs
        WKT of the map CRS (``"geo"`` only).
    mpp
        Microns per **level-0** pixel as ``(x, y)`` (slides that record it).
    level
        Pyramid level the grid was read from (slides).
    level0_shape
        ``(rows, cols)`` of level 0 (slides).

    Examples
    --------
    >>> g = Georef.for_slide(downsample=(4.0002, 4.0005), mpp=(0.499, 0.499), level=1,
    ...                      level0_shape=(2967, 2220))
    >>> g.kind, g.downsample, round(g.pixel_mpp[1], 4)
    ('slide', (4.0002, 4.0005), 1.9962)
    >>> Georef.from_attrs(g.to_attrs()) == g
    True
    """

    transform: Affine = _IDENTITY
    crs: str | None = None
    mpp: tuple[float, float] | None = None
    level: int | None = None
    level0_shape: tuple[int, int] | None = None

    # -- constructors ---------------------------------------------------------------------

    @classmethod
    def pixel(cls) -> Georef:
        """Return a grid with no georeference: pixel coordinates are the coordinates."""
        return cls()

    @classmethod
    def geo(cls, crs: Any, transform: Any) -> Georef:
        """Return a map grid from any CRS pyproj reads (WKT, ``EPSG:...``, rasterio/pyproj CRS).

        ``transform`` is an :class:`affine.Affine` or 6 numbers in GDAL order. Without a CRS
        the result is a ``"pixel"`` grid that keeps the affine.
        """
        wkt = None
        if crs is not None and str(crs):
            # WKT is kept as the file spells it (GDAL's, what stores always held); other
            # spellings (EPSG:..., PROJ strings) become pyproj's WKT
            text = crs.to_wkt() if hasattr(crs, "to_wkt") else str(crs)
            wkt = text if "[" in text else _parse_crs(text).to_wkt()
        return cls(_as_affine(transform), wkt)

    @classmethod
    def from_dataset(cls, dataset: Any) -> Georef:
        """Return the grid of an open rasterio dataset."""
        return cls.geo(dataset.crs, dataset.transform)

    @classmethod
    def for_slide(
        cls,
        *,
        downsample: tuple[float, float],
        mpp: tuple[float, float] | None,
        level: int,
        level0_shape: tuple[int, int],
    ) -> Georef:
        """Return a slide grid whose pixels are ``downsample`` = ``(x, y)`` level-0 pixels.

        ``mpp`` is microns per level-0 pixel ``(x, y)``, ``None`` when the slide records none.
        """
        dx, dy = (float(v) for v in downsample)
        return cls(
            Affine.scale(dx, dy),
            None,
            None if mpp is None else (float(mpp[0]), float(mpp[1])),
            int(level),
            (int(level0_shape[0]), int(level0_shape[1])),
        )

    # -- views ----------------------------------------------------------------------------

    @property
    def kind(self) -> GeorefKind:
        """``"geo"``, ``"slide"`` or ``"pixel"``."""
        if self.crs is not None:
            return "geo"
        if self.level0_shape is not None:
            return "slide"
        return "pixel"

    @property
    def crs_obj(self) -> CRS | None:
        """The CRS as a :class:`pyproj.CRS` (``None`` without one)."""
        return None if self.crs is None else _parse_crs(self.crs)

    @property
    def downsample(self) -> tuple[float, float]:
        """Level-0 pixels per working pixel ``(x, y)`` (slides; 1 for unscaled grids)."""
        return (float(math.hypot(self.transform.a, self.transform.d)),
                float(math.hypot(self.transform.b, self.transform.e)))  # fmt: skip

    @property
    def pixel_mpp(self) -> tuple[float, float] | None:
        """Microns per working pixel ``(x, y)`` (slides that record ``mpp``)."""
        if self.mpp is None:
            return None
        dx, dy = self.downsample
        return (self.mpp[0] * dx, self.mpp[1] * dy)

    @property
    def resolution(self) -> tuple[float, float]:
        """Pixel size ``(x, y)`` in map units (geo), level-0 pixels (slide, pixel)."""
        return self.downsample

    def to_gdal(self) -> list[float]:
        """Return the affine in GDAL order ``[c, a, b, f, d, e]``."""
        return [float(v) for v in self.transform.to_gdal()]

    def shifted(self, row_off: int, col_off: int) -> Georef:
        """Return the georeference of a window whose top-left pixel is ``(row_off, col_off)``."""
        moved = self.transform @ Affine.translation(col_off, row_off)
        return Georef(moved, self.crs, self.mpp, self.level, self.level0_shape)

    def scaled(self, factor_x: float, factor_y: float) -> Georef:
        """Return the grid whose pixels are ``factor`` times larger (``< 1``: finer)."""
        grown = self.transform @ Affine.scale(factor_x, factor_y)
        return Georef(grown, self.crs, self.mpp, self.level, self.level0_shape)

    def same_grid(self, other: Georef, tolerance: float = 1e-6) -> bool:
        """Whether ``other`` has the same CRS and affine (within ``tolerance`` of a pixel)."""
        if (self.crs is None) != (other.crs is None):
            return False
        if (
            self.crs is not None
            and other.crs is not None
            and self.crs != other.crs
            and not _parse_crs(self.crs).equals(_parse_crs(other.crs))
        ):
            return False
        size = max(abs(self.transform.a), abs(self.transform.e), 1e-12)
        return all(
            abs(p - q) <= tolerance * size
            for p, q in zip(tuple(self.transform)[:6], tuple(other.transform)[:6], strict=True)
        )

    # -- store attributes -----------------------------------------------------------------

    def to_attrs(self) -> dict[str, Any]:
        """JSON-able attributes for a store (keys of the store contract).

        ``geo``: ``crs`` (WKT) and ``transform`` (GDAL order). ``slide``: ``mpp`` (microns per
        working pixel, x), ``mpp_xy``, ``mpp0`` (level 0), ``downsample`` (x), ``downsample_xy``,
        ``level``, ``level0_shape`` and ``frame: "level0"``. ``pixel``: ``transform`` only.
        """
        if self.kind == "geo":
            return {"crs": self.crs, "transform": self.to_gdal()}
        if self.kind == "pixel":
            return {"transform": self.to_gdal()}
        dx, dy = self.downsample
        pixel_mpp = self.pixel_mpp
        return {
            "mpp": None if pixel_mpp is None else pixel_mpp[0],
            "mpp_xy": None if pixel_mpp is None else list(pixel_mpp),
            "mpp0": None if self.mpp is None else list(self.mpp),
            "downsample": dx,
            "downsample_xy": [dx, dy],
            "level": self.level,
            "level0_shape": list(self.level0_shape or ()),
            "frame": "level0",
        }

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> Georef:
        """Read what :meth:`to_attrs` wrote (and the older scalar ``mpp``/``downsample``).

        Raises
        ------
        InputError
            A transform that does not hold 6 numbers.
        """
        if attrs.get("crs"):
            return cls.geo(attrs["crs"], attrs.get("transform"))
        slide_keys = ("mpp", "downsample", "level0_shape", "level")
        if not any(attrs.get(key) is not None for key in slide_keys):
            return cls(_as_affine(attrs.get("transform")))
        pair = attrs.get("downsample_xy")
        scalar = float(attrs.get("downsample") or 1.0)
        dx, dy = (float(pair[0]), float(pair[1])) if pair else (scalar, scalar)
        mpp0 = _pair(attrs.get("mpp0"))
        if mpp0 is None and attrs.get("mpp") is not None:
            working = _pair(attrs.get("mpp_xy")) or (float(attrs["mpp"]), float(attrs["mpp"]))
            mpp0 = (working[0] / dx, working[1] / dy)
        shape = attrs.get("level0_shape") or ()
        return cls(
            Affine.scale(dx, dy),
            None,
            mpp0,
            int(attrs.get("level") or 0),
            (int(shape[0]), int(shape[1])) if len(shape) == 2 else (0, 0),
        )


def _pair(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if isinstance(value, Sequence) and not isinstance(value, str):
        return (float(value[0]), float(value[1]))
    return (float(value), float(value))
