"""GeoParquet 1.1: WKB geometry plus ``geo`` metadata, written in row groups.

Geometries stay in the source CRS, which is recorded as PROJJSON in the ``geo`` metadata
(``null`` for pixel coordinates, as the spec says for an unknown CRS). Rows go out one row
group per batch through ``pyarrow.parquet.ParquetWriter``. The ``geo`` metadata is fixed
when the file is opened, so it leaves out the optional ``bbox``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from pipeline.export.base import FileWriter
from pipeline.export.features import FeatureBatch, Schema

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["GeoParquetWriter", "arrow_schema", "to_record_batch"]

# pyarrow is imported where a GeoParquet file is written, not when the writers are listed:
# it cost every ``gigaseg`` command that never writes one a few tenths of a second.
_ARROW = {"int": "int64", "float": "float64", "str": "string"}


def _arrow_type(kind: str) -> pa.DataType:
    import pyarrow as pa

    return getattr(pa, _ARROW[kind])()


def arrow_schema(schema: Schema, *, geometry_name: str = "geometry") -> pa.Schema:
    """Arrow schema: one column per property, then the WKB geometry."""
    import pyarrow as pa

    cols = [pa.field(f.name, _arrow_type(f.kind)) for f in schema.fields]
    cols.append(pa.field(geometry_name, pa.binary(), nullable=False))
    return pa.schema(cols)


def to_record_batch(
    batch: FeatureBatch, schema: Schema, arrow: pa.Schema, *, geometry_name: str = "geometry"
) -> pa.RecordBatch:
    """Convert a feature batch to an Arrow record batch (NaN floats become nulls)."""
    import pyarrow as pa

    arrays = []
    for f in schema.fields:
        values = batch.columns[f.name]
        if f.kind == "float":
            values = np.asarray(values, float)
            arrays.append(pa.array(values, pa.float64(), mask=~np.isfinite(values)))
        else:
            arrays.append(pa.array(values.tolist(), _arrow_type(f.kind)))
    arrays.append(pa.array(shapely.to_wkb(batch.geometry).tolist(), pa.binary()))
    del geometry_name
    return pa.RecordBatch.from_arrays(arrays, schema=arrow)


def projjson(crs: str | None) -> dict[str, Any] | None:
    """PROJJSON of a CRS (``None`` stays ``None``)."""
    if crs is None:
        return None
    from pyproj import CRS

    return dict(CRS.from_user_input(crs).to_json_dict())


class GeoParquetWriter(FileWriter):
    """Streams features into a GeoParquet file, one row group per batch (``.qml`` beside)."""

    qgis_style = True

    def _open(self) -> None:
        import pyarrow.parquet as pq

        kinds = {
            "polygon": ["MultiPolygon", "Polygon"],
            "line": ["LineString"],
            "mixed": ["LineString", "MultiPolygon", "Polygon"],
        }[self.schema.geometry]
        column: dict[str, Any] = {
            "encoding": "WKB",
            "geometry_types": kinds,
            "crs": projjson(self.schema.crs),
        }
        if self.schema.geometry != "line":
            column["orientation"] = "counterclockwise"
        geo = {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}
        # in the Arrow schema metadata, where readers (pyarrow, geopandas, GDAL) look for it
        self._arrow = arrow_schema(self.schema).with_metadata({"geo": json.dumps(geo)})
        self._writer: Any = pq.ParquetWriter(str(self.tmp), self._arrow, compression="zstd")

    def _write(self, batch: FeatureBatch) -> int:
        geoms = shapely.orient_polygons(batch.geometry, exterior_cw=False)
        oriented = FeatureBatch(geoms, batch.columns)
        if self._writer is not None:
            self._writer.write_batch(to_record_batch(oriented, self.schema, self._arrow))
        return len(geoms)

    def _finish(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
