"""Pick the reader for a path or array."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InputError
from pipeline.read.array import ArraySource, ZarrSource
from pipeline.read.geotiff import GeoTiffSource
from pipeline.read.slide import SLIDE_SUFFIXES, SlideSource
from pipeline.read.source import Source

__all__ = ["open_source"]


def _is_vendor_slide(path: str) -> bool:
    try:
        import openslide
    except ImportError:
        return False
    vendor = openslide.OpenSlide.detect_format(path)
    return vendor not in (None, "generic-tiff")


def open_source(
    source: Any,
    *,
    bands: Any = None,
    level: int | None = None,
    mpp: float | None = None,
    slide_backend: str = "auto",
) -> Source:
    """Open ``source`` with the right reader.

    Parameters
    ----------
    source
        A :class:`Source` (returned as is), a NumPy array, a path to a GeoTIFF/COG/VRT, a
        slide (SVS, NDPI, pyramidal TIFF...), or a Zarr array.
    bands
        1-based band numbers.
    level, mpp
        Slide pyramid level or target microns per pixel; either one makes a TIFF a slide.
    slide_backend
        ``"openslide"``, ``"tiffslide"`` or ``"auto"``.

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
    if not Path(path).exists() and "://" not in path:
        raise InputError(f"{path} does not exist; check the path")
    suffix = Path(path).suffix.lower()
    if Path(path).is_dir() or suffix == ".zarr":
        return ZarrSource(path, bands)
    slide_wanted = level is not None or mpp is not None
    if suffix in SLIDE_SUFFIXES or slide_wanted or _is_vendor_slide(path):
        return SlideSource(path, level=level, mpp=mpp, bands=bands, backend=slide_backend)
    return GeoTiffSource(path, bands)
