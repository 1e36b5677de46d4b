"""What a gigaseg store holds: array names, ledger states and status values (no I/O).

Layout (one Zarr v3 group per input)::

    scene.zarr/  attrs: source, model, tile, halo, precision, classes, crs + transform | mpp,
                        run_id, status, software
      probabilities  (class, y, x) chunks (K, tile, tile)  uint8 p*255 | float16 | float32
      labels         (y, x)        chunks (tile, tile)     uint8 class ids, 0 = background
      tiles          (row, col)    chunks (1, 1)           0 pending, 1 done, 2 skipped

A chunk never spans two tiles, so tasks write without locks and rewriting a tile is
idempotent. The ledger is read by value: zarr does not write chunks equal to the fill value,
so a missing chunk says nothing about whether a tile was done.
"""

from __future__ import annotations

__all__ = [
    "COMPLETE",
    "DONE",
    "LABELS",
    "LEDGER_STATES",
    "PENDING",
    "PROBABILITIES",
    "RUNNING",
    "SKIPPED",
    "TILES",
]

#: Array names inside the group.
PROBABILITIES, LABELS, TILES = "probabilities", "labels", "tiles"

#: Ledger states of one tile in ``tiles``.
PENDING, DONE, SKIPPED = 0, 1, 2
LEDGER_STATES = {"pending": PENDING, "done": DONE, "skipped": SKIPPED}

#: ``status`` attribute values: ``complete`` only once every tile is done or skipped.
RUNNING, COMPLETE = "running", "complete"
