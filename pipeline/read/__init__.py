"""Stage 1: read — open a GeoTIFF, slide or array with its georeference, one handle per process."""

from __future__ import annotations

from pipeline.read.array import ArraySource, ZarrSource
from pipeline.read.georef import Georef, GeorefKind
from pipeline.read.geotiff import GeoTiffSource, open_dataset
from pipeline.read.location import is_remote, redact, remote_env, to_gdal_path
from pipeline.read.open import is_slide, is_store, open_source
from pipeline.read.slide import SLIDE_SUFFIXES, SlideSource
from pipeline.read.source import Source, Validity, parse_bands

__all__ = [
    "SLIDE_SUFFIXES",
    "ArraySource",
    "GeoTiffSource",
    "Georef",
    "GeorefKind",
    "SlideSource",
    "Source",
    "Validity",
    "ZarrSource",
    "is_remote",
    "is_slide",
    "is_store",
    "open_dataset",
    "open_source",
    "parse_bands",
    "redact",
    "remote_env",
    "to_gdal_path",
]
