"""Windowed pixel readers for training: GeoTIFF/COG/VRT through rasterio, slides through tiffslide.

An I/O module. Every read names a window that must lie inside the image: the sampler plans
windows from the image shape alone and a read outside the image is a bug, so it raises instead of
padding. No reader ever loads a whole image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
from affine import Affine
from pyproj import CRS

from pipeline.errors import InputError

__all__ = ["GeoTiffImage", "ImageSource", "SlideImage", "open_image"]

#: Suffixes read as whole-slide images (through tiffslide) rather than as GeoTIFFs.
SLIDE_SUFFIXES = frozenset({".svs", ".ndpi", ".scn", ".bif", ".mrxs"})


class ImageSource(Protocol):
    """What the sampler needs from an image: its grid and windowed reads."""

    height: int
    width: int
    bands: tuple[int, ...]
    crs: CRS | None
    transform: Affine
    path: Path

    def read(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Read a window: ``(bands, h, w)`` float32 pixels and an ``(h, w)`` validity mask."""
        ...

    def close(self) -> None:
        """Release the file handle."""
        ...


def _check_window(source: ImageSource, row: int, col: int, height: int, width: int) -> None:
    if row < 0 or col < 0 or height <= 0 or width <= 0:
        raise InputError(
            f"window (row={row}, col={col}, {height}x{width}) starts outside {source.path}; "
            "this is a sampler bug"
        )
    if row + height > source.height or col + width > source.width:
        raise InputError(
            f"window (row={row}, col={col}, {height}x{width}) ends outside {source.path} "
            f"({source.height}x{source.width}); this is a sampler bug"
        )


class GeoTiffImage:
    """A GeoTIFF/COG/VRT opened once; windowed reads of selected bands.

    Parameters
    ----------
    path
        The raster file.
    bands
        1-based band indexes, in the order the model expects; all bands when ``None``.
    """

    def __init__(self, path: str | Path, bands: tuple[int, ...] | None = None) -> None:
        import rasterio

        self.path = Path(path)
        try:
            self._dataset: Any = rasterio.open(self.path)
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(f"cannot open image {self.path}: {exc}") from exc
        count = self._dataset.count
        self.bands = tuple(bands) if bands else tuple(range(1, count + 1))
        bad = [band for band in self.bands if not 1 <= band <= count]
        if bad:
            self._dataset.close()
            raise InputError(
                f"bands {bad} do not exist in {self.path}, which has bands 1..{count}; fix 'bands'"
            )
        self.height = int(self._dataset.height)
        self.width = int(self._dataset.width)
        self.crs = CRS.from_user_input(self._dataset.crs) if self._dataset.crs else None
        self.transform = Affine(*tuple(self._dataset.transform)[:6])
        self._nodata = self._dataset.nodata
        self._has_mask = any(
            flag.name in {"per_dataset", "alpha"} for flag in self._dataset.mask_flag_enums[0]
        )

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
            False where the pixel is nodata (all bands equal the nodata value) or masked.
        """
        from rasterio.windows import Window

        _check_window(self, row, col, height, width)
        window = Window(col, row, width, height)
        pixels = self._dataset.read(list(self.bands), window=window).astype(np.float32)
        if self._nodata is not None:
            valid = ~np.all(pixels == np.float32(self._nodata), axis=0)
        elif self._has_mask:
            valid = self._dataset.dataset_mask(window=window) > 0
        else:
            valid = np.ones((height, width), dtype=bool)
        return pixels, valid

    def close(self) -> None:
        """Close the dataset."""
        self._dataset.close()


class SlideImage:
    """A whole-slide image read through tiffslide at one pyramid level.

    Coordinates (``transform``) map level pixels to level-0 pixels, so vector labels for slides
    are given in level-0 pixel coordinates (QuPath's convention), with no CRS.

    Parameters
    ----------
    path
        The slide file.
    level
        The pyramid level to read.
    bands
        1-based channels among R, G, B (A is dropped); all three when ``None``.
    """

    def __init__(
        self, path: str | Path, level: int = 0, bands: tuple[int, ...] | None = None
    ) -> None:
        import tiffslide

        self.path = Path(path)
        try:
            self._slide: Any = tiffslide.TiffSlide(str(self.path))
        except Exception as exc:  # tiffslide raises many types for unreadable files
            raise InputError(f"cannot open slide {self.path}: {exc}") from exc
        if not 0 <= level < self._slide.level_count:
            raise InputError(
                f"level {level} does not exist in {self.path} "
                f"(levels 0..{self._slide.level_count - 1}); fix 'level'"
            )
        self.level = level
        self.bands = tuple(bands) if bands else (1, 2, 3)
        if any(not 1 <= band <= 3 for band in self.bands):
            raise InputError(f"slide bands must be among 1, 2, 3 (R, G, B); got {self.bands}")
        self.width, self.height = (int(v) for v in self._slide.level_dimensions[level])
        downsample = float(self._slide.level_downsamples[level])
        self.crs: CRS | None = None
        self.transform = Affine.scale(downsample)
        self._downsample = downsample

    def read(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Read a window inside the level; see :meth:`GeoTiffImage.read`.

        Fully white (255, 255, 255) or fully transparent pixels count as invalid background.
        """
        _check_window(self, row, col, height, width)
        location = (round(col * self._downsample), round(row * self._downsample))
        region = np.asarray(
            self._slide.read_region(location, self.level, (width, height), as_array=True)
        )
        rgb = region[..., :3]
        valid = ~np.all(rgb >= 250, axis=-1)
        if region.shape[-1] == 4:
            valid &= region[..., 3] > 0
        pixels = np.moveaxis(rgb, -1, 0)[[band - 1 for band in self.bands]].astype(np.float32)
        return pixels, valid

    def close(self) -> None:
        """Close the slide."""
        self._slide.close()


def open_image(
    path: str | Path, *, bands: tuple[int, ...] | None = None, level: int = 0
) -> GeoTiffImage | SlideImage:
    """Open an image for sampling: a slide by suffix, anything else through rasterio.

    Parameters
    ----------
    path
        Image file.
    bands
        1-based band indexes in model order; all when ``None``.
    level
        Pyramid level for slides (ignored for GeoTIFFs).

    Returns
    -------
    GeoTiffImage or SlideImage
        An open reader; call ``close()`` when done.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"image {path} does not exist; check the path in the training config")
    if path.suffix.lower() in SLIDE_SUFFIXES:
        return SlideImage(path, level=level, bands=bands)
    return GeoTiffImage(path, bands=bands)
