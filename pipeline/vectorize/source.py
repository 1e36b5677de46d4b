"""Open what vectorize reads: a gigaseg store, or any single-band label/probability raster.

This is the stage's only module that opens input files. A :class:`LabelSource` is small and
picklable (a path plus what was learnt from the header), so each Dask task re-opens the file
and reads just its window: no pixels pass through the scheduler.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipeline.errors import ConfigError, InputError, StoreError
from pipeline.read import Georef, is_remote, read_window, redact, remote_env
from pipeline.read.geotiff import raster_handle
from pipeline.read.location import location_suffix
from pipeline.tile.grid import Window
from pipeline.vectorize.georef import Frame

__all__ = ["LabelSource", "open_labels", "resolve_classes", "skipped_tiles"]


@dataclass(frozen=True)
class LabelSource:
    """A label raster to vectorize, and how to read windows of it.

    Attributes
    ----------
    path
        File or store path (``None`` for an in-memory array).
    kind
        ``"store"`` (gigaseg Zarr group), ``"zarr"`` (one Zarr array), ``"geotiff"`` (any
        raster GDAL reads) or ``"array"`` (a NumPy array).
    shape
        ``(height, width)``.
    dtype
        dtype of the raster that is read (labels, or probabilities when ``threshold`` is set).
    frame
        Georeference (see :class:`~pipeline.vectorize.georef.Frame`).
    names
        Class id -> name.
    threshold
        When set, the raster holds probabilities and ``label = 1 where p >= threshold``.
    prob_channels
        Number of channels of the store's ``probabilities`` array (0 when there is none);
        for a thresholded probability raster, 1 (the raster itself).
    block
        Natural chunk (or block) shape of the raster, to align the vectorize chunks with.
    array
        The in-memory array for ``kind == "array"``.
    colors
        Class id -> ``(r, g, b)`` from the model card (the store's ``class_colors``).
    """

    path: str | None
    kind: Literal["store", "zarr", "geotiff", "array"]
    shape: tuple[int, int]
    dtype: str
    frame: Frame
    names: dict[int, str]
    threshold: float | None = None
    prob_channels: int = 0
    block: tuple[int, int] = (512, 512)
    nodata: float | None = None
    array: np.ndarray | None = field(default=None, repr=False, compare=False)
    colors: dict[int, tuple[int, int, int]] = field(default_factory=dict)

    @property
    def has_probabilities(self) -> bool:
        """Whether mean probabilities can be reported."""
        return self.prob_channels > 0

    def channel(self, class_id: int) -> int:
        """Probability channel of a class id (sigmoid: 0; softmax with background: the id)."""
        from pipeline.store import class_channel

        return class_channel(class_id, self.prob_channels)

    def read(
        self, rows: tuple[int, int], cols: tuple[int, int], *, probabilities: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Read labels (and optionally all probability channels, as float32 in [0, 1]).

        Parameters
        ----------
        rows, cols
            Half-open row and column ranges inside the raster.
        probabilities
            Also return the ``(channels, h, w)`` probabilities.
        """
        (r0, r1), (c0, c1) = rows, cols
        raw: np.ndarray
        probs: np.ndarray | None = None
        if self.kind == "array":
            if self.array is None:  # pragma: no cover - built by open_labels
                raise InputError("in-memory label source lost its array")
            raw = np.asarray(self.array[r0:r1, c0:c1])
        elif self.kind == "geotiff":
            raw = read_window(str(self.path), [1], Window(r0, c0, r1 - r0, c1 - c0))[0]
        else:
            from pipeline.store import open_array, open_group

            if self.kind == "zarr":
                arr = open_array(str(self.path))
                raw = np.asarray(arr[..., r0:r1, c0:c1]).reshape(r1 - r0, c1 - c0)
            else:
                from pipeline.store.verify import read_region

                node: Any = open_group(str(self.path))
                name = "probabilities" if self.threshold is not None else "labels"
                arr = node[name]
                box = (slice(r0, r1), slice(c0, c1))
                raw = read_region(str(self.path), arr, (slice(None),) * (arr.ndim - 2) + box)
                if raw.ndim == 3:
                    raw = raw[0]
                if probabilities and self.prob_channels and self.threshold is None:
                    region = read_region(str(self.path), node["probabilities"], (slice(None), *box))
                    probs = _unit(region)
        if self.nodata is not None and self.threshold is None:
            raw = np.where(raw == self.nodata, 0, raw)
        if self.threshold is None:
            return _as_labels(raw), probs
        unit = _unit(raw)
        labels = (unit >= self.threshold).astype(np.uint8)
        return labels, (unit[None] if probabilities else None)


def _unit(values: np.ndarray) -> np.ndarray:
    """Probabilities as float32 in [0, 1] (uint8 stores hold p·255)."""
    from pipeline.store import from_stored

    return from_stored(values)


def _as_labels(raw: np.ndarray) -> np.ndarray:
    if raw.dtype in (np.uint8, np.uint16, np.int16, np.int32):
        return raw
    if raw.dtype in (np.bool_, np.int8):
        return raw.astype(np.uint8)
    return raw.astype(np.int32)


def _names_from_attrs(classes: Any, prob_channels: int) -> dict[int, str]:
    from pipeline.store import class_names

    return class_names(classes, prob_channels)


def _colors_from_attrs(
    attrs: dict[str, Any], prob_channels: int
) -> dict[int, tuple[int, int, int]]:
    """Class id -> colour, with the same id shift as :func:`_names_from_attrs`."""
    from pipeline.store.layout import card_colors

    return card_colors(attrs.get("classes"), attrs.get("class_colors"), prob_channels)


def _check_threshold(threshold: float | None, dtype: np.dtype, where: str) -> None:
    if threshold is None and np.issubdtype(dtype, np.floating):
        raise InputError(
            f"{where} holds {dtype} values (probabilities?); pass --threshold (e.g. 0.5) "
            "to turn them into labels"
        )
    if threshold is not None and not (0.0 <= float(threshold) <= 1.0):
        raise ConfigError(f"threshold must be between 0 and 1, got {threshold}")


def _attrs_frame(attrs: dict[str, Any], shape: tuple[int, int]) -> Frame:
    return Frame.from_georef(Georef.from_attrs(attrs), shape)


def open_labels(source: str | Path | np.ndarray, *, threshold: float | None = None) -> LabelSource:
    """Open a gigaseg store, a single-band raster or a NumPy array as a label source.

    Parameters
    ----------
    source
        A gigaseg store (Zarr group with ``labels`` and/or ``probabilities``), a Zarr array,
        any single-band raster GDAL reads (GeoTIFF, COG, VRT...), or a 2-D NumPy array.
    threshold
        Turns a probability raster into labels (``p >= threshold`` is class 1). Required for
        float rasters; for a store it re-thresholds its single probability channel.

    Raises
    ------
    InputError
        Missing file, several bands, or a float raster without ``threshold``.
    """
    if isinstance(source, np.ndarray):
        arr = source[0] if source.ndim == 3 and source.shape[0] == 1 else source
        if arr.ndim != 2:
            raise InputError(
                f"label array must be 2-D (height, width), got shape {source.shape}; pass one band"
            )
        _check_threshold(threshold, arr.dtype, "the label array")
        h, w = arr.shape
        return LabelSource(
            None, "array", (h, w), str(arr.dtype), Frame.from_georef(Georef.pixel(), (h, w)), {},
            threshold, 1 if threshold is not None else 0, (min(h, 2048), min(w, 2048)),
            array=arr,
        )  # fmt: skip
    if is_remote(source):
        if location_suffix(source) == ".zarr":
            raise InputError(
                f"{redact(source)} is a remote Zarr store; vectorize reads stores from local "
                "disk (copy it, or give a label raster URL)"
            )
        return _open_raster(str(source), threshold)
    path = Path(source)
    if not path.exists():
        raise InputError(f"input {path} does not exist; give a gigaseg store or a label raster")
    from pipeline.store import is_store, is_zarr_array

    if is_store(path) or is_zarr_array(path):
        return _open_zarr(path, threshold)
    return _open_raster(str(path), threshold)


def _open_zarr(path: Path, threshold: float | None) -> LabelSource:
    from pipeline.store import is_zarr_array, open_array, open_group

    if is_zarr_array(path):
        arr = open_array(path)
        shape = tuple(arr.shape)
        if len(shape) == 3 and shape[0] == 1:
            shape = shape[1:]
        if len(shape) != 2:
            raise InputError(
                f"{path} is a Zarr array of shape {tuple(arr.shape)}; vectorize needs a "
                "single-band (height, width) label or probability array"
            )
        _check_threshold(threshold, arr.dtype, str(path))
        h, w = int(shape[0]), int(shape[1])
        attrs = dict(arr.attrs)
        block = tuple(int(c) for c in arr.chunks[-2:])
        return LabelSource(
            str(path), "zarr", (h, w), str(arr.dtype), _attrs_frame(attrs, (h, w)),
            _names_from_attrs(attrs.get("classes"), 0), threshold,
            1 if threshold is not None else 0, (block[0], block[1]),
        )  # fmt: skip
    group: Any = open_group(path)
    attrs = dict(group.attrs)
    members = set(group.array_keys())
    status = attrs.get("status")
    if status is not None and status != "complete":
        raise InputError(
            f"store {path} has status {status!r}, not 'complete'; finish the run "
            "(gigaseg predict --resume) before vectorizing"
        )
    if status is not None:
        from pipeline.store.verify import damaged_tiles, describe_damage

        # A deleted chunk would read as background: check every done tile's files exist.
        missing = damaged_tiles(path, decode=False)
        if missing:
            raise StoreError(describe_damage(path, missing))
    prob_channels = 0
    if "probabilities" in members:
        prob = group["probabilities"]
        prob_channels = int(prob.shape[0]) if prob.ndim == 3 else 1
    names = _names_from_attrs(attrs.get("classes"), prob_channels)
    if threshold is not None:
        if prob_channels != 1:
            raise InputError(
                f"--threshold needs a store with one probability channel; {path} has "
                f"{prob_channels}; drop --threshold to use its labels"
            )
        _check_threshold(threshold, np.dtype("float32"), str(path))
        arr = group["probabilities"]
    elif "labels" in members:
        arr = group["labels"]
    else:
        raise InputError(
            f"store {path} has no 'labels' array; pass --threshold to threshold its probabilities"
        )
    h, w = (int(s) for s in arr.shape[-2:])
    block = tuple(int(c) for c in arr.chunks[-2:])
    nodata = attrs.get("labels_nodata") if threshold is None else None  # no data: not a class
    return LabelSource(
        str(path), "store", (h, w), str(arr.dtype), _attrs_frame(attrs, (h, w)),
        names or ({1: "foreground"} if threshold is not None else {}), threshold,
        prob_channels, (block[0], block[1]), nodata,
        colors=_colors_from_attrs(attrs, prob_channels),
    )  # fmt: skip


def _open_raster(path: str, threshold: float | None) -> LabelSource:
    try:
        ds, _ = raster_handle(path)
    except InputError as exc:
        raise InputError(f"{exc}; give a GeoTIFF, COG, Zarr array or gigaseg store") from None
    with remote_env(path):
        name = redact(path)
        if ds.count != 1:
            raise InputError(
                f"{name} has {ds.count} bands; vectorize needs a single-band label or "
                "probability raster (extract one band, e.g. gdal_translate -b 1)"
            )
        dtype = np.dtype(ds.dtypes[0])
        _check_threshold(threshold, dtype, name)
        h, w = ds.height, ds.width
        frame = Frame.from_georef(Georef.from_dataset(ds), (h, w))
        bh, bw = ds.block_shapes[0]
        nodata = ds.nodata
        tags = ds.tags()
    names: dict[int, str] = {}
    if "classes" in tags:
        try:
            names = _names_from_attrs(json.loads(tags["classes"]), 0)
        except ValueError:
            names = {}
    return LabelSource(
        str(path), "geotiff", (h, w), str(dtype), frame,
        names or ({1: "foreground"} if threshold is not None else {}), threshold,
        1 if threshold is not None else 0, (int(bh), int(bw)),
        nodata=None if nodata is None or np.isnan(nodata) else float(nodata),
    )  # fmt: skip


def resolve_classes(
    source: LabelSource, classes: list[str | int] | tuple[str | int, ...] | None
) -> tuple[int, ...] | None:
    """Turn ``--class`` values (names or ids) into class ids; ``None`` means all non-zero.

    Raises
    ------
    ConfigError
        A name or id the source does not define.
    """
    if not classes:
        return None
    max_id = 1 if source.threshold is not None else _max_label(source.dtype)
    known = ", ".join(f"{i}={n}" for i, n in sorted(source.names.items())) or "none"
    where = redact(source.path) if source.path else "the input"
    ids: list[int] = []
    for value in classes:
        text = str(value).strip()
        if text.lstrip("-").isdigit():
            cid = int(text)
            in_names = not source.names or cid in source.names
            if cid < 1 or cid > max_id or not in_names:
                raise ConfigError(
                    f"class {text!r} is not in {where} "
                    f"(classes: {known}; ids are 1..{max_id}, 0 is background)"
                )
            ids.append(cid)
            continue
        match = [i for i, n in source.names.items() if n.lower() == text.lower()]
        if not match:
            raise ConfigError(
                f"class {value!r} is not in {where} (classes: {known}); "
                "pass a listed name or a numeric id"
            )
        ids.append(match[0])
    return tuple(sorted(set(ids)))


def _max_label(dtype: str) -> int:
    kind = np.dtype(dtype)
    if np.issubdtype(kind, np.integer):
        return int(np.iinfo(kind).max)
    return 1


def skipped_tiles(source: LabelSource) -> tuple[np.ndarray, int] | None:
    """Return the tiles a store's ledger marks skipped (a boolean grid) and the tile size.

    Skipped tiles held no data (nodata, no tissue): their chunks were never written and read
    as background, so they hold no polygon and need not be read at all. ``None`` for other
    sources, and when a threshold of 0 would make background pixels foreground.
    """
    if source.kind != "store" or source.path is None:
        return None
    if source.threshold is not None and source.threshold <= 0:
        return None
    from pipeline.store import SKIPPED, read_attrs, read_ledger

    tile = read_attrs(source.path).get("tile")
    if not isinstance(tile, int) or tile < 1:
        return None
    try:
        ledger = read_ledger(source.path)
    except (OSError, ValueError, KeyError):  # a store without a ledger: read everything
        return None
    return ledger == SKIPPED, tile
