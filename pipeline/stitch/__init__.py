"""Stage 4: stitch — assemble cores into what the store holds (pure).

Writing happens in :mod:`pipeline.store`, the one module that opens Zarr; its names are
re-exported here so ``from pipeline.stitch import create_store`` keeps working.
"""

from __future__ import annotations

from pipeline.stitch.assemble import to_labels
from pipeline.store import (
    DONE,
    PENDING,
    PROBABILITY_DTYPES,
    SKIPPED,
    create_store,
    is_store,
    mark_tiles,
    open_store,
    parse_probabilities,
    read_attrs,
    set_status,
    tile_counts,
    to_stored,
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
