"""Tiny deterministic rasters for reader and pipeline tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

CRS = "EPSG:32618"
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)


def xy_image(bands: int, rows: int, cols: int, dtype: str = "uint8") -> np.ndarray:
    """Pixels that encode their own coordinates (a misplaced window cannot hide)."""
    r, c = np.mgrid[0:rows, 0:cols]
    layers = [(r * 7 + c * 3 + 31 * b) % 251 for b in range(bands)]
    return np.stack(layers).astype(dtype)


def write_geotiff(
    path: Path,
    image: np.ndarray,
    *,
    nodata: float | None = None,
    tiled: bool = True,
    compress: str | None = None,
) -> Path:
    bands, rows, cols = image.shape
    profile = {
        "driver": "GTiff",
        "width": cols,
        "height": rows,
        "count": bands,
        "dtype": str(image.dtype),
        "crs": CRS,
        "transform": TRANSFORM,
        "nodata": nodata,
    }
    if tiled:
        profile.update(tiled=True, blockxsize=32, blockysize=32)
    if compress:
        profile["compress"] = compress
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(image)
    return path
