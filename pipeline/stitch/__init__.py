"""Stage 4: stitch — encode cores and write them into the lock-free Zarr store."""

from __future__ import annotations

from pipeline.stitch.assemble import PROBABILITY_DTYPES, parse_probabilities, to_labels, to_stored
from pipeline.stitch.zarr_writer import (
    DONE,
    PENDING,
    SKIPPED,
    create_store,
    is_store,
    mark_tiles,
    open_store,
    read_attrs,
    set_status,
    tile_counts,
    write_core,
)

__all__ = [
    "DONE",
    "PENDING",
    "PROBABILITY_DTYPES",
    "SKIPPED",
    "create_store",
    "is_store",
    "mark_tiles",
    "open_store",
    "parse_probabilities",
    "read_attrs",
    "set_status",
    "tile_counts",
    "to_labels",
    "to_stored",
    "write_core",
]
