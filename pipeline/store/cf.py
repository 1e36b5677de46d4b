"""CF conventions for a store: coordinates and a grid mapping that xarray/rioxarray/GDAL read.

Pure: from the georeference in the attributes (``crs`` WKT + ``transform`` in GDAL order,
or ``mpp`` for slides) to the attributes and 1-D coordinate values the store writes beside
its arrays. rioxarray reads the ``spatial_ref`` variable named by each array's
``grid_mapping`` (``crs_wkt``, ``spatial_ref``, ``GeoTransform``); GDAL reads ``_CRS`` and
derives the transform from the regularly spaced ``x``/``y`` arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.store.layout import class_names

__all__ = [
    "GRID_MAPPING",
    "array_attrs",
    "coordinate_attrs",
    "coordinates",
    "grid_mapping_attrs",
    "label_flags",
    "slide_mpp_yx",
]

#: Name of the 0-d grid-mapping variable (rioxarray's default name).
GRID_MAPPING = "spatial_ref"


def _transform(attrs: Mapping[str, Any]) -> tuple[float, ...] | None:
    transform = attrs.get("transform")
    if attrs.get("crs") and transform is not None and len(transform) == 6:
        return tuple(float(v) for v in transform)
    return None


def grid_mapping_attrs(attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return the CF grid-mapping attributes for a georeferenced store, else ``None``.

    Examples
    --------
    >>> gm = grid_mapping_attrs({"crs": "EPSG:32633", "transform": [500000, 10, 0, 6e6, 0, -10]})
    >>> gm["grid_mapping_name"], gm["GeoTransform"]
    ('transverse_mercator', '500000.0 10.0 0.0 6000000.0 0.0 -10.0')
    """
    transform = _transform(attrs)
    if transform is None:
        return None
    from pyproj import CRS

    crs = CRS.from_user_input(attrs["crs"])
    wkt = crs.to_wkt()
    cf: dict[str, Any] = {}
    try:
        cf = {k: v for k, v in crs.to_cf().items() if v is not None}
    except Exception:  # a CRS without a CF equivalent still has its WKT
        cf = {}
    cf.update(
        {
            "crs_wkt": wkt,
            "spatial_ref": wkt,
            "GeoTransform": " ".join(repr(v) for v in transform),
        }
    )
    return cf


def coordinates(
    attrs: Mapping[str, Any], shape: Sequence[int]
) -> dict[str, npt.NDArray[np.float64]]:
    """Return pixel-centre ``y`` and ``x`` coordinates (map units, or µm for slides).

    A rotated transform has no 1-D coordinates: only ``GeoTransform`` describes it, and an
    empty mapping is returned. A store with neither transform nor ``mpp`` gets pixel
    centres.

    Examples
    --------
    >>> c = coordinates({"crs": "EPSG:32633", "transform": [100, 10, 0, 50, 0, -10]}, (2, 3))
    >>> c["x"].tolist(), c["y"].tolist()
    ([105.0, 115.0, 125.0], [45.0, 35.0])
    """
    rows, cols = int(shape[0]), int(shape[1])
    transform = _transform(attrs)
    if transform is not None:
        x0, dx, rx, y0, ry, dy = transform
        if rx or ry:
            return {}
        return {
            "y": y0 + (np.arange(rows, dtype=np.float64) + 0.5) * dy,
            "x": x0 + (np.arange(cols, dtype=np.float64) + 0.5) * dx,
        }
    step_y, step_x = slide_mpp_yx(attrs)
    return {
        "y": (np.arange(rows, dtype=np.float64) + 0.5) * step_y,
        "x": (np.arange(cols, dtype=np.float64) + 0.5) * step_x,
    }


def slide_mpp_yx(attrs: Mapping[str, Any]) -> tuple[float, float]:
    """Return µm per stored pixel as ``(y, x)`` (``mpp_xy`` when recorded, else ``mpp``; 1).

    Examples
    --------
    >>> slide_mpp_yx({"mpp": 0.5, "mpp_xy": [0.5, 0.25]}), slide_mpp_yx({})
    ((0.25, 0.5), (1.0, 1.0))
    """
    per_axis = attrs.get("mpp_xy")
    if per_axis and len(per_axis) == 2 and all(per_axis):
        return float(per_axis[1]), float(per_axis[0])
    step = float(attrs.get("mpp") or 1.0)
    return step, step


def coordinate_attrs(attrs: Mapping[str, Any], axis: str) -> dict[str, Any]:
    """Return CF attributes of the ``x`` or ``y`` coordinate variable."""
    out: dict[str, Any] = {"axis": axis.upper()}
    if _transform(attrs) is None:
        unit = "um" if attrs.get("mpp") else "pixel"
        out.update({"long_name": f"{axis} ({'level-0 frame, ' if unit == 'um' else ''}{unit})"})
        out["units"] = unit
        return out
    from pyproj import CRS

    crs = CRS.from_user_input(attrs["crs"])
    if crs.is_geographic:
        name = "longitude" if axis == "x" else "latitude"
        out.update(
            {"standard_name": name, "units": "degrees_east" if axis == "x" else "degrees_north"}
        )
    else:
        out["standard_name"] = f"projection_{axis}_coordinate"
        unit = crs.axis_info[0].unit_name if crs.axis_info else "metre"
        out["units"] = {"metre": "m", "meter": "m"}.get(unit, unit)
    return out


def label_flags(classes: Sequence[str], channels: int) -> dict[str, Any]:
    """Return CF ``flag_values``/``flag_meanings`` for class ids (0 is background).

    Examples
    --------
    >>> label_flags(["building"], 1)
    {'flag_values': [0, 1], 'flag_meanings': 'background building'}
    """
    names = {0: "background", **class_names(classes, channels)}
    ids = sorted(names)
    meanings = " ".join("_".join(names[i].split()) for i in ids)
    return {"flag_values": ids, "flag_meanings": meanings}


def array_attrs(
    attrs: Mapping[str, Any], name: str, *, dtype: str = "uint8", channels: int = 1
) -> dict[str, Any]:
    """Return the CF attributes of the ``labels`` or ``probabilities`` array."""
    out: dict[str, Any] = {}
    if grid_mapping_attrs(attrs) is not None:
        out["grid_mapping"] = GRID_MAPPING
        out["coordinates"] = GRID_MAPPING
    if name == "labels":
        out["long_name"] = "class id (0 = background)"
        out.update(label_flags(attrs.get("classes") or [], channels))
        if attrs.get("labels_nodata") is not None:
            # rioxarray's nodata (``rio.nodata``, kept by ``rio.to_raster``); not _FillValue,
            # which xarray would decode into NaN and float labels
            out["nodata"] = int(attrs["labels_nodata"])
    else:
        out["long_name"] = "class probability"
        out["units"] = "1"
        if dtype == "uint8":  # stored as round(p * 255): xarray decodes to p
            out["scale_factor"] = 1.0 / 255.0
            out["add_offset"] = 0.0
    return out
