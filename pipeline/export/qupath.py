"""QuPath GeoJSON: objects QuPath imports as detections or annotations.

QuPath's rules, as its GeoJSON import reads them: a FeatureCollection of Features whose
coordinates are level-0 pixels (x right, y down), ``properties.objectType`` is
``"detection"`` or ``"annotation"``, ``properties.classification`` is ``{"name", "color"}``
with an ``[r, g, b]`` colour, numeric measurements go in ``properties.measurements``, each
feature has a UUID ``id``, and the geometry is a valid Polygon or MultiPolygon. Features
that break these rules (lines, invalid or empty geometries) are skipped and counted.
"""

from __future__ import annotations

import json
import uuid
from typing import IO

import numpy as np
import shapely

from pipeline.errors import ConfigError
from pipeline.export.base import FileWriter
from pipeline.export.features import FeatureBatch, class_color

__all__ = ["OBJECT_TYPES", "QuPathWriter"]

OBJECT_TYPES = ("detection", "annotation")
_NAMESPACE = uuid.UUID("5f1e3c1a-9b0e-4c59-9d55-6a2f6d1c0e42")


class QuPathWriter(FileWriter):
    """Streams features as a QuPath-readable GeoJSON FeatureCollection."""

    object_type = "detection"
    skipped = 0
    _file: IO[str]

    def _open(self) -> None:
        if self.object_type not in OBJECT_TYPES:
            raise ConfigError(
                f"QuPath objectType must be one of {', '.join(OBJECT_TYPES)}, "
                f"got {self.object_type!r}"
            )
        self._file = self.tmp.open("w", encoding="utf-8", buffering=1 << 20)
        self._file.write('{"type":"FeatureCollection","features":[\n')

    def _write(self, batch: FeatureBatch) -> int:
        geoms = batch.geometry
        ok = np.isin(shapely.get_type_id(geoms), (3, 6)) & shapely.is_valid(geoms)
        ok &= ~shapely.is_empty(geoms)
        self.skipped += int((~ok).sum())
        texts = shapely.to_geojson(geoms[ok])
        rows = [r for r, k in zip(batch.rows(), ok, strict=True) if k]
        out = []
        for text, props in zip(texts, rows, strict=True):
            cid = int(props.get("class_id") or 0)
            measurements = {
                k: v for k, v in props.items()
                if k not in ("class", "class_id", "id") and isinstance(v, int | float)
            }  # fmt: skip
            qp = {
                "objectType": self.object_type,
                "classification": {
                    "name": str(props.get("class") or f"class_{cid}"),
                    "color": list(class_color(cid)),
                },
                "isLocked": False,
                "measurements": measurements,
            }
            fid = uuid.uuid5(_NAMESPACE, str(props.get("id")))
            out.append(
                f'{{"type":"Feature","id":"{fid}","geometry":{text},'
                f'"properties":{json.dumps(qp, allow_nan=False)}}}'
            )
        if out:
            self._file.write((",\n" if self.count else "") + ",\n".join(out))
        return len(out)

    def _finish(self) -> None:
        if not self._file.closed:
            self._file.write("\n]}\n")
            self._file.close()
