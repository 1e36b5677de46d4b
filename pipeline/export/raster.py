"""Raster export: a store's labels (or one class's probabilities) as a Cloud-Optimized GeoTIFF.

The store is read one tile chunk at a time into a tiled GeoTIFF beside the output, then
GDAL's COG driver adds the overviews and writes the cloud-optimized layout (IFDs first,
overviews before full resolution). Memory stays at one chunk plus GDAL's block cache
(bounded here by ``GDAL_CACHEMAX``), whatever the store's size. Both files live under
temporary names; the COG gets its final name only when complete.

- Labels: uint8 class ids, ``255`` (nodata) where tiles were skipped, a colour table with the
  class colours (the model card's where given; background black), class names in the
  ``classes`` tag (id order) and the band description; ``mode`` (default) or ``nearest`` overviews.
- Probabilities of one class (``class_name``): the stored values (uint8 p·255, or float32),
  skipped tiles and invalid source pixels (``labels_nodata`` in the labels, NaN) masked out
  (an internal mask band, which the ``average`` overviews respect).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ConfigError, InputError
from pipeline.export.atomic import check_output, commit, temporary_path
from pipeline.export.features import class_color

__all__ = [
    "LABEL_NODATA",
    "RASTER_RESAMPLING",
    "RasterReport",
    "export_raster",
    "gdal_options",
    "raster_settings",
]

#: Value of skipped tiles in a label export.
LABEL_NODATA = 255
#: Overview resampling allowed for labels (class ids are never averaged).
RASTER_RESAMPLING = ("mode", "nearest")
_COMPRESSIONS = ("deflate", "zstd", "lzw")
#: GDAL block cache for the export, in MB: what bounds memory besides one chunk. Measured on
#: a 32768² store (bench/bench_export.py): 64 MB exports labels in 24 s at 269 MB peak RSS,
#: 256 MB in 35 s at 468 MB; a larger cache buys nothing (the COG copy streams).
_CACHE_MB = 64


@dataclass
class RasterReport:
    """What :func:`export_raster` wrote (``to_dict()`` is JSON-able)."""

    path: str
    store: str
    kind: str
    class_name: str | None
    shape: tuple[int, int]
    dtype: str
    overviews: list[int]
    resampling: str
    nodata_tiles: int
    seconds: float
    settings: dict[str, Any]
    store_run_id: str | None

    def to_dict(self) -> dict[str, Any]:
        """Return the report as plain data."""
        return asdict(self)


def gdal_options() -> dict[str, Any]:
    """Return the GDAL options of an export: block cache bound, internal mask band.

    ``GDAL_CACHEMAX`` goes in bytes: rasterio hands an integer to ``GDALSetCacheMax64``, so
    ``64`` would be a 64-byte cache, not the bound meant.

    Examples
    --------
    >>> gdal_options()["GDAL_CACHEMAX"] // 2**20
    64
    """
    return {"GDAL_CACHEMAX": _CACHE_MB * 1024 * 1024, "GDAL_TIFF_INTERNAL_MASK": True}


def raster_settings(
    *,
    class_name: str | None = None,
    resampling: str | None = None,
    compress: str = "deflate",
    blocksize: int = 512,
) -> dict[str, Any]:
    """Validate and return every setting that shapes a raster export.

    Raises
    ------
    ConfigError
        An unknown resampling or compression, or a block size GDAL's COG driver refuses.
    """
    if class_name is None:
        resampling = resampling or "mode"
        if resampling not in RASTER_RESAMPLING:
            raise ConfigError(
                f"label overviews use {' or '.join(RASTER_RESAMPLING)} resampling, not "
                f"{resampling!r} (class ids cannot be averaged)"
            )
    else:
        resampling = resampling or "average"
        if resampling not in ("average", "nearest"):
            raise ConfigError(
                f"probability overviews use average or nearest resampling, not {resampling!r}"
            )
    if compress not in _COMPRESSIONS:
        raise ConfigError(f"compress {compress!r} is not one of {', '.join(_COMPRESSIONS)}")
    if blocksize < 64 or blocksize % 16:
        raise ConfigError(f"blocksize {blocksize} must be a multiple of 16 and at least 64")
    return {
        "class": class_name,
        "resampling": resampling,
        "compress": compress,
        "blocksize": int(blocksize),
    }


def _label_names(attrs: dict[str, Any], channels: int) -> dict[int, str]:
    from pipeline.store import class_names

    return {0: "background", **class_names(attrs.get("classes"), channels)}


def _resolve_class(name: str, names: dict[int, str], store: Path) -> int:
    for cid, known in names.items():
        if cid and (known.lower() == name.lower() or str(cid) == name):
            return cid
    listed = ", ".join(f"{n}" for i, n in sorted(names.items()) if i) or "none"
    raise ConfigError(f"class {name!r} is not in {store} (classes: {listed}); pass a listed name")


def export_raster(
    store: str | Path,
    out: str | Path,
    *,
    class_name: str | None = None,
    resampling: str | None = None,
    compress: str = "deflate",
    blocksize: int = 512,
    overwrite: bool = False,
) -> RasterReport:
    """Write a store's labels, or one class's probabilities, as a Cloud-Optimized GeoTIFF.

    Parameters
    ----------
    store
        A complete gigaseg store.
    out
        The ``.tif`` to write.
    class_name
        Export this class's probabilities instead of the labels (a name or a label id).
    resampling
        Overviews: ``mode`` (default) or ``nearest`` for labels; ``average`` (default) or
        ``nearest`` for probabilities.
    compress
        ``deflate`` (default), ``zstd`` or ``lzw``.
    blocksize
        COG tile size in pixels.
    overwrite
        Replace an existing ``out``.

    Returns
    -------
    RasterReport
        Path, kind, overview factors, skipped tiles written as nodata, seconds, settings.

    Raises
    ------
    InputError
        The store is not complete or lacks the array to export.
    ConfigError
        A bad option or an unknown class.
    OutputExistsError
        ``out`` exists and ``overwrite`` is false.
    """
    from pipeline.store import SKIPPED, is_store, read_attrs, read_ledger

    started = time.perf_counter()
    settings = raster_settings(
        class_name=class_name, resampling=resampling, compress=compress, blocksize=blocksize
    )
    store = Path(store)
    if not is_store(store):
        raise InputError(f"{store} is not a gigaseg store; give a STORE.zarr made by predict")
    out_path = check_output(out, overwrite=overwrite)
    attrs = read_attrs(store)
    if attrs.get("status") != "complete":
        raise InputError(
            f"store {store} has status {attrs.get('status')!r}, not 'complete'; finish the run "
            "(gigaseg predict --resume) before exporting"
        )
    source = _Source.open(store, attrs, class_name)
    if source.channel is not None:
        settings["class"] = source.names[source.class_id]
    ledger = read_ledger(store)
    staging = temporary_path(out_path.with_name(out_path.stem + ".staging.tif"))
    final_tmp = temporary_path(out_path)
    try:
        import rasterio
        from rasterio.shutil import copy as gdal_copy

        with rasterio.Env(**gdal_options()):
            _write_staging(staging, source, ledger, attrs, settings, store)
            gdal_copy(
                staging,
                final_tmp,
                driver="COG",
                COMPRESS=settings["compress"].upper(),
                BLOCKSIZE=settings["blocksize"],
                OVERVIEW_RESAMPLING=settings["resampling"].upper(),
                OVERVIEWS="AUTO",
                BIGTIFF="IF_SAFER",
                NUM_THREADS=1,
            )
        with rasterio.open(final_tmp) as check:
            overviews = check.overviews(1)
        commit(final_tmp, out_path)
    finally:
        staging.unlink(missing_ok=True)
        final_tmp.unlink(missing_ok=True)
    return RasterReport(
        path=str(out_path),
        store=str(store),
        kind="labels" if source.channel is None else "probabilities",
        class_name=settings["class"],
        shape=source.shape,
        dtype=source.dtype.name,
        overviews=list(overviews),
        resampling=settings["resampling"],
        nodata_tiles=int((ledger == SKIPPED).sum()),
        seconds=time.perf_counter() - started,
        settings=settings,
        store_run_id=attrs.get("run_id"),
    )


@dataclass
class _Source:
    """The store array to export and how: labels, or one probability channel."""

    array: Any
    names: dict[int, str]
    channel: int | None
    class_id: int
    dtype: np.dtype[Any]
    #: The model card's class colours (id -> RGB), where it gives them.
    colors: dict[int, tuple[int, int, int]]
    #: The store's labels beside exported probabilities: where they hold ``labels_nodata``
    #: (invalid source pixels) the probability is masked out too.
    labels: Any = None
    labels_nodata: int | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.array.shape[-2]), int(self.array.shape[-1])

    @classmethod
    def open(cls, store: Path, attrs: dict[str, Any], class_name: str | None) -> _Source:
        from pipeline.store import LABELS, PROBABILITIES, class_channel, open_group
        from pipeline.store.layout import card_colors

        group = open_group(store)
        members = set(group.array_keys())
        channels = int(group[PROBABILITIES].shape[0]) if PROBABILITIES in members else 0
        names = _label_names(attrs, channels)
        colors = card_colors(attrs.get("classes"), attrs.get("class_colors"), channels)
        if class_name is None:
            if LABELS not in members:
                raise InputError(f"store {store} has no labels; export a class with --class NAME")
            if max(names) >= LABEL_NODATA:
                raise InputError(
                    f"store {store} has class ids up to {max(names)}; a label COG holds "
                    f"ids below {LABEL_NODATA} (export classes one by one with --class)"
                )
            return cls(group[LABELS], names, None, 0, np.dtype("uint8"), colors)
        if not channels:
            raise InputError(f"store {store} has no probabilities to export; drop --class")
        cid = _resolve_class(class_name, names, store)
        array = group[PROBABILITIES]
        dtype = np.dtype("uint8") if array.dtype == np.uint8 else np.dtype("float32")
        nodata = attrs.get("labels_nodata")
        return cls(
            array, names, class_channel(cid, channels), cid, dtype, colors,
            labels=group[LABELS] if LABELS in members and nodata is not None else None,
            labels_nodata=None if nodata is None else int(nodata),
        )  # fmt: skip

    def valid(self, rows: slice, cols: slice, block: np.ndarray) -> np.ndarray:
        """Return the mask (255 valid, 0 not) of a computed probability block."""
        valid = np.full(block.shape, 255, np.uint8)
        if self.labels is not None:
            valid[np.asarray(self.labels[rows, cols]) == self.labels_nodata] = 0
        if block.dtype.kind == "f":
            valid[np.isnan(block)] = 0
        return valid

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        if self.channel is None:
            return np.asarray(self.array[rows, cols])
        return np.asarray(self.array[self.channel, rows, cols]).astype(self.dtype)


def _profile(source: _Source, attrs: dict[str, Any], blocksize: int) -> dict[str, Any]:
    import rasterio

    rows, cols = source.shape
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": cols, "height": rows, "count": 1,
        "dtype": source.dtype.name, "tiled": True, "blockxsize": blocksize,
        "blockysize": blocksize, "compress": "deflate", "BIGTIFF": "IF_SAFER",
    }  # fmt: skip
    crs = attrs.get("crs") or None
    transform = attrs.get("transform")
    if crs:
        profile["crs"] = rasterio.crs.CRS.from_user_input(crs)
        if transform is not None:
            profile["transform"] = rasterio.Affine.from_gdal(*transform)
    if source.channel is None:
        profile["nodata"] = LABEL_NODATA
    return profile


def _write_staging(
    path: Path,
    source: _Source,
    ledger: np.ndarray,
    attrs: dict[str, Any],
    settings: dict[str, Any],
    store: Path,
) -> None:
    """Copy the store chunk by chunk (one tile at a time) into a tiled GeoTIFF."""
    import rasterio
    from rasterio.windows import Window

    from pipeline.store import SKIPPED

    rows, cols = source.shape
    chunk_rows, chunk_cols = (int(v) for v in source.array.chunks[-2:])
    names = source.names
    with rasterio.open(path, "w", **_profile(source, attrs, settings["blocksize"])) as dst:
        for (r, c), state in np.ndenumerate(ledger):
            r0, c0 = r * chunk_rows, c * chunk_cols
            r1, c1 = min(r0 + chunk_rows, rows), min(c0 + chunk_cols, cols)
            window = Window(c0, r0, c1 - c0, r1 - r0)
            block = source.read(slice(r0, r1), slice(c0, c1))
            if source.channel is not None:
                if state == SKIPPED:
                    mask = np.zeros(block.shape, np.uint8)
                else:
                    mask = source.valid(slice(r0, r1), slice(c0, c1), block)
                dst.write_mask(mask, window=window)
            elif state == SKIPPED:
                block = np.full_like(block, LABEL_NODATA)
            dst.write(block, 1, window=window)
        if source.channel is None:
            colors = {i: (*class_color(i, source.colors), 255) for i in names if i}
            dst.write_colormap(1, {0: (0, 0, 0, 255), **colors})  # TIFF palettes have no alpha
            described = ", ".join(f"{i}={n}" for i, n in sorted(names.items()))
            dst.set_band_description(1, f"class id: {described}")
        else:
            dst.set_band_description(1, f"probability of {settings['class']}")
        tags = {
            "classes": json.dumps([names.get(i, f"class{i}") for i in range(max(names) + 1)]),
            "gigaseg_store": str(store.absolute()),
            "gigaseg_run_id": str(attrs.get("run_id", "")),
            "gigaseg_export": json.dumps(settings, sort_keys=True),
        }
        if source.channel is not None and source.dtype == np.uint8:
            tags["probability_encoding"] = "round(p * 255)"
        dst.update_tags(**tags)
