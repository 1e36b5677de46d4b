"""Stage 2: tile — plan the overlapping tile grid (reads no pixels)."""

from __future__ import annotations

from pipeline.tile.grid import InputSizes, Patch, TileGrid, TilePlan, Window
from pipeline.tile.overlap import reflect_index, reflect_pad

__all__ = [
    "InputSizes",
    "Patch",
    "TileGrid",
    "TilePlan",
    "Window",
    "reflect_index",
    "reflect_pad",
]
