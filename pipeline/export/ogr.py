"""GeoPackage and FlatGeobuf through GDAL/OGR (pyogrio), streamed as Arrow batches.

Why pyogrio: rasterio bundles GDAL but no vector API, and fiona is not installed. GeoPackage
is SQLite plus an R-tree and several metadata tables, and FlatGeobuf's useful form carries a
packed Hilbert R-tree; GDAL writes both correctly and is what every reader tests against.
pyogrio's wheels carry their own GDAL, so there is nothing to build. Batches are pushed
through a bounded queue to ``pyogrio.raw.write_arrow`` running in a thread, which pulls them
as an Arrow stream: the file grows as features arrive and memory stays bounded.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import shapely

from pipeline.errors import ConfigError
from pipeline.export.base import FileWriter
from pipeline.export.features import FeatureBatch
from pipeline.export.geoparquet import arrow_schema, to_record_batch

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["OGRWriter"]

_DRIVERS = {"gpkg": "GPKG", "flatgeobuf": "FlatGeobuf"}
_END = object()


class OGRWriter(FileWriter):
    """GeoPackage (``.gpkg``) or FlatGeobuf (``.fgb``) writer."""

    fmt = "gpkg"

    def _open(self) -> None:
        import pyarrow as pa  # here, not at import: most runs never write GPKG/FlatGeobuf

        try:
            import pyogrio.raw
        except ImportError:  # pragma: no cover - pyogrio is a dependency
            raise ConfigError(
                "GeoPackage/FlatGeobuf output needs pyogrio (pip install pyogrio); "
                "or write --format geoparquet"
            ) from None
        self._arrow = arrow_schema(self.schema).set(
            len(self.schema.fields),
            pa.field("geometry", pa.binary(), nullable=False,
                     metadata={"ARROW:extension:name": "geoarrow.wkb"}),
        )  # fmt: skip
        self._queue: queue.Queue[object] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        kind = self.schema.geometry
        self._promote = kind == "polygon"
        geometry_type = {"polygon": "MultiPolygon", "line": "LineString"}.get(kind, "Unknown")
        driver = _DRIVERS[self.fmt]
        layer = self.layer

        def batches() -> Iterator[pa.RecordBatch]:
            while True:
                item = self._queue.get()
                if item is _END:
                    return
                yield item  # type: ignore[misc,unused-ignore]

        def run() -> None:
            try:
                reader = pa.RecordBatchReader.from_batches(self._arrow, batches())
                pyogrio.raw.write_arrow(
                    reader, str(self.tmp), layer=layer, driver=driver,
                    geometry_name="geometry", geometry_type=geometry_type,
                    crs=self.schema.crs,
                )  # fmt: skip
            except BaseException as exc:  # reported by close()
                self._error = exc
                while self._queue.get() is not _END:  # unblock the producer
                    pass

        self._thread = threading.Thread(target=run, name=f"gigaseg-{driver}", daemon=True)
        self._thread.start()

    def _write(self, batch: FeatureBatch) -> int:
        geoms = batch.geometry
        if self._promote:
            single = shapely.get_type_id(geoms) == 3
            geoms = geoms.copy()
            geoms[single] = [shapely.MultiPolygon([g]) for g in geoms[single]]
        record = to_record_batch(FeatureBatch(geoms, batch.columns), self.schema, self._arrow)
        if self._error is None:
            self._queue.put(record)
        return len(geoms)

    def _finish(self) -> None:
        if not self._thread.is_alive() and self._error is None and not hasattr(self, "_queue"):
            return
        self._queue.put(_END)
        self._thread.join()
        if self._error is not None:
            raise OSError(f"cannot write {self.path}: {self._error}") from self._error


class GeoPackageWriter(OGRWriter):
    """GeoPackage writer (QGIS style in a ``.qml`` beside it)."""

    fmt = "gpkg"
    qgis_style = True


class FlatGeobufWriter(OGRWriter):
    """FlatGeobuf writer (with its spatial index; QGIS style in a ``.qml`` beside it)."""

    fmt = "flatgeobuf"
    qgis_style = True


__all__ += ["FlatGeobufWriter", "GeoPackageWriter"]
