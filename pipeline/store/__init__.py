"""The store: the one module that opens Zarr (layout, attrs, ledger, encoding, status).

Stages and commands reach a store only through this package: ``pipeline.stitch`` assembles
cores (pure), ``pipeline.predict`` writes them here, and vectorize, evaluate, preview,
export, ``status`` and ``info`` read through :func:`open_group` / :func:`read_attrs`.
"""

from __future__ import annotations

from pipeline.store.encoding import PROBABILITY_DTYPES, from_stored, parse_probabilities, to_stored
from pipeline.store.layout import (
    COMPLETE,
    DONE,
    LABELS,
    LEDGER_STATES,
    PENDING,
    PROBABILITIES,
    RUNNING,
    SKIPPED,
    TILES,
    TISSUE,
    class_channel,
    class_names,
)
from pipeline.store.pyramid import PYRAMID, build_labels_pyramid, ngff_attrs
from pipeline.store.resume import RESUME_KEYS, check_resume, fingerprint, source_id
from pipeline.store.zarr_store import (
    complete_store,
    consolidate,
    create_store,
    is_store,
    is_zarr_array,
    mark_tiles,
    open_array,
    open_group,
    open_store,
    read_attrs,
    read_ledger,
    read_mask,
    set_status,
    tile_counts,
    write_core,
    write_mask,
)

__all__ = [
    "COMPLETE",
    "DONE",
    "LABELS",
    "LEDGER_STATES",
    "PENDING",
    "PROBABILITIES",
    "PROBABILITY_DTYPES",
    "PYRAMID",
    "RESUME_KEYS",
    "RUNNING",
    "SKIPPED",
    "TILES",
    "TISSUE",
    "build_labels_pyramid",
    "check_resume",
    "class_channel",
    "class_names",
    "complete_store",
    "consolidate",
    "create_store",
    "fingerprint",
    "from_stored",
    "is_store",
    "is_zarr_array",
    "mark_tiles",
    "ngff_attrs",
    "open_array",
    "open_group",
    "open_store",
    "parse_probabilities",
    "read_attrs",
    "read_ledger",
    "read_mask",
    "set_status",
    "source_id",
    "tile_counts",
    "to_stored",
    "write_core",
    "write_mask",
]
