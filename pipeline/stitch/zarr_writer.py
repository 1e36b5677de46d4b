"""The only module that writes the Zarr store: layout, ledger, status.

Layout (one group per input)::

    store.zarr/  attrs: source, model, tile, halo, precision, classes, crs+transform | mpp, status
      probabilities  (K, H, W) chunks (K, tile, tile)   uint8 p*255 | float16 | float32
      labels         (H, W)    chunks (tile, tile)      uint8
      tiles          (rows, cols) chunks (1, 1)         0 pending, 1 done, 2 skipped

A chunk never spans two tiles, so tasks write without locks and rewriting a tile is
idempotent. The ledger is read by value (zarr does not write chunks equal to the fill value,
so chunk existence says nothing).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import OutputExistsError, StoreError
from pipeline.tile.grid import Window

__all__ = [
    "DONE",
    "PENDING",
    "SKIPPED",
    "create_store",
    "is_store",
    "mark_tiles",
    "open_store",
    "read_attrs",
    "set_status",
    "tile_counts",
    "write_core",
]

PENDING, DONE, SKIPPED = 0, 1, 2

_OPEN: dict[tuple[str, str], Any] = {}
_OPEN_LOCK = threading.Lock()

#: Attributes that must match for ``resume`` to reuse a store.
RESUME_KEYS = ("model_sha256", "tile", "halo", "shape", "classes", "probabilities_dtype")


def is_store(path: str | Path) -> bool:
    """Whether ``path`` is a Zarr v3 group."""
    return (Path(path) / "zarr.json").is_file()


def read_attrs(path: str | Path) -> dict[str, Any]:
    """Return the group attributes of a store."""
    meta = json.loads((Path(path) / "zarr.json").read_text())
    attrs: dict[str, Any] = meta.get("attributes", {})
    return attrs


def _check_resume(path: Path, attrs: dict[str, Any]) -> None:
    old = read_attrs(path)
    fingerprint = {
        "model_sha256": old.get("model", {}).get("sha256"),
        "tile": old.get("tile"),
        "halo": old.get("halo"),
        "shape": old.get("shape"),
        "classes": old.get("classes"),
        "probabilities_dtype": old.get("probabilities_dtype"),
    }
    wanted = {
        "model_sha256": attrs["model"]["sha256"],
        "tile": attrs["tile"],
        "halo": attrs["halo"],
        "shape": attrs["shape"],
        "classes": attrs["classes"],
        "probabilities_dtype": attrs["probabilities_dtype"],
    }
    diff = [
        f"{k} {fingerprint[k]!r} != {wanted[k]!r}"
        for k in RESUME_KEYS
        if fingerprint[k] != wanted[k]
    ]
    if diff:
        raise StoreError(
            f"cannot resume {path}: it was made with other settings ({'; '.join(diff)}); "
            "use --overwrite to replace it"
        )


def create_store(
    path: str | Path,
    *,
    shape: tuple[int, int],
    outputs: int,
    tile: int,
    grid_shape: tuple[int, int],
    probabilities: str,
    attrs: dict[str, Any],
    resume: bool = False,
    overwrite: bool = False,
) -> npt.NDArray[np.uint8]:
    """Create (or reopen for ``resume``) the store and return its ledger as an array.

    Raises
    ------
    OutputExistsError
        The store exists and neither ``resume`` nor ``overwrite`` was given.
    StoreError
        The store cannot be written, or ``resume`` finds one made with other settings.
    """
    import zarr

    store = Path(path)
    if store.exists():
        if not is_store(store):
            raise OutputExistsError(
                f"{store} exists and is not a Zarr store; choose another --out or remove it"
            )
        if resume:
            _check_resume(store, attrs)
            group = zarr.open_group(str(store), mode="r+")
            group.attrs.update({**attrs, "status": "running"})
            tiles: Any = group["tiles"]
            return np.asarray(tiles[...], dtype=np.uint8)
        if not overwrite:
            raise OutputExistsError(
                f"{store} already exists; use --overwrite to replace it or --resume to finish it"
            )
        shutil.rmtree(store)
    parent = store.parent if str(store.parent) else Path()
    if not parent.is_dir():
        raise StoreError(f"cannot create {store}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise StoreError(f"cannot create {store}: directory {parent} is not writable")
    try:
        group = zarr.open_group(str(store), mode="w", attributes={**attrs, "status": "running"})
        rows, cols = shape
        group.create_array(
            "probabilities",
            shape=(outputs, rows, cols),
            chunks=(outputs, tile, tile),
            dtype=probabilities,
            fill_value=0,
            dimension_names=("class", "y", "x"),
        )
        group.create_array(
            "labels",
            shape=(rows, cols),
            chunks=(tile, tile),
            dtype="uint8",
            fill_value=0,
            dimension_names=("y", "x"),
        )
        group.create_array(
            "tiles", shape=grid_shape, chunks=(1, 1), dtype="uint8", fill_value=PENDING
        )
    except OSError as exc:
        raise StoreError(
            f"cannot create {store}: directory {parent} is not writable ({exc.strerror or exc}); "
            "choose another --out"
        ) from None
    return np.zeros(grid_shape, np.uint8)


def open_store(path: str, run_id: str = "") -> Any:
    """Return this process's handle on the store group, opened once per process and run.

    ``run_id`` (a fresh token in the attributes of every run) keeps a worker that served an
    earlier run on the same path from writing through stale array metadata after an overwrite.
    """
    import zarr

    key = (path, run_id)
    with _OPEN_LOCK:
        if key not in _OPEN:
            _OPEN[key] = zarr.open_group(path, mode="r+")
        return _OPEN[key]


def write_core(
    path: str,
    core: Window,
    probabilities: npt.NDArray[Any],
    labels: npt.NDArray[np.uint8],
    run_id: str = "",
) -> None:
    """Write one tile's core: exactly its own chunks, so no lock is needed."""
    group = open_store(path, run_id)
    rows, cols = core.to_slices()
    group["probabilities"][:, rows, cols] = probabilities
    group["labels"][rows, cols] = labels


def mark_tiles(path: str, indices: list[tuple[int, int]], state: int, run_id: str = "") -> None:
    """Set ledger entries (one chunk each)."""
    group = open_store(path, run_id)
    ledger = group["tiles"]
    for row, col in indices:
        ledger[row, col] = state


def set_status(path: str, status: str, **attrs: Any) -> None:
    """Update the ``status`` attribute (and any others), from the metadata on disk."""
    import zarr

    group = zarr.open_group(path, mode="r+")
    group.attrs.update({**attrs, "status": status})


def tile_counts(path: str | Path) -> dict[str, int]:
    """Count tiles done / skipped / left in a store's ledger."""
    import zarr

    ledger = np.asarray(zarr.open_array(str(Path(path) / "tiles"), mode="r")[...])
    done = int((ledger == DONE).sum())
    skipped = int((ledger == SKIPPED).sum())
    return {
        "total": int(ledger.size),
        "done": done,
        "skipped": skipped,
        "left": int(ledger.size) - done - skipped,
    }
