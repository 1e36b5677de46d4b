"""Stage 1: read — open a GeoTIFF, slide or array with its georeference, one handle per process."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline._lazy import lazy_exports

if TYPE_CHECKING:
    from pipeline.read.array import ArraySource, ZarrSource
    from pipeline.read.georef import Georef, GeorefKind
    from pipeline.read.geotiff import GeoTiffSource, open_dataset, read_window
    from pipeline.read.location import is_remote, redact, remote_env, to_gdal_path
    from pipeline.read.open import is_slide, is_zarr_location, open_source
    from pipeline.read.slide import SLIDE_SUFFIXES, SlideSource
    from pipeline.read.source import Source, Validity, parse_bands
    from pipeline.read.stac import StacSource

__all__ = [
    "SLIDE_SUFFIXES",
    "ArraySource",
    "GeoTiffSource",
    "Georef",
    "GeorefKind",
    "SlideSource",
    "Source",
    "StacSource",
    "Validity",
    "ZarrSource",
    "is_remote",
    "is_slide",
    "is_zarr_location",
    "open_dataset",
    "open_source",
    "parse_bands",
    "read_window",
    "redact",
    "remote_env",
    "to_gdal_path",
]

# Each name is imported from its module when first read (see pipeline._lazy).
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "pipeline.read.array": ["ArraySource", "ZarrSource"],
        "pipeline.read.georef": ["Georef", "GeorefKind"],
        "pipeline.read.geotiff": ["GeoTiffSource", "open_dataset", "read_window"],
        "pipeline.read.location": ["is_remote", "redact", "remote_env", "to_gdal_path"],
        "pipeline.read.open": ["is_slide", "is_zarr_location", "open_source"],
        "pipeline.read.slide": ["SLIDE_SUFFIXES", "SlideSource"],
        "pipeline.read.source": ["Source", "Validity", "parse_bands"],
        "pipeline.read.stac": ["StacSource"],
    },
)
