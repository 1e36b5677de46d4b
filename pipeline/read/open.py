"""Pick the reader for a path or array."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ConfigError, InputError
from pipeline.read.array import ArraySource, ZarrSource
from pipeline.read.geotiff import GeoTiffSource
from pipeline.read.location import is_remote, location_exists, location_suffix, redact
from pipeline.read.slide import SLIDE_SUFFIXES, SlideSource
from pipeline.read.source import Source
from pipeline.read.stac import StacSource

__all__ = ["is_slide", "is_zarr_location", "open_source"]


def is_zarr_location(location: Any) -> bool:
    """Whether ``location`` names a Zarr array or group (a local directory, or ``*.zarr``)."""
    text = str(location)
    if location_suffix(text) == ".zarr":
        return True
    return not is_remote(text) and Path(text).is_dir()


def is_slide(location: Any) -> bool:
    """Whether ``location`` is a whole-slide image (by suffix, or a format OpenSlide detects).

    One list of slide formats serves every command: :data:`~pipeline.read.slide.SLIDE_SUFFIXES`.
    """
    text = str(location)
    if location_suffix(text) in SLIDE_SUFFIXES:
        return True
    return not is_remote(text) and Path(text).is_file() and _is_vendor_slide(text)


def _is_vendor_slide(path: str) -> bool:
    """Tell a slide: a vendor format OpenSlide knows, an OME-TIFF, or a plain pyramid.

    OME-TIFF levels may be SubIFDs or series; a plain pyramid is a TIFF without
    georeferencing whose reduced levels are SubIFDs or reduced-resolution pages.
    """
    if path.lower().endswith((".ome.tif", ".ome.tiff", ".ome.btf")):
        return True
    if path.lower().endswith((".tif", ".tiff", ".btf")):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                if tif.is_ome or _is_plain_pyramid(tif):
                    return True
        except Exception:  # not a TIFF tifffile reads: let rasterio judge it
            return False
    try:
        import openslide
    except ImportError:
        return False
    vendor = openslide.OpenSlide.detect_format(path)
    return vendor not in (None, "generic-tiff")


def _is_plain_pyramid(tif: Any) -> bool:
    """Tell a generic pyramidal slide (libvips, QuPath, NDPI-like exports).

    That is a TIFF without georeferencing whose reduced levels are SubIFDs (which GDAL never
    writes), or a tiled one whose second page is marked reduced-resolution. A raster GDAL
    wrote (its metadata or nodata tags, a COG's structural-metadata header; gigaseg's own
    label and probability exports) or a palette image (a label map) stays a raster.
    """
    page = tif.pages.first
    if page.is_geotiff or int(page.photometric) == 3:  # 3: palette
        return False
    if 42112 in page.tags or 42113 in page.tags:  # GDAL_METADATA, GDAL_NODATA
        return False
    tif.filehandle.seek(0)
    if b"GDAL_STRUCTURAL_METADATA" in tif.filehandle.read(64):
        return False
    if page.subifds:  # GDAL never writes SubIFDs
        return True
    return page.is_tiled and len(tif.pages) > 1 and bool(int(tif.pages[1].subfiletype) & 1)


def open_source(
    source: Any,
    *,
    bands: Any = None,
    level: int | None = None,
    mpp: float | None = None,
    slide_backend: str = "auto",
    source_mpp: float | None = None,
    assets: Any = None,
) -> Source:
    """Open ``source`` with the right reader.

    Parameters
    ----------
    source
        A :class:`Source` (returned as is), a NumPy array, or the location (local path,
        ``http(s)://``, ``s3://``, ``gs://``, ``az://`` URL or GDAL ``/vsi*/`` path) of a
        GeoTIFF/COG/VRT, a STAC Item JSON, a slide (SVS, NDPI, pyramidal TIFF...; local), or
        a Zarr array.
    bands
        1-based band numbers.
    level, mpp
        Slide pyramid level or target microns per pixel; either one makes a TIFF a slide.
    slide_backend
        ``"openslide"``, ``"tiffslide"`` or ``"auto"``.
    source_mpp
        Microns per level-0 pixel for a slide that records none; makes a TIFF a slide.
    assets
        For a STAC Item (``*.json``): asset keys or ``eo:bands`` common names to stack.

    Returns
    -------
    Source
        The reader.
    """
    if isinstance(source, Source):
        return source
    if isinstance(source, np.ndarray):
        return ArraySource(source, bands)
    path = str(source)
    if not location_exists(path):
        raise InputError(f"{path} does not exist; check the path")
    if location_suffix(path) == ".json":
        return StacSource(path, assets=assets, bands=bands)
    if assets:
        raise ConfigError(
            f"--assets picks assets of a STAC item, but {redact(path)} is not one (*.json); "
            "drop --assets or give the item"
        )
    if is_zarr_location(path):
        return ZarrSource(path, bands)
    slide_wanted = level is not None or mpp is not None or source_mpp is not None
    if slide_wanted or is_slide(path):
        if is_remote(path):
            raise InputError(
                f"{redact(path)} is a remote slide; slides are read from local files only "
                "(copy it locally first)"
            )
        return SlideSource(
            path,
            level=level,
            mpp=mpp,
            bands=bands,
            backend=slide_backend,
            source_mpp=source_mpp,
        )
    return GeoTiffSource(path, bands)
