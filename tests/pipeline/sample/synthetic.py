"""Tiny GeoTIFFs and label files for the sampler and evaluation tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer

#: A UTM 16N grid like the SpaceNet chip's, 1 m pixels.
ORIGIN = (733600.0, 3725100.0)
CRS = "EPSG:32616"


def write_geotiff(
    path: Path,
    data: np.ndarray,
    *,
    transform: Affine | None = None,
    crs: str | None = CRS,
    nodata: float | None = None,
) -> Path:
    """Write ``(bands, h, w)`` data as a GeoTIFF."""
    data = data if data.ndim == 3 else data[None]
    transform = transform or Affine(1.0, 0, ORIGIN[0], 0, -1.0, ORIGIN[1])
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as dataset:
        dataset.write(data)
    return path


def pixel_box(transform: Affine, row0: int, col0: int, row1: int, col1: int) -> shapely.Polygon:
    """Polygon covering pixels ``[row0, row1) x [col0, col1)`` in map coordinates."""
    x0, y0 = transform @ (col0, row0)
    x1, y1 = transform @ (col1, row1)
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def write_geojson(
    path: Path, geometries: list, *, crs: str | None = CRS, properties: list | None = None
) -> Path:
    """Write geometries as a GeoJSON FeatureCollection (``crs=None``: RFC 7946, EPSG:4326)."""
    features = [
        {
            "type": "Feature",
            "properties": (properties[i] if properties else {}),
            "geometry": json.loads(shapely.to_geojson(geometry)),
        }
        for i, geometry in enumerate(geometries)
    ]
    document: dict = {"type": "FeatureCollection", "features": features}
    if crs is not None:
        document["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def to_lonlat(geometry: shapely.Geometry, crs: str = CRS) -> shapely.Geometry:
    """Reproject a geometry to EPSG:4326 (lon, lat), densified so edges stay straight in UTM."""
    transformer = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    geometry = shapely.segmentize(geometry, 0.5)
    return shapely.transform(
        geometry, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))
    )


def squares_scene(tmp: Path, size: int = 96, seed: int = 0) -> tuple[Path, Path, list]:
    """A noisy image with bright squares and their footprints (UTM GeoJSON)."""
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 10, (size, size))
    transform = Affine(1.0, 0, ORIGIN[0], 0, -1.0, ORIGIN[1])
    boxes = []
    for row in range(6, size - 14, 22):
        for col in range(6, size - 14, 22):
            r, c = row + int(rng.integers(0, 5)), col + int(rng.integers(0, 5))
            h, w = int(rng.integers(6, 11)), int(rng.integers(6, 11))
            image[r : r + h, c : c + w] += 80
            boxes.append(pixel_box(transform, r, c, r + h, c + w))
    tif = write_geotiff(tmp / "scene.tif", image.astype(np.uint16)[None], transform=transform)
    labels = write_geojson(tmp / "labels.geojson", boxes)
    return tif, labels, boxes
