"""Invalid pixels inside a read window: nodata, mask bands and NaN, never fed to a model raw.

A tile that is partly valid (the edge of a scene's collar, a cloud mask, a NaN hole in a
float product) used to reach the model with its nodata values or NaN as if they were data: a
50 x 50 NaN block gave p = 0 over 148 x 148 pixels, marked complete. Invalid pixels are told
apart explicitly -- a band's nodata value (every band equal to it), GDAL's mask band or alpha,
and non-finite floats -- then filled with a neutral value before the model (the band mean the
model normalises with, so it sees 0), and recorded as nodata in the store.

Filling is a per-pixel rule of the source, so the whole-image reference filled the same way
still equals the tiled result: exactness holds on the valid pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.read.source import Source
from pipeline.tile.grid import Window
from pipeline.tile.overlap import reflect_index

__all__ = ["fill_invalid", "invalid_mask"]


def invalid_mask(
    source: Source, window: Window, pixels: npt.NDArray[Any]
) -> npt.NDArray[np.bool_] | None:
    """Return ``(h, w)`` True where a pixel of ``window`` holds no data, or ``None`` if none.

    ``pixels`` are the window's pixels as :meth:`Source.read` returned them (mirrored
    outside the image); the mask band is mirrored the same way.
    """
    invalid = np.zeros(pixels.shape[1:], dtype=bool)
    if pixels.dtype.kind == "f":
        invalid |= ~np.isfinite(pixels).all(axis=0)
    nodata = getattr(source, "nodata", None)
    if nodata is not None and not np.isnan(nodata):
        invalid |= np.all(pixels == np.asarray(nodata).astype(pixels.dtype), axis=0)
    band_mask = _mask_band(source, window)
    if band_mask is not None:
        invalid |= ~band_mask
    return invalid if invalid.any() else None


def _mask_band(source: Source, window: Window) -> npt.NDArray[np.bool_] | None:
    """GDAL's per-dataset mask or alpha band over ``window`` (mirrored), for GeoTIFFs."""
    from pipeline.read.geotiff import GeoTiffSource

    if not isinstance(source, GeoTiffSource):
        return None
    from rasterio.enums import MaskFlags
    from rasterio.windows import Window as RioWindow

    dataset, lock = source._handle()
    flags = dataset.mask_flag_enums[source.bands[0] - 1]
    if not any(flag in (MaskFlags.per_dataset, MaskFlags.alpha) for flag in flags):
        return None
    height, width = source.shape
    rows = reflect_index(window.row_off, window.row_stop, height)
    cols = reflect_index(window.col_off, window.col_stop, width)
    r0, c0 = int(rows.min()), int(cols.min())
    box = RioWindow(c0, r0, int(cols.max()) + 1 - c0, int(rows.max()) + 1 - r0)
    with lock:
        mask = dataset.dataset_mask(window=box) > 0
    result: npt.NDArray[np.bool_] = mask[(rows - r0)[:, None], (cols - c0)[None, :]]
    return result


def fill_invalid(
    pixels: npt.NDArray[Any], invalid: npt.NDArray[np.bool_], mean: tuple[float, ...] | None
) -> npt.NDArray[np.float32]:
    """Replace invalid pixels by each band's ``mean`` (0 without one), as float32."""
    filled = pixels.astype(np.float32, copy=True)
    values = np.zeros(pixels.shape[0], np.float32) if mean is None else np.asarray(mean, np.float32)
    filled[:, invalid] = values[:, None]
    return filled
