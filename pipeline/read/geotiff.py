"""GeoTIFF / COG / VRT through rasterio, one dataset handle per worker process."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import InputError, ReadError
from pipeline.read.blocks import block_validity
from pipeline.read.georef import Georef
from pipeline.read.location import (
    is_remote,
    location_exists,
    redact,
    redact_text,
    remote_env,
    remote_hint,
    to_gdal_path,
)
from pipeline.read.source import Source, Validity, cached_handle, file_stamp, parse_bands
from pipeline.tile.grid import Window

__all__ = [
    "BLOCK_CACHE_MB",
    "GeoTiffSource",
    "bound_block_cache",
    "gdal_reason",
    "open_dataset",
    "raster_handle",
    "read_window",
]

#: GDAL's block cache in a reading process, in MB (``GDAL_CACHEMAX`` in the environment wins).
#: GDAL's default is 5% of RAM, and every block a run decodes stays cached up to it: on a 23 GB
#: node a 24576^2 run held its whole 600 MB source (peak RSS 1.45x that of 8192^2). A task
#: reads each window once; what a cache saves is a neighbour's halo blocks, a few MB.
BLOCK_CACHE_MB = 64


def gdal_reason(exc: BaseException) -> str:
    """GDAL's own message for a failed call, on one line, without credentials.

    rasterio raises ``RasterioIOError("Read or write failed. See previous exception for
    details.")`` from the ``CPLE_*`` error that holds GDAL's message: walk the chain to it.
    """
    messages: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(messages) < 4:
        text = " ".join(str(seen).split())
        if text and "See previous exception" not in text and text not in messages:
            messages.append(text)
        seen = seen.__cause__ or seen.__context__
    return redact_text("; ".join(messages) or type(exc).__name__)


@functools.cache
def bound_block_cache() -> int | None:
    """Set this process's GDAL block cache to :data:`BLOCK_CACHE_MB` (once; process-wide).

    Returns the MB set, or None when the user's ``GDAL_CACHEMAX`` is kept.
    """
    if os.environ.get("GDAL_CACHEMAX"):
        return None
    from rasterio.env import set_gdal_config

    set_gdal_config("GDAL_CACHEMAX", BLOCK_CACHE_MB * 1024 * 1024)  # an int is bytes here
    return BLOCK_CACHE_MB


def open_dataset(path: str) -> Any:
    """Open ``path`` (local, URL or ``/vsi*/``) with rasterio; failures become one line.

    Remote locations are opened under :func:`~pipeline.read.location.remote_env`. The
    process's GDAL block cache is bounded first (:func:`bound_block_cache`), so a reader's
    memory does not grow with the image.
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    bound_block_cache()
    if not location_exists(path):
        raise InputError(f"{path} does not exist; check the path")
    try:
        with warnings.catch_warnings(), remote_env(path):
            # A plain (non-geo) TIFF is fine: it is processed in pixel coordinates.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(to_gdal_path(path))
    except RasterioIOError as exc:
        reason = gdal_reason(exc)
        hint = remote_hint(reason) if is_remote(path) else ""
        raise InputError(
            f"{redact(path)} is not a readable raster image ({reason})"
            + (f": {hint}" if hint else "")
        ) from None


def raster_handle(path: str) -> tuple[Any, Any]:
    """Return this process's dataset for ``path`` (opened once, reopened after a local rewrite)."""
    return cached_handle(("rasterio", path, *file_stamp(path)), lambda: open_dataset(path))


def read_window(path: str, bands: Sequence[int], window: Window) -> npt.NDArray[Any]:
    """Read an in-image ``window`` of ``bands`` from the raster at ``path``.

    Raises
    ------
    ReadError
        One line naming the file (without credentials), the window and GDAL's message.
    """
    from rasterio.windows import Window as RioWindow

    dataset, lock = raster_handle(path)
    rio_window = RioWindow(window.col_off, window.row_off, window.width, window.height)
    try:
        with lock, remote_env(path):
            return np.asarray(dataset.read(list(bands), window=rio_window))
    except Exception as exc:
        reason = gdal_reason(exc)
    # Raised outside the handler, so the error carries no __context__: Dask pickles an error
    # with its chained causes (tblib), and rasterio's CPLE_* errors do not unpickle, which
    # would turn this one line into a generic Exception on the client.
    raise ReadError(
        f"{redact(path)}: cannot read window rows {window.row_off}:{window.row_stop}, "
        f"cols {window.col_off}:{window.col_stop} ({reason})"
    )


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
    mask, computed per block of the file (:func:`pipeline.read.blocks.block_validity`): exact
    at block resolution, so a tile is skipped only when none of its pixels holds data.
    """

    def __init__(self, path: str | Path, bands: Any = None) -> None:
        self.path = str(path)
        self.name = redact(self.path)
        dataset = self._dataset()
        self.shape = (dataset.height, dataset.width)
        self.bands = parse_bands(bands, dataset.count, self.name)
        self.dtype = np.dtype(dataset.dtypes[self.bands[0] - 1])
        self.georef = Georef.from_dataset(dataset)
        self.nodata = dataset.nodata
        # Fail here, on the client, for a file whose first or last block cannot be decoded
        # (truncated or garbled files); deeper damage surfaces in the task that reads it.
        try:
            last = ((dataset.height - 1, dataset.height), (dataset.width - 1, dataset.width))
            with remote_env(self.path):
                dataset.read(self.bands[0], window=((0, 1), (0, 1)))
                dataset.read(self.bands[0], window=last)
        except Exception as exc:
            raise InputError(
                f"{self.name} is a corrupt or unreadable raster ({gdal_reason(exc)})"
            ) from None

    def _handle(self) -> tuple[Any, Any]:
        return raster_handle(self.path)

    def _dataset(self) -> Any:
        return self._handle()[0]

    def _read_box(self, window: Window) -> npt.NDArray[Any]:
        return read_window(self.path, self.bands, window)

    def valid_pixels(self, window: Window, pixels: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
        """Return False where every band equals nodata, or where GDAL's dataset mask is 0."""
        from rasterio.enums import MaskFlags
        from rasterio.windows import Window as RioWindow

        if self.nodata is not None:
            return ~np.all(pixels == np.asarray(self.nodata, dtype=pixels.dtype), axis=0)
        dataset, lock = self._handle()
        flags = dataset.mask_flag_enums[self.bands[0] - 1]
        if not any(flag in (MaskFlags.per_dataset, MaskFlags.alpha) for flag in flags):
            return np.ones((window.height, window.width), dtype=bool)
        rio_window = RioWindow(window.col_off, window.row_off, window.width, window.height)
        try:
            with lock, remote_env(self.path):
                mask: npt.NDArray[np.bool_] = dataset.dataset_mask(window=rio_window) > 0
                return mask
        except Exception as exc:
            reason = gdal_reason(exc)
        raise ReadError(  # outside the handler: see read_window
            f"{self.name}: cannot read the mask of window rows {window.row_off}:"
            f"{window.row_stop}, cols {window.col_off}:{window.col_stop} ({reason})"
        )

    def thumbnail(self, max_size: int = 1024) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
        """Average-resampled overview (GDAL reads the file's overviews when it has them)."""
        from rasterio.enums import Resampling

        dataset, lock = self._handle()
        height, width = self.shape
        scale = min(1.0, max_size / max(height, width))
        out_shape = (max(1, round(height * scale)), max(1, round(width * scale)))
        try:
            with lock, remote_env(self.path):
                pixels = dataset.read(
                    list(self.bands),
                    out_shape=(self.count, *out_shape),
                    resampling=Resampling.average,
                )
                valid = dataset.read_masks(self.bands[0], out_shape=out_shape) > 0
                return np.asarray(pixels), valid
        except Exception as exc:
            reason = gdal_reason(exc)
        raise ReadError(
            f"{self.name}: cannot read a {out_shape[0]}x{out_shape[1]} overview of the "
            f"{height}x{width} image ({reason})"
        )

    def validity(self, max_size: int = 1024) -> Validity | None:
        """Return which of the file's blocks hold data, exactly (None: every pixel is valid).

        Never a sampled mask: skipping trusts it (:mod:`pipeline.read.blocks`); ``max_size``
        is ignored.
        """
        from rasterio.enums import MaskFlags

        dataset, lock = self._handle()
        flags = [dataset.mask_flag_enums[band - 1] for band in self.bands]
        if all(item == [MaskFlags.all_valid] for item in flags):
            return None
        with lock, remote_env(self.path):
            mask, cell = block_validity(dataset, self.bands, self.name)
        return Validity(mask, (float(cell[0]), float(cell[1])), exact=True)
