"""GeoTIFF / COG / VRT through rasterio, one dataset handle per worker process."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import InputError
from pipeline.read.source import Source, Validity, cached_handle, file_stamp, parse_bands
from pipeline.tile.grid import Window

__all__ = ["GeoTiffSource", "open_dataset"]


def open_dataset(path: str) -> Any:
    """Open ``path`` with rasterio, turning failures into one-line :class:`InputError`."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    if not Path(path).exists() and "://" not in path and not path.startswith("/vsi"):
        raise InputError(f"{path} does not exist; check the path")
    try:
        with warnings.catch_warnings():
            # A plain (non-geo) TIFF is fine: it is processed in pixel coordinates.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        reason = " ".join(str(exc).split())
        raise InputError(f"{path} is not a readable raster image ({reason})") from None


class GeoTiffSource(Source):
    """A georeferenced raster read in windows.

    Parameters
    ----------
    path
        File path or GDAL dataset name.
    bands
        1-based band numbers (all by default).

    Notes
    -----
    Validity follows GDAL's dataset mask, which merges nodata, an alpha band and an internal
    mask. Its low-resolution version is read with ``out_shape`` (GDAL uses overviews when the
    file has them) and then tested with a one-mask-pixel margin: a valid area smaller than one
    mask pixel could be missed on a large file without overviews (documented approximation).
    """

    def __init__(self, path: str | Path, bands: Any = None) -> None:
        self.path = str(path)
        self.name = self.path
        dataset = self._dataset()
        self.shape = (dataset.height, dataset.width)
        self.bands = parse_bands(bands, dataset.count, self.name)
        self.dtype = np.dtype(dataset.dtypes[self.bands[0] - 1])
        self.georef = {
            "crs": dataset.crs.to_wkt() if dataset.crs else None,
            "transform": list(dataset.transform.to_gdal()),
            "nodata": dataset.nodata,
        }
        # Fail here, on the client, for a file whose first or last block cannot be decoded
        # (truncated or garbled files); deeper damage surfaces in the task that reads it.
        try:
            last = ((dataset.height - 1, dataset.height), (dataset.width - 1, dataset.width))
            dataset.read(self.bands[0], window=((0, 1), (0, 1)))
            dataset.read(self.bands[0], window=last)
        except Exception as exc:
            reason = " ".join(str(exc).split())
            raise InputError(f"{self.path} is a corrupt or unreadable raster ({reason})") from None

    def _handle(self) -> tuple[Any, Any]:
        return cached_handle(
            ("rasterio", self.path, *file_stamp(self.path)), lambda: open_dataset(self.path)
        )

    def _dataset(self) -> Any:
        return self._handle()[0]

    def _read_box(self, window: Window) -> npt.NDArray[Any]:
        from rasterio.windows import Window as RioWindow

        dataset, lock = self._handle()
        rio_window = RioWindow(window.col_off, window.row_off, window.width, window.height)
        try:
            with lock:
                return np.asarray(dataset.read(list(self.bands), window=rio_window))
        except Exception as exc:
            reason = " ".join(str(exc).split())
            raise InputError(f"{self.path}: cannot read window {window} ({reason})") from None

    def validity(self, max_size: int = 1024) -> Validity | None:
        """Return GDAL's dataset mask at ``<= max_size`` pixels a side (None: all valid)."""
        from rasterio.enums import MaskFlags

        dataset, lock = self._handle()
        flags = [dataset.mask_flag_enums[band - 1] for band in self.bands]
        if all(item == [MaskFlags.all_valid] for item in flags):
            return None
        height, width = self.shape
        factor = max(1.0, max(height, width) / max_size)
        out_shape = (max(1, round(height / factor)), max(1, round(width / factor)))
        with lock:
            mask = dataset.dataset_mask(out_shape=out_shape) > 0
        return Validity(mask, (height / out_shape[0], width / out_shape[1]))
