"""Pick and open the writer for an output format."""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.export.base import FileWriter
from pipeline.export.features import Schema
from pipeline.export.geojson import GeoJSONSeqWriter, GeoJSONWriter
from pipeline.export.geoparquet import GeoParquetWriter
from pipeline.export.ogr import FlatGeobufWriter, GeoPackageWriter
from pipeline.export.qupath import QuPathWriter

__all__ = ["WRITERS", "open_writer", "target_of"]

WRITERS: dict[str, type[FileWriter]] = {
    "geojson": GeoJSONWriter,
    "geojsonseq": GeoJSONSeqWriter,
    "geoparquet": GeoParquetWriter,
    "gpkg": GeoPackageWriter,
    "flatgeobuf": FlatGeobufWriter,
    "qupath": QuPathWriter,
}

#: Output frame of each format: lon/lat, the source CRS, or level-0 pixels.
_TARGETS = {
    "geojson": "wgs84",
    "geojsonseq": "wgs84",
    "geoparquet": "source",
    "gpkg": "source",
    "flatgeobuf": "source",
    "qupath": "pixel",
}


def target_of(fmt: str) -> str:
    """Return the coordinate frame a format is written in (``wgs84``, ``source`` or ``pixel``)."""
    return _TARGETS[fmt]


def open_writer(
    path: str | Path, fmt: str, schema: Schema, *, object_type: str = "detection"
) -> FileWriter:
    """Open a streaming writer on a temporary sibling of ``path``.

    Parameters
    ----------
    path
        Final output path (checked beforehand with :func:`~pipeline.export.check_output`).
    fmt
        A key of :data:`WRITERS`.
    schema
        Properties, CRS and geometry kind of the features.
    object_type
        QuPath ``objectType`` (``detection`` or ``annotation``).
    """
    if fmt not in WRITERS:
        raise ConfigError(f"unknown output format {fmt!r}; choose one of {', '.join(WRITERS)}")
    cls = WRITERS[fmt]
    if cls is QuPathWriter:
        cls = type("QuPathWriter", (QuPathWriter,), {"object_type": object_type})
    return cls(path, schema)
