"""Stage 6: export features to GeoJSON, GeoJSONSeq, GeoParquet, GeoPackage, FlatGeobuf, QuPath.

Rasters too: :func:`export_raster` writes a store"s labels or probabilities as a COG.

Every writer streams batches to a temporary sibling of the output and renames it when
complete (:mod:`pipeline.export.atomic`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline._lazy import lazy_exports

if TYPE_CHECKING:
    from pipeline.export.atomic import (
        check_not_input,
        check_output,
        commit,
        holds,
        remove_stale_temporaries,
        temporary_path,
        write_text,
    )
    from pipeline.export.base import FeatureWriter, FileWriter
    from pipeline.export.features import FeatureBatch, Field, Schema, class_color
    from pipeline.export.geojson import GeoJSONSeqWriter, GeoJSONWriter, feature_texts
    from pipeline.export.geoparquet import GeoParquetWriter
    from pipeline.export.ogr import FlatGeobufWriter, GeoPackageWriter, OGRWriter
    from pipeline.export.qupath import OBJECT_TYPES, QuPathWriter
    from pipeline.export.raster import RasterReport, export_raster, raster_settings
    from pipeline.export.style import qgis_style, qml_path, write_qml
    from pipeline.export.writers import WRITERS, open_writer, target_of

__all__ = [
    "OBJECT_TYPES",
    "WRITERS",
    "FeatureBatch",
    "FeatureWriter",
    "Field",
    "FileWriter",
    "FlatGeobufWriter",
    "GeoJSONSeqWriter",
    "GeoJSONWriter",
    "GeoPackageWriter",
    "GeoParquetWriter",
    "OGRWriter",
    "QuPathWriter",
    "RasterReport",
    "Schema",
    "check_not_input",
    "check_output",
    "class_color",
    "commit",
    "export_raster",
    "feature_texts",
    "holds",
    "open_writer",
    "qgis_style",
    "qml_path",
    "raster_settings",
    "remove_stale_temporaries",
    "target_of",
    "temporary_path",
    "write_qml",
    "write_text",
]

# Each name is imported from its module when first read (see pipeline._lazy).
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "pipeline.export.atomic": [
            "check_not_input",
            "check_output",
            "commit",
            "holds",
            "remove_stale_temporaries",
            "temporary_path",
            "write_text",
        ],
        "pipeline.export.base": ["FeatureWriter", "FileWriter"],
        "pipeline.export.features": ["FeatureBatch", "Field", "Schema", "class_color"],
        "pipeline.export.geojson": ["GeoJSONSeqWriter", "GeoJSONWriter", "feature_texts"],
        "pipeline.export.geoparquet": ["GeoParquetWriter"],
        "pipeline.export.ogr": ["FlatGeobufWriter", "GeoPackageWriter", "OGRWriter"],
        "pipeline.export.qupath": ["OBJECT_TYPES", "QuPathWriter"],
        "pipeline.export.raster": ["RasterReport", "export_raster", "raster_settings"],
        "pipeline.export.style": ["qgis_style", "qml_path", "write_qml"],
        "pipeline.export.writers": ["WRITERS", "open_writer", "target_of"],
    },
)
