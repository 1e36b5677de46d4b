"""Training windows read through :mod:`pipeline.read`, the one reader edge.

The sampler plans windows from the image shape alone, so a read outside the image is a bug:
:class:`SampleImage` raises instead of mirroring, and returns float32 pixels with a per-pixel
validity mask (nodata, dataset mask, blank slide background). The image is whatever
:func:`pipeline.read.open_source` opens: a GeoTIFF/COG/VRT, a URL or ``/vsi*/`` path, a STAC
item, a slide of any format in :data:`pipeline.read.SLIDE_SUFFIXES`, a Zarr array.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline.errors import InputError
from pipeline.read import Georef, Source, open_source
from pipeline.tile.grid import Window

__all__ = ["ImageSource", "SampleImage", "open_image"]


class ImageSource(Protocol):
    """What the sampler needs from an image: its grid and windowed reads."""

    height: int
    width: int
    bands: tuple[int, ...]
    georef: Georef
    path: str

    def read(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Read a window: ``(bands, h, w)`` float32 pixels and an ``(h, w)`` validity mask."""
        ...

    def close(self) -> None:
        """Release the reader."""
        ...


class SampleImage:
    """A :class:`pipeline.read.Source` seen by the sampler (in-image windows only).

    Parameters
    ----------
    source
        The opened reader.
    """

    def __init__(self, source: Source) -> None:
        self.source = source
        self.path = source.name
        self.height, self.width = source.shape
        self.bands = source.bands
        self.georef = source.georef

    def read(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Read a window inside the image.

        Parameters
        ----------
        row, col
            Top-left pixel of the window.
        height, width
            Window size in pixels.

        Returns
        -------
        pixels, valid
            ``(bands, height, width)`` float32 pixels and an ``(height, width)`` boolean mask,
            False where the pixel holds no data.
        """
        if row < 0 or col < 0 or height <= 0 or width <= 0:
            raise InputError(
                f"window (row={row}, col={col}, {height}x{width}) starts outside {self.path}; "
                "this is a sampler bug"
            )
        if row + height > self.height or col + width > self.width:
            raise InputError(
                f"window (row={row}, col={col}, {height}x{width}) ends outside {self.path} "
                f"({self.height}x{self.width}); this is a sampler bug"
            )
        window = Window(row, col, height, width)
        raw = self.source.read(window)
        return raw.astype(np.float32), self.source.valid_pixels(window, raw)

    def close(self) -> None:
        """Nothing to release: the reader's handle is cached per process and reused."""


def open_image(
    path: str | Path, *, bands: tuple[int, ...] | None = None, level: int = 0
) -> SampleImage:
    """Open an image for sampling through :func:`pipeline.read.open_source`.

    Parameters
    ----------
    path
        Image path or URL (any source :func:`~pipeline.read.open_source` reads).
    bands
        1-based band indexes in model order; all when ``None``.
    level
        Pyramid level for slides (level 0 of a plain GeoTIFF is the GeoTIFF itself).

    Returns
    -------
    SampleImage
        An open reader.
    """
    source = open_source(path, bands=list(bands) if bands else None, level=level or None)
    return SampleImage(source)
