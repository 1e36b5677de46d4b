"""The one reader interface every source implements.

A :class:`Source` is a small picklable description (a path and options): tasks carry it to the
workers, and each worker process opens the file once (:func:`cached_handle`) and keeps the
handle for every later task. Reads are *boundless*: a window that reaches outside the image is
filled by mirroring (:func:`pipeline.tile.reflect_index`), so every tile and the whole-image
reference see the same pixels.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import ConfigError
from pipeline.read.georef import Georef
from pipeline.tile.grid import Window
from pipeline.tile.overlap import reflect_index

__all__ = ["Source", "Validity", "cached_handle", "file_stamp", "parse_bands"]

_HANDLES: dict[tuple[Any, ...], tuple[Any, threading.Lock]] = {}
_HANDLES_LOCK = threading.Lock()


def file_stamp(path: str) -> tuple[int, int]:
    """``(mtime_ns, size)`` of a file, so a cached handle is not reused after a rewrite."""
    try:
        stat = Path(path).stat()
    except OSError:
        return (0, 0)
    return (stat.st_mtime_ns, stat.st_size)


def cached_handle(key: tuple[Any, ...], opener: Callable[[], Any]) -> tuple[Any, threading.Lock]:
    """Return this process's handle for ``key`` (opened once) and the lock that guards it.

    File handles of GDAL and OpenSlide are not safe to share between threads, so every read
    through a cached handle holds its lock; a worker still overlaps reading with the model
    because the model runs outside the lock.
    """
    with _HANDLES_LOCK:
        if key not in _HANDLES:
            _HANDLES[key] = (opener(), threading.Lock())
        return _HANDLES[key]


class Validity:
    """A low-resolution validity mask: ``mask[i, j]`` covers ``scale`` x ``scale`` pixels.

    Parameters
    ----------
    mask
        Boolean array, True where the image holds data (or tissue).
    scale
        Image pixels per mask pixel, as ``(rows, cols)``.
    exact
        Each mask pixel is True exactly when a pixel under it is valid (not sampled).
    """

    def __init__(
        self, mask: npt.NDArray[np.bool_], scale: tuple[float, float], *, exact: bool = False
    ) -> None:
        self.mask = mask
        self.scale = scale
        self.exact = exact

    def any(self, window: Window, margin: int = 0) -> bool:
        """Whether any valid pixel lies in ``window`` grown by ``margin`` pixels.

        The mask pixel under each window edge is included; for a mask that is not ``exact``
        (a sampled one) one more mask pixel around too, so the test errs towards "valid" (a
        tile is only skipped when it is surely empty).
        """
        srow, scol = self.scale
        extra = 0 if self.exact else 1
        r0 = int(np.floor((window.row_off - margin) / srow)) - extra
        r1 = int(np.ceil((window.row_stop + margin) / srow)) + extra
        c0 = int(np.floor((window.col_off - margin) / scol)) - extra
        c1 = int(np.ceil((window.col_stop + margin) / scol)) + extra
        block = self.mask[max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)]
        return bool(block.any())


def parse_bands(bands: Any, count: int, source: str) -> tuple[int, ...]:
    """Validate 1-based band numbers against a source with ``count`` bands.

    ``None`` selects every band. A string ``"1,2,3"`` is accepted too.
    """
    if bands is None:
        return tuple(range(1, count + 1))
    if isinstance(bands, str):
        try:
            bands = [int(item) for item in bands.split(",") if item.strip()]
        except ValueError:
            raise ConfigError(f"bands {bands!r} are not comma-separated integers") from None
    chosen = tuple(int(item) for item in bands)
    bad = [item for item in chosen if not 1 <= item <= count]
    if bad or not chosen:
        raise ConfigError(
            f"bands {list(chosen)} out of range for {source}, which has {count} band(s) "
            f"(valid: 1..{count})"
        )
    return chosen


class Source:
    """Base class of every reader.

    Subclasses set ``name``, ``shape`` (rows, cols of the working frame), ``bands`` (1-based
    band numbers read), ``dtype`` and ``georef`` in ``__init__``, and implement
    :meth:`_read_box` (an in-image box) and optionally :meth:`validity`.
    """

    name: str
    shape: tuple[int, int]
    bands: tuple[int, ...]
    dtype: np.dtype[Any]
    georef: Georef
    #: Value marking pixels without data (GeoTIFF nodata), ``None`` when there is none.
    nodata: float | None = None

    @property
    def count(self) -> int:
        """Number of bands a read returns."""
        return len(self.bands)

    def read(self, window: Window) -> npt.NDArray[Any]:
        """Read ``window`` as ``(bands, height, width)``, mirroring where it leaves the image."""
        height, width = self.shape
        rows = reflect_index(window.row_off, window.row_stop, height)
        cols = reflect_index(window.col_off, window.col_stop, width)
        r0, r1 = int(rows.min()), int(rows.max()) + 1
        c0, c1 = int(cols.min()), int(cols.max()) + 1
        box = self._read_box(Window(r0, c0, r1 - r0, c1 - c0))
        inside = (
            window.row_off == r0
            and window.col_off == c0
            and window.height == r1 - r0
            and window.width == c1 - c0
        )
        if inside:
            return box
        return box[:, (rows - r0)[:, None], (cols - c0)[None, :]]

    def _read_box(self, window: Window) -> npt.NDArray[Any]:
        raise NotImplementedError

    def validity(self, max_size: int = 1024) -> Validity | None:
        """Return a low-resolution validity mask, or ``None`` when every pixel is valid."""
        return None

    def valid_pixels(self, window: Window, pixels: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
        """Full-resolution validity of an in-image ``window`` whose ``pixels`` were just read.

        The default: every pixel holds data. GeoTIFFs use nodata / the dataset mask, slides
        call blank (white or transparent) background invalid.
        """
        return np.ones((window.height, window.width), dtype=bool)

    def thumbnail(self, max_size: int = 1024) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
        """Return a whole-image overview of ``<= max_size`` pixels a side, and its validity.

        Returns ``(bands, h, w)`` pixels and an ``(h, w)`` mask. The default samples every
        ``step``-th pixel (nearest) one strip at a time; GeoTIFFs and slides use their
        overviews, so a gigapixel image costs one small read.
        """
        height, width = self.shape
        step = max(1, int(np.ceil(max(height, width) / max_size)))
        rows = range(0, height, step)
        strips = []
        for r0 in range(0, height, step * 256):
            r1 = min(height, r0 + step * 256)
            strip = self._read_box(Window(r0, 0, r1 - r0, width))
            strips.append(strip[:, ::step, ::step])
        pixels = np.concatenate(strips, axis=1)[:, : len(rows)]
        return pixels, np.ones(pixels.shape[1:], dtype=bool)

    def describe(self) -> dict[str, Any]:
        """Return a JSON-able summary for ``gigaseg info``."""
        return {
            "source": self.name,
            "kind": type(self).__name__,
            "shape": list(self.shape),
            "bands": list(self.bands),
            "dtype": str(self.dtype),
            "nodata": self.nodata,
            **self.georef.to_attrs(),
        }
