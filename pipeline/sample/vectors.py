"""Read vector label files (GeoJSON, GeoPackage) into shapely geometries with their CRS.

This is an I/O module: it opens files and nothing else. GeoJSON is parsed with :mod:`json`
(a ``crs`` member is honoured, RFC 7946 files without one are EPSG:4326); GeoPackage is read
with :mod:`sqlite3` (the GeoPackage binary header is stripped and the WKB decoded by shapely),
so neither format needs an extra dependency.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer

from pipeline.errors import InputError
from pipeline.read.location import is_remote, location_suffix, read_bytes, redact

__all__ = ["VectorLabels", "read_vectors", "reproject_geometries"]

#: Envelope sizes (bytes) of the GeoPackage binary header, by envelope indicator.
_GPKG_ENVELOPE = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}


@dataclass(frozen=True)
class VectorLabels:
    """Geometries with one property value each, in one CRS.

    Attributes
    ----------
    geometries
        Shapely geometries (object array).
    values
        The value of the chosen property per geometry (``None`` when no property was asked for).
    crs
        The coordinate reference system of the coordinates, or ``None`` for pixel coordinates
        (slides: level-0 pixels).
    """

    geometries: np.ndarray
    values: tuple[Any, ...]
    crs: CRS | None

    def __len__(self) -> int:
        return len(self.geometries)

    def to_crs(self, crs: CRS | str | int | None) -> VectorLabels:
        """Return the labels reprojected to ``crs`` (a no-op when it is the same CRS).

        Parameters
        ----------
        crs
            The target CRS (anything :meth:`pyproj.CRS.from_user_input` accepts).

        Returns
        -------
        VectorLabels
            A new object; ``self`` is unchanged.
        """
        if crs is None or self.crs is None:
            return self
        target = CRS.from_user_input(crs)
        if target == self.crs:
            return self
        return VectorLabels(
            reproject_geometries(self.geometries, self.crs, target), self.values, target
        )


def reproject_geometries(geometries: np.ndarray, src: CRS, dst: CRS) -> np.ndarray:
    """Reproject shapely geometries between two CRSs (always x = easting/longitude first).

    Parameters
    ----------
    geometries
        Object array of geometries in ``src``.
    src, dst
        Source and target CRS.

    Returns
    -------
    numpy.ndarray
        The reprojected geometries.
    """
    transformer = Transformer.from_crs(src, dst, always_xy=True)

    def _apply(coords: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    return np.asarray(shapely.transform(geometries, _apply), dtype=object)


def read_vectors(
    path: str | Path, *, prop: str | None = None, layer: str | None = None
) -> VectorLabels:
    """Read a GeoJSON or GeoPackage file.

    Parameters
    ----------
    path
        ``.geojson``/``.json`` or ``.gpkg`` file.
    prop
        A feature property to keep per geometry (e.g. the class name); ``None`` keeps none.
    layer
        GeoPackage table to read; the first feature table when ``None``.

    Returns
    -------
    VectorLabels
        Geometries (empty and null ones dropped), the property values and the CRS.

    Raises
    ------
    InputError
        When the file is missing, of an unknown format or holds no usable geometry column.
    """
    if is_remote(path):
        return _read_remote(str(path), prop, layer)
    path = Path(path)
    if not path.is_file():
        raise InputError(f"label file {path} does not exist; give a GeoJSON or GeoPackage path")
    suffix = path.suffix.lower()
    if suffix in {".geojson", ".json"}:
        return _read_geojson(path, prop)
    if suffix == ".gpkg":
        return _read_gpkg(path, prop, layer)
    raise InputError(
        f"label file {path} has an unknown format {suffix!r}; use .geojson, .json or .gpkg "
        "(or a label raster)"
    )


def _read_remote(location: str, prop: str | None, layer: str | None) -> VectorLabels:
    """Fetch a remote GeoJSON/GeoPackage (one request) and read it like a local file."""
    import tempfile

    suffix = location_suffix(location)
    if suffix not in {".geojson", ".json", ".gpkg"}:
        raise InputError(
            f"label file {redact(location)} has an unknown format {suffix!r}; use .geojson, "
            ".json or .gpkg"
        )
    data = read_bytes(location)
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / f"labels{suffix}"
        local.write_bytes(data)
        if suffix == ".gpkg":
            return _read_gpkg(local, prop, layer)
        return _read_geojson(local, prop)


def _read_geojson(path: Path, prop: str | None) -> VectorLabels:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"label file {path} is not valid GeoJSON: {exc}") from exc
    if document.get("type") == "FeatureCollection":
        features = document.get("features") or []
    elif document.get("type") == "Feature":
        features = [document]
    else:
        features = [{"type": "Feature", "geometry": document, "properties": {}}]
    crs = CRS.from_epsg(4326)
    crs_member = document.get("crs")
    if isinstance(crs_member, dict):
        name = (crs_member.get("properties") or {}).get("name")
        if name:
            crs = CRS.from_user_input(name)
    geometries: list[Any] = []
    values: list[Any] = []
    for feature in features:
        geometry = feature.get("geometry")
        if not geometry:
            continue
        shape = shapely.from_geojson(json.dumps(geometry))
        if shape is None or shape.is_empty:
            continue
        geometries.append(shape)
        values.append((feature.get("properties") or {}).get(prop) if prop else None)
    return VectorLabels(_object_array(geometries), tuple(values), crs)


def _read_gpkg(path: Path, prop: str | None, layer: str | None) -> VectorLabels:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT table_name, column_name, srs_id FROM gpkg_geometry_columns"
        ).fetchall()
        if layer is not None:
            rows = [row for row in rows if row[0] == layer]
        if not rows:
            raise InputError(
                f"label file {path} has no geometry table{f' named {layer!r}' if layer else ''}; "
                "check the layer name"
            )
        table, column, srs_id = rows[0]
        crs = _gpkg_crs(db, srs_id)
        columns = f'"{column}"' + (f', "{prop}"' if prop else "")
        geometries: list[Any] = []
        values: list[Any] = []
        for row in db.execute(f'SELECT {columns} FROM "{table}"'):
            shape = _gpkg_geometry(row[0])
            if shape is None or shape.is_empty:
                continue
            geometries.append(shape)
            values.append(row[1] if prop else None)
    return VectorLabels(_object_array(geometries), tuple(values), crs)


def _gpkg_crs(db: sqlite3.Connection, srs_id: int) -> CRS | None:
    row = db.execute(
        "SELECT organization, organization_coordsys_id, definition FROM gpkg_spatial_ref_sys "
        "WHERE srs_id = ?",
        (srs_id,),
    ).fetchone()
    if row is None or srs_id in (0, -1):
        return None
    organization, code, definition = row
    if organization and organization.upper() == "EPSG":
        return CRS.from_epsg(int(code))
    return CRS.from_user_input(definition)


def _gpkg_geometry(blob: bytes | None) -> Any:
    if blob is None:
        return None
    if blob[:2] != b"GP":
        return shapely.from_wkb(blob)
    flags = blob[3]
    envelope = _GPKG_ENVELOPE.get((flags >> 1) & 0b111, 0)
    if flags & 0b10000:  # the empty-geometry bit
        return None
    return shapely.from_wkb(blob[8 + envelope :])


def _object_array(items: list[Any]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array
