"""Stage 1: read — open a GeoTIFF, slide or array with its georeference, one handle per process."""

from __future__ import annotations

from pipeline.read.array import ArraySource, ZarrSource
from pipeline.read.geotiff import GeoTiffSource
from pipeline.read.open import open_source
from pipeline.read.slide import SlideSource
from pipeline.read.source import Source, Validity, parse_bands

__all__ = [
    "ArraySource",
    "GeoTiffSource",
    "SlideSource",
    "Source",
    "Validity",
    "ZarrSource",
    "open_source",
    "parse_bands",
]
