"""The only module that opens Zarr: create, open, write, ledger, status.

Every other module reaches a store through these functions, so the layout
(:mod:`pipeline.store.layout`), the run id and the status rules live in one place.

Run ids: every run writes a fresh ``run_id`` into the attributes. Worker handles are cached
per ``(path, run_id)``, so a worker that served an earlier run on the same path never writes
through stale array metadata after an overwrite, and :func:`set_status` with ``run_id``
refuses to mark a store that another run has since taken over.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import InputError, OutputExistsError, StoreError
from pipeline.store import cf
from pipeline.store.layout import (
    COMPLETE,
    DONE,
    LABELS,
    PENDING,
    PROBABILITIES,
    RUNNING,
    SKIPPED,
    TILES,
)
from pipeline.store.resume import check_resume
from pipeline.store.verify import ALWAYS_WRITTEN
from pipeline.tile.grid import Window

__all__ = [
    "complete_store",
    "consolidate",
    "create_store",
    "is_store",
    "is_zarr_array",
    "mark_tiles",
    "open_array",
    "open_group",
    "open_store",
    "read_attrs",
    "read_ledger",
    "read_mask",
    "set_status",
    "tile_counts",
    "write_core",
    "write_mask",
]

_OPEN: dict[tuple[str, str], Any] = {}
_OPEN_LOCK = threading.Lock()


def is_store(path: str | Path) -> bool:
    """Whether ``path`` is a Zarr v3 group (a store, or any other group).

    Raises
    ------
    StoreError
        ``path`` has a ``zarr.json`` that cannot be parsed: a damaged store is not "no store"
        (which would send it down another reader, or let ``--overwrite`` delete it unseen).
    """
    meta = Path(path) / "zarr.json"
    if not meta.is_file():
        return False
    return bool(_metadata(meta).get("node_type") == "group")


def _parses(store: Path) -> bool:
    try:
        _metadata(store / "zarr.json")
    except StoreError:
        return False
    return True


def _metadata(meta: Path) -> dict[str, Any]:
    """Parse a ``zarr.json``; one line naming it when it is corrupt."""
    try:
        data = json.loads(meta.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:120]
        raise StoreError(
            f"{meta} is corrupt ({type(exc).__name__}: {reason}); restore it from a backup, "
            "or rerun gigaseg predict with --overwrite to rebuild the store"
        ) from None
    if not isinstance(data, dict):
        raise StoreError(
            f"{meta} is corrupt (not a JSON object); restore it or rerun with --overwrite"
        )
    return data


def is_zarr_array(path: str | Path) -> bool:
    """Whether ``path`` is a single Zarr v3 array."""
    meta = Path(path) / "zarr.json"
    try:
        return meta.is_file() and bool(json.loads(meta.read_text()).get("node_type") == "array")
    except (OSError, ValueError):
        return False


def read_attrs(path: str | Path) -> dict[str, Any]:
    """Return the attributes of a store (or of any Zarr v3 node), read from its metadata.

    Raises
    ------
    StoreError
        ``path`` holds no readable ``zarr.json``.
    """
    meta = Path(path) / "zarr.json"
    if not meta.is_file():
        raise StoreError(f"{path} is not a Zarr store (no zarr.json); check the path")
    attrs = _metadata(meta).get("attributes", {})
    return dict(attrs) if isinstance(attrs, dict) else {}


def open_group(path: str | Path, *, mode: str = "r") -> Any:
    """Open a store's Zarr group (read-only by default) for the stages that read it.

    Raises
    ------
    InputError
        ``path`` is not a Zarr group.
    """
    import zarr

    try:
        return zarr.open_group(str(path), mode=mode)  # type: ignore[arg-type]
    except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"{path} is not a readable Zarr store ({type(exc).__name__}: {exc}); "
            "give a store written by gigaseg predict"
        ) from None


def open_array(path: str | Path) -> Any:
    """Open a Zarr array (or a group's only array / its ``image`` array) read-only.

    Raises
    ------
    InputError
        Not a Zarr node, or a group whose array to use is ambiguous.
    """
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise InputError(f"{path} is not a readable Zarr array ({exc})") from None
    if isinstance(node, zarr.Group):
        arrays = dict(node.arrays())
        if "image" in arrays:
            return arrays["image"]
        if len(arrays) != 1:
            raise InputError(
                f"{path} is a Zarr group with arrays {sorted(arrays)}; give the path of one array"
            )
        return next(iter(arrays.values()))
    return node


#: Done tiles write every chunk, even all-background ones (a run-time array setting, so
#: :func:`write_core` applies it), so a missing chunk of a done tile is damage
#: (``status --verify`` finds it) rather than an empty tile.
_EVERY_CHUNK = {"write_empty_chunks": True}


def create_store(
    path: str | Path,
    *,
    shape: tuple[int, int],
    outputs: int,
    tile: int,
    grid_shape: tuple[int, int],
    probabilities: str,
    attrs: Mapping[str, Any],
    resume: bool = False,
    overwrite: bool = False,
) -> npt.NDArray[np.uint8]:
    """Create (or reopen for ``resume``) the store and return its ledger as an array.

    Parameters
    ----------
    path
        The store directory.
    shape
        ``(rows, cols)`` of the image.
    outputs
        Probability channels.
    tile
        Core tile size: the chunk edge, so no chunk spans two tiles.
    grid_shape
        ``(rows, cols)`` of the tile grid (the ledger's shape).
    probabilities
        Stored encoding (see :mod:`pipeline.store.encoding`).
    attrs
        Group attributes; ``run_id`` should be a fresh token.
    resume, overwrite
        Reopen a store made with the same settings / replace an existing one.

    Raises
    ------
    OutputExistsError
        The store exists and neither ``resume`` nor ``overwrite`` was given.
    StoreError
        The store cannot be written, or ``resume`` finds one made with other settings.
    """
    import zarr

    store = Path(path)
    attrs = dict(attrs)
    if store.exists():
        damaged = overwrite and (store / "zarr.json").is_file() and not _parses(store)
        if not damaged and not is_store(store):
            raise OutputExistsError(
                f"{store} exists and is not a Zarr store; choose another --out or remove it"
            )
        if resume:
            check_resume(store, read_attrs(store), attrs)
            group = zarr.open_group(str(store), mode="r+")
            group.attrs.update({**attrs, "status": RUNNING})
            return read_ledger(store)
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
        _create_layout(
            store, shape, outputs, tile, grid_shape, probabilities, {**attrs, ALWAYS_WRITTEN: True}
        )
    except OSError as exc:
        raise StoreError(
            f"cannot create {store}: directory {parent} is not writable ({exc.strerror or exc}); "
            "choose another --out"
        ) from None
    return np.zeros(grid_shape, np.uint8)


#: Chunk keys ``0/0`` (Zarr v2 style, valid in v3) and zstd: the same chunk files then read
#: as Zarr v2 through the sidecar metadata below, which GDAL 3.10 decodes (its Zarr v3
#: reader predates the final spec's ``bytes`` codec name and has no v3 zstd).
_V2_KEYS = {"name": "v2", "configuration": {"separator": "/"}}
_ZSTD_LEVEL = 3


def _create_layout(
    store: Path,
    shape: tuple[int, int],
    outputs: int,
    tile: int,
    grid_shape: tuple[int, int],
    probabilities: str,
    attrs: dict[str, Any],
) -> None:
    """Write the group, its arrays, CF coordinates and grid mapping, and GDAL sidecars."""
    import zarr
    from zarr.codecs import ZstdCodec

    group = zarr.open_group(
        str(store), mode="w", attributes={**attrs, "Conventions": "CF-1.8", "status": RUNNING}
    )
    rows, cols = shape
    zstd = [ZstdCodec(level=_ZSTD_LEVEL)]
    data = {
        PROBABILITIES: group.create_array(
            PROBABILITIES,
            shape=(outputs, rows, cols),
            chunks=(outputs, tile, tile),
            dtype=probabilities,
            fill_value=0,
            compressors=zstd,
            chunk_key_encoding=_V2_KEYS,  # type: ignore[arg-type]
            dimension_names=("class", "y", "x"),
            attributes=cf.array_attrs(attrs, PROBABILITIES, dtype=probabilities),
        ),
        LABELS: group.create_array(
            LABELS,
            shape=(rows, cols),
            chunks=(tile, tile),
            dtype="uint8",
            fill_value=0,
            compressors=zstd,
            chunk_key_encoding=_V2_KEYS,  # type: ignore[arg-type]
            dimension_names=("y", "x"),
            attributes=cf.array_attrs(attrs, LABELS, channels=outputs),
        ),
    }
    group.create_array(
        TILES,
        shape=grid_shape,
        chunks=(1, 1),
        dtype="uint8",
        fill_value=PENDING,
        dimension_names=("tile_row", "tile_col"),
        attributes={
            "long_name": "tile ledger",
            "flag_values": [PENDING, DONE, SKIPPED],
            "flag_meanings": "pending done skipped",
        },
    )
    grid_mapping = cf.grid_mapping_attrs(attrs)
    if grid_mapping is not None:
        ref = group.create_array(
            cf.GRID_MAPPING, shape=(), dtype="int32", fill_value=0, dimension_names=(),
            attributes=grid_mapping,
        )  # fmt: skip
        ref[...] = 0
    coords = cf.coordinates(attrs, shape)
    for axis, values in coords.items():
        coord = group.create_array(
            axis, shape=values.shape, chunks=values.shape, dtype="float64", fill_value=0.0,
            compressors=None, chunk_key_encoding=_V2_KEYS,  # type: ignore[arg-type]
            dimension_names=(axis,), attributes=cf.coordinate_attrs(attrs, axis),
        )  # fmt: skip
        coord[...] = values
        data[axis] = coord
    wkt = None if grid_mapping is None else grid_mapping["crs_wkt"]
    for name, array in data.items():
        _write_v2_sidecar(
            store / name,
            array,
            crs_wkt=None if name in coords else wkt,
            nodata=_gdal_nodata(name, probabilities, attrs),
        )
    consolidate(store)


#: CF attributes GDAL's Zarr driver reads from ``.zattrs``.
_GDAL_CF_ATTRS = ("scale_factor", "add_offset", "units")


def _gdal_nodata(name: str, probabilities: str, attrs: Mapping[str, Any]) -> int | str | None:
    """Return the Zarr v2 ``fill_value`` GDAL is to see for an array: its nodata value.

    GDAL's Zarr driver reports ``fill_value`` as the band's nodata, so the v3 fill (0) would
    make background (label 0) and zero probabilities nodata, and QGIS would draw them
    transparent. GDAL gets the store's own nodata instead: ``labels_nodata`` (255) for the
    labels, NaN for float probabilities, none for uint8 probabilities (0 is a probability)
    and the coordinates. Chunks of skipped tiles, never written, read as that nodata in GDAL
    (as in ``gigaseg export``); v3 readers keep reading the v3 fill.

    Examples
    --------
    >>> _gdal_nodata("labels", "uint8", {"labels_nodata": 255})
    255
    >>> _gdal_nodata("probabilities", "float16", {}), _gdal_nodata("probabilities", "uint8", {})
    ('NaN', None)
    """
    if name == LABELS:
        nodata = attrs.get("labels_nodata")
        return None if nodata is None else int(nodata)
    if name == PROBABILITIES and np.dtype(probabilities).kind == "f":
        return "NaN"
    return None


def _write_v2_sidecar(
    path: Path, array: Any, *, crs_wkt: str | None, nodata: int | str | None = None
) -> None:
    """Describe the array's chunk files as Zarr v2 too (``.zarray`` + ``.zattrs``) for GDAL.

    ``nodata`` is the v2 ``fill_value`` (see :func:`_gdal_nodata`).
    """
    dtype = np.dtype(array.dtype)
    compressed = any(type(c).__name__ == "ZstdCodec" for c in array.compressors)
    zarray = {
        "zarr_format": 2,
        "shape": list(array.shape),
        "chunks": list(array.chunks),
        "dtype": dtype.str,
        "compressor": {"id": "zstd", "level": _ZSTD_LEVEL} if compressed else None,
        "fill_value": nodata,
        "order": "C",
        "filters": None,
        "dimension_separator": "/",
    }
    zattrs: dict[str, Any] = {"_ARRAY_DIMENSIONS": list(array.metadata.dimension_names)}
    # GDAL turns CF scale_factor/add_offset/units into the band's scale, offset and unit:
    # uint8 probabilities then read as p (``ReadAsArray`` raw, scaled by QGIS and gdalinfo)
    zattrs.update({k: v for k, v in array.attrs.items() if k in _GDAL_CF_ATTRS})
    if crs_wkt is not None:
        zattrs["_CRS"] = {"wkt": crs_wkt}
    (path / ".zarray").write_text(json.dumps(zarray, indent=2))
    (path / ".zattrs").write_text(json.dumps(zattrs, indent=2))


def consolidate(path: str | Path) -> None:
    """Consolidate the store's metadata, so ``xr.open_zarr`` opens it in one read.

    Written as zarr-python 3.1 writes it (every node's ``zarr.json`` under
    ``consolidated_metadata`` of the root, keys are paths), but without
    ``zarr.consolidate_metadata``, which warns that consolidated metadata is not yet in the v3
    specification: suppressing that warning is not thread-safe, and stores are completed
    from worker threads. zarr-python and xarray read it; other readers ignore it.
    """
    root = Path(path)
    members: dict[str, Any] = {}
    for meta in sorted(root.rglob("zarr.json")):
        if meta.parent == root:
            continue
        node = json.loads(meta.read_text())
        node.pop("consolidated_metadata", None)
        members[meta.parent.relative_to(root).as_posix()] = node
    group = json.loads((root / "zarr.json").read_text())
    group["consolidated_metadata"] = {
        "kind": "inline",
        "must_understand": False,
        "metadata": members,
    }
    tmp = root / f".zarr.json.tmp-{os.getpid()}-{threading.get_ident()}"
    tmp.write_text(json.dumps(group, indent=2))
    tmp.replace(root / "zarr.json")


def open_store(path: str, run_id: str = "") -> Any:
    """Return this process's writable handle on the store group, opened once per run.

    ``run_id`` keeps a worker that served an earlier run on the same path from writing
    through stale array metadata after an overwrite.
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
    group[PROBABILITIES].with_config(_EVERY_CHUNK)[:, rows, cols] = probabilities
    group[LABELS].with_config(_EVERY_CHUNK)[rows, cols] = labels


def mark_tiles(path: str, indices: list[tuple[int, int]], state: int, run_id: str = "") -> None:
    """Set ledger entries (one chunk each) to ``state`` (PENDING, DONE or SKIPPED)."""
    if state not in (PENDING, DONE, SKIPPED):
        raise ValueError(f"ledger state {state} is not one of {PENDING}, {DONE}, {SKIPPED}")
    group = open_store(path, run_id)
    ledger = group[TILES]
    for row, col in indices:
        ledger[row, col] = state


def read_ledger(path: str | Path) -> npt.NDArray[np.uint8]:
    """Return the ``tiles`` ledger as an array (read by value, never by chunk existence)."""
    import zarr

    ledger = zarr.open_array(str(Path(path) / TILES), mode="r")
    return np.asarray(ledger[...], dtype=np.uint8)


def set_status(path: str | Path, status: str, *, run_id: str | None = None, **attrs: Any) -> None:
    """Update the ``status`` attribute (and any others), from the metadata on disk.

    Parameters
    ----------
    path
        The store.
    status
        The new status (``running``, ``complete``...).
    run_id
        When given, the store must still belong to this run: a store that another run has
        overwritten or resumed since is not marked.
    **attrs
        Other attributes to set in the same update.

    Raises
    ------
    StoreError
        ``run_id`` is given and differs from the store's.
    """
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    if run_id is not None:
        current = dict(group.attrs).get("run_id")
        if current != run_id:
            raise StoreError(
                f"store {path} now belongs to run {current!r}, not {run_id!r} (another run "
                f"overwrote or resumed it); not marking it {status!r}"
            )
    group.attrs.update({**attrs, "status": status})


def complete_store(path: str | Path, *, run_id: str | None = None, **attrs: Any) -> None:
    """Finish a store: slide label pyramid, consolidated metadata, then ``complete``.

    The status is set last, so a store marked complete has everything a reader expects;
    ``completed_at`` (UTC) records when, so exports can tell the store content they came from.
    A store with ``mpp`` and no CRS (a slide) gains its OME-Zarr ``labels_pyramid``.

    Raises
    ------
    StoreError
        ``run_id`` is given and another run has taken the store over.
    """
    from pipeline.store.pyramid import build_labels_pyramid

    current = read_attrs(path)
    if run_id is not None and current.get("run_id") != run_id:
        raise StoreError(
            f"store {path} now belongs to run {current.get('run_id')!r}, not {run_id!r} "
            "(another run overwrote or resumed it); not marking it complete"
        )
    if current.get("mpp") and not current.get("crs"):
        build_labels_pyramid(path)
    consolidate(path)
    from datetime import UTC, datetime

    completed_at = datetime.now(UTC).isoformat(timespec="microseconds")
    set_status(path, COMPLETE, run_id=run_id, completed_at=completed_at, **attrs)


def tile_counts(path: str | Path) -> dict[str, int]:
    """Count tiles done / skipped / left in a store's ledger."""
    ledger = read_ledger(path)
    done = int((ledger == DONE).sum())
    skipped = int((ledger == SKIPPED).sum())
    return {
        "total": int(ledger.size),
        "done": done,
        "skipped": skipped,
        "left": int(ledger.size) - done - skipped,
    }


def read_mask(path: str | Path, name: str) -> npt.NDArray[np.uint8] | None:
    """Return a mask written by :func:`write_mask` (``None`` when the store has none)."""
    import zarr

    group = zarr.open_group(str(path), mode="r")
    if name not in group:
        return None
    return np.asarray(group[name][...], dtype=np.uint8)


def write_mask(
    path: str, name: str, mask: npt.NDArray[np.bool_], attrs: dict[str, Any] | None = None
) -> None:
    """Write a low-resolution mask the run used (e.g. :data:`TISSUE`) as uint8 (1 = kept).

    ``attrs`` say how it maps to the store's pixels (``scale``: store pixels per mask pixel,
    rows and cols) and how it was made. An existing mask of that name is replaced (a resumed
    run records the mask it used). Its dimensions are its own (``tissue_y``, ``tissue_x``):
    named ``y``/``x`` at another size, they would conflict with the labels' and
    ``xr.open_zarr`` could not open the store.
    """
    import zarr

    group = zarr.open_group(path, mode="r+")
    array = group.create_array(
        name,
        shape=mask.shape,
        chunks=mask.shape,
        dtype="uint8",
        fill_value=0,
        dimension_names=(f"{name}_y", f"{name}_x"),
        overwrite=True,
    )
    array[...] = np.asarray(mask, dtype=np.uint8)
    array.attrs.update(attrs or {})
