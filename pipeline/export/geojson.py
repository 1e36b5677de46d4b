"""GeoJSON (RFC 7946) and GeoJSON text sequences (RFC 8142), written as a stream.

RFC 7946: coordinates are WGS 84 longitude/latitude (the caller hands us EPSG:4326
geometries; rasters without a CRS are written in level-0 pixel coordinates, the only frame
they have), exterior rings counter-clockwise and holes clockwise, no ``crs`` member. Each
feature is serialised as it arrives (``shapely.to_geojson`` for the geometry, at full
double precision), so memory does not grow with the number of features.
"""

from __future__ import annotations

import json
from typing import IO

import shapely

from pipeline.export.base import FileWriter
from pipeline.export.features import FeatureBatch

__all__ = ["GeoJSONSeqWriter", "GeoJSONWriter", "feature_texts"]


def feature_texts(batch: FeatureBatch, *, id_field: str = "id") -> list[str]:
    """Serialise a batch as GeoJSON Feature objects with RFC 7946 ring orientation."""
    geoms = shapely.orient_polygons(batch.geometry, exterior_cw=False)
    texts = shapely.to_geojson(geoms)
    out = []
    for geom_text, props in zip(texts, batch.rows(), strict=True):
        fid = props.get(id_field)
        head = (
            f'{{"type":"Feature","id":{json.dumps(fid)},'
            if fid is not None
            else '{"type":"Feature",'
        )
        out.append(
            f'{head}"properties":{json.dumps(props, allow_nan=False)},"geometry":{geom_text}}}'
        )
    return out


class GeoJSONWriter(FileWriter):
    """A FeatureCollection written feature by feature."""

    _file: IO[str]

    def _open(self) -> None:
        self._file = self.tmp.open("w", encoding="utf-8", buffering=1 << 20)
        self._file.write('{"type":"FeatureCollection","features":[\n')

    def _write(self, batch: FeatureBatch) -> int:
        texts = feature_texts(batch)
        sep = ",\n" if self.count else ""
        self._file.write(sep + ",\n".join(texts))
        return len(texts)

    def _finish(self) -> None:
        if not self._file.closed:
            self._file.write("\n]}\n")
            self._file.close()


class GeoJSONSeqWriter(GeoJSONWriter):
    """One Feature per line: RFC 8142 (record separator first) or newline-delimited.

    ``.geojsons``/``.geojsonseq`` files get the RFC 8142 ``RS`` (0x1E) before each record;
    ``.geojsonl``, ``.ndjson`` and ``.jsonl`` are plain newline-delimited JSON.
    """

    def _open(self) -> None:
        name = self.path.name.lower()
        self._rs = "\x1e" if name.endswith((".geojsons", ".geojsonseq")) else ""
        self._file = self.tmp.open("w", encoding="utf-8", buffering=1 << 20)

    def _write(self, batch: FeatureBatch) -> int:
        texts = feature_texts(batch)
        self._file.write("".join(f"{self._rs}{t}\n" for t in texts))
        return len(texts)

    def _finish(self) -> None:
        if not self._file.closed:
            self._file.close()
