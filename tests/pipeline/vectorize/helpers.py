"""Reference traces and small raster factories for the vectorize tests."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import rasterio
import shapely
from rasterio.features import shapes
from rasterio.transform import Affine
from scipy import ndimage

from pipeline.vectorize import stable_ids, vectorize


def reference(labels: np.ndarray, connectivity: int) -> dict[int, tuple[int, Any]]:
    """Whole-raster rasterio.features.shapes, keyed by stable id: id -> (class, polygon).

    rasterio traces an 8-connected diagonal touch as one self-touching ring; make_valid
    gives the same point set as a valid (Multi)Polygon, which is what we compare against.
    """
    src = (
        labels
        if labels.dtype in (np.uint8, np.uint16, np.int16, np.int32)
        else labels.astype(np.int32)
    )
    geoms, values = [], []
    for geom, value in shapes(src, mask=labels > 0, connectivity=connectivity):
        geoms.append(shapely.make_valid(shapely.geometry.shape(geom)))
        values.append(int(value))
    arr = np.empty(len(geoms), object)
    arr[:] = geoms
    ids = stable_ids(arr, labels.shape[1])
    out = {int(i): (v, g) for i, v, g in zip(ids, values, geoms, strict=True)}
    if len(out) != len(geoms):
        raise AssertionError("stable ids collide in the reference")
    return out


def read_parquet(path: Path) -> dict[int, tuple[int, Any, dict[str, Any]]]:
    table = pq.read_table(str(path))
    rows = table.to_pylist()
    geoms = shapely.from_wkb([r.pop("geometry") for r in rows])
    return {int(r["id"]): (int(r["class_id"]), g, r) for r, g in zip(rows, geoms, strict=True)}


def chunked(
    labels: np.ndarray, chunk: int, connectivity: int, **kwargs: Any
) -> dict[int, tuple[int, Any, dict[str, Any]]]:
    """Vectorize an array in-process to GeoParquet (pixel frame) and read it back."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.parquet"
        vectorize(
            labels, out, chunk=chunk, connectivity=connectivity, workers=0, progress=False, **kwargs
        )
        return read_parquet(out)


def assert_same(
    labels: np.ndarray, got: dict[int, tuple[int, Any, dict[str, Any]]], connectivity: int
) -> None:
    """Same polygons per class, zero symmetric difference, every geometry valid."""
    ref = reference(labels, connectivity)
    for cid in np.unique(labels[labels > 0]):
        n_ref = sum(1 for c, _ in ref.values() if c == cid)
        n_got = sum(1 for c, *_ in got.values() if c == cid)
        assert n_got == n_ref, f"class {cid}: {n_got} polygons, reference has {n_ref}"
    assert got.keys() == ref.keys()
    for key, (cid, geom, *_) in got.items():
        rcid, rgeom = ref[key]
        assert cid == rcid
        assert geom.is_valid, shapely.is_valid_reason(geom)
        assert shapely.symmetric_difference(geom, rgeom).area == 0, key


# ---- raster factories -------------------------------------------------------------------


def blobs(shape: tuple[int, int], seed: int, classes: int = 1, sigma: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    cuts = np.quantile(field, np.linspace(0.45, 0.95, classes + 1)[:-1])
    return np.searchsorted(cuts, field).astype(np.uint8)


def checkerboard(shape: tuple[int, int]) -> np.ndarray:
    rows, cols = np.indices(shape)
    return ((rows + cols) % 2).astype(np.uint8)


def lines(shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    out[3, :] = 1
    out[:, 5] = 1
    out[10, 8:] = 2
    for i in range(min(shape)):
        out[i, i] = 1  # a diagonal: one component under 8-connectivity, pixels under 4
        if i + 12 < shape[1]:
            out[i, shape[1] - 1 - i] = 2
    return out


def rings(shape: tuple[int, int]) -> np.ndarray:
    """Nested squares: rings whose holes cross every chunk border, islands inside."""
    h, w = shape
    rows, cols = np.indices(shape)
    d = np.minimum.reduce([rows, cols, h - 1 - rows, w - 1 - cols])
    out = ((d // 3) % 2).astype(np.uint8)
    out[h // 2 - 1 : h // 2 + 1, w // 2 - 1 : w // 2 + 1] = 2
    return out


def spiral(shape: tuple[int, int]) -> np.ndarray:
    """One snake spanning the whole raster (an object over many chunks)."""
    out = np.zeros(shape, np.uint8)
    h, w = shape
    for r in range(1, h - 1, 4):
        out[r, 1 : w - 1] = 1
        col = w - 2 if (r // 4) % 2 == 0 else 1
        out[r : min(r + 5, h - 1), col] = 1
    return out


def write_geotiff(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = "EPSG:32616",
    transform: Affine | None = None,
    nodata: float | None = None,
    tags: dict[str, str] | None = None,
) -> Path:
    bands = data[None] if data.ndim == 2 else data
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=bands.shape[2],
        height=bands.shape[1],
        count=bands.shape[0],
        dtype=bands.dtype,
        crs=crs,
        transform=transform or Affine(0.5, 0, 733601.0, 0, -0.5, 3725139.0),
        nodata=nodata,
    ) as ds:
        ds.write(bands)
        if tags:
            ds.update_tags(**tags)
    return path
