"""QuPath GeoJSON: objects QuPath imports as detections or annotations.

QuPath's rules, as its GeoJSON import reads them: a FeatureCollection of Features whose
coordinates are level-0 pixels (x right, y down), ``properties.objectType`` is
``"detection"`` or ``"annotation"``, ``properties.classification`` is ``{"name", "color"}``
with an ``[r, g, b]`` colour, numeric measurements go in ``properties.measurements``, each
feature has a UUID ``id``, and the geometry is a valid Polygon or MultiPolygon. Features
that break these rules (lines, invalid or empty geometries) are skipped and counted.

Measurements carry the names QuPath's own shape features show -- ``Area µm^2``,
``Perimeter µm`` (``px^2``/``px`` without a pixel size), ``Circularity`` (4π·area /
perimeter², 1 for a disc) -- computed from the exported outline and the slide's µm per
level-0 pixel, plus ``Mean probability`` of the model over the object. Class colours come
from the model card when it gives them.
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

__all__ = ["OBJECT_TYPES", "QuPathWriter", "measurements"]

OBJECT_TYPES = ("detection", "annotation")
_NAMESPACE = uuid.UUID("5f1e3c1a-9b0e-4c59-9d55-6a2f6d1c0e42")


#: Feature properties the measurements replace (same quantity, QuPath's name).
_REPLACED = {"area_um2", "area_px", "area_m2", "mean_probability"}


def measurements(
    geoms: np.ndarray, mpp: float | tuple[float, float] | None
) -> dict[str, np.ndarray]:
    """Area, perimeter and circularity of outlines in level-0 pixels, named as in QuPath.

    ``mpp`` is µm per level-0 pixel, one value or ``(x, y)``; ``None`` measures in pixels.

    Examples
    --------
    >>> m = measurements(np.array([shapely.box(0, 0, 10, 20)]), 0.5)
    >>> float(m["Area µm^2"][0]), float(m["Perimeter µm"][0]), round(float(m["Circularity"][0]), 4)
    (50.0, 30.0, 0.6981)
    """
    unit = "px" if mpp is None else "µm"
    if mpp is not None:
        sx, sy = (mpp, mpp) if np.isscalar(mpp) else mpp  # type: ignore[misc]
        geoms = shapely.transform(geoms, lambda xy: xy * np.array([float(sx), float(sy)]))
    area = shapely.area(geoms)
    perimeter = shapely.length(geoms)
    with np.errstate(invalid="ignore", divide="ignore"):
        circularity = np.where(perimeter > 0, 4 * np.pi * area / perimeter**2, np.nan)
    return {
        f"Area {unit}^2": area,
        f"Perimeter {unit}": perimeter,
        "Circularity": np.minimum(circularity, 1.0),
    }


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
        shape = measurements(geoms[ok], self.schema.mpp)
        names = list(shape)
        shape_rows = [{name: shape[name][i] for name in names} for i in range(int(ok.sum()))]
        out = []
        for text, props, measured in zip(texts, rows, shape_rows, strict=True):
            cid = int(props.get("class_id") or 0)
            values = {k: float(v) for k, v in measured.items() if np.isfinite(v)}
            if isinstance(props.get("mean_probability"), int | float):
                values["Mean probability"] = float(props["mean_probability"])
            values.update({
                k: v for k, v in props.items()
                if k not in ("class", "class_id", "id", *_REPLACED) and isinstance(v, int | float)
            })  # fmt: skip
            qp = {
                "objectType": self.object_type,
                "classification": {
                    "name": str(props.get("class") or f"class_{cid}"),
                    "color": list(self.schema.colors.get(cid) or class_color(cid)),
                },
                "isLocked": False,
                "measurements": values,
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
