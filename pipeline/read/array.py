"""NumPy and Zarr arrays as sources (tests, chained runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import InputError
from pipeline.read.georef import Georef
from pipeline.read.source import Source, cached_handle, parse_bands
from pipeline.tile.grid import Window

__all__ = ["ArraySource", "ZarrSource"]


def _as_bands_first(shape: tuple[int, ...], name: str) -> tuple[int, int, int]:
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    if len(shape) == 3:
        return shape[0], shape[1], shape[2]
    raise InputError(f"{name} has shape {shape}; expected (rows, cols) or (bands, rows, cols)")


class ArraySource(Source):
    """An in-memory array ``(bands, rows, cols)`` or ``(rows, cols)``.

    Parameters
    ----------
    array
        The image.
    bands
        1-based band numbers to read (all by default).
    """

    def __init__(self, array: npt.NDArray[Any], bands: Any = None) -> None:
        count, rows, cols = _as_bands_first(array.shape, "the array")
        self.array = array.reshape(count, rows, cols)
        self.name = "<array>"
        self.shape = (rows, cols)
        self.bands = parse_bands(bands, count, self.name)
        self.dtype = np.dtype(array.dtype)
        self.georef = Georef.pixel()

    def _read_box(self, window: Window) -> npt.NDArray[Any]:
        rows, cols = window.to_slices()
        index = [band - 1 for band in self.bands]
        return np.asarray(self.array[index, rows, cols])


class ZarrSource(Source):
    """A Zarr array on disk ``(bands, rows, cols)`` or ``(rows, cols)``, opened once per process.

    Parameters
    ----------
    path
        Path of the array (or of a group holding exactly one array, or an ``image`` array).
    bands
        1-based band numbers to read (all by default).
    """

    def __init__(self, path: str | Path, bands: Any = None) -> None:
        self.path = str(path)
        self.name = self.path
        array = self._array()
        count, rows, cols = _as_bands_first(tuple(array.shape), self.path)
        self.shape = (rows, cols)
        self.bands = parse_bands(bands, count, self.name)
        self.dtype = np.dtype(array.dtype)
        self.georef = Georef.from_attrs(dict(array.attrs))

    def _array(self) -> Any:
        def opener() -> Any:
            from pipeline.store import open_array

            return open_array(self.path)

        return cached_handle(("zarr", self.path), opener)[0]

    def _read_box(self, window: Window) -> npt.NDArray[Any]:
        array = self._array()
        rows, cols = window.to_slices()
        if array.ndim == 2:
            return np.asarray(array[rows, cols])[None]
        index = [band - 1 for band in self.bands]
        if index == list(range(index[0], index[-1] + 1)):
            return np.asarray(array[index[0] : index[-1] + 1, rows, cols])
        return np.stack([np.asarray(array[i, rows, cols]) for i in index])
