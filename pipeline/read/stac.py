"""A STAC Item as one multi-band source: chosen assets stacked on one grid.

An Item JSON (local file, URL or ``s3://``) lists assets, often one GeoTIFF/COG per band.
``assets`` picks them, in order, by asset key (``B04``) or by ``eo:bands`` common name
(``red``, ``green``, ``blue``, ``nir``...; STAC 1.1 ``bands`` with ``eo:common_name`` too).
A name that selects one band of a multi-band asset reads just that band. A common name no
asset has picks the one narrower band of its family (``nir`` -> Landsat's ``nir08``; several,
such as Sentinel-2's ``rededge071``/``rededge075``, are listed). When one band comes in several
encodings (``red`` and ``red-jp2``), the GeoTIFF is read.

Grid rule: every chosen asset must cover the same extent in the same CRS. Assets on the same
grid are stacked as they are. Coarser assets (Sentinel-2's 20 m bands next to 10 m ones) are
brought to the **finest** grid by nearest neighbour on pixel centres: the pixel of the fine
grid at ``(row, col)`` takes the coarse pixel ``floor((row + 0.5) * fine / coarse)``. The rule
depends only on the pixel position, so a tile reads the same values as the whole image and the
tiled = whole guarantee holds. Extents that differ, or other CRSs, are refused with the
offending asset named.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import InputError
from pipeline.read.geotiff import GeoTiffSource
from pipeline.read.location import join_location, read_bytes, redact
from pipeline.read.source import Source, Validity, parse_bands
from pipeline.tile.grid import Window

__all__ = ["StacSource", "is_stac_item", "select_assets"]

_RASTER_TYPES = ("image/tiff", "image/vnd.stac.geotiff", "image/jp2", "application/x-hdf")


def is_stac_item(document: Any) -> bool:
    """Whether a parsed JSON document is a STAC Item (a GeoJSON Feature with assets)."""
    return (
        isinstance(document, dict)
        and document.get("type") == "Feature"
        and isinstance(document.get("assets"), dict)
    )


def _band_names(asset: dict[str, Any]) -> list[tuple[str | None, str | None]]:
    """``(common_name, name)`` per band of an asset (STAC 1.0 ``eo:bands``, 1.1 ``bands``)."""
    if isinstance(asset.get("eo:bands"), list):
        return [(b.get("common_name"), b.get("name")) for b in asset["eo:bands"]]
    if isinstance(asset.get("bands"), list):
        return [(b.get("eo:common_name"), b.get("name")) for b in asset["bands"]]
    return []


def _common(asset: dict[str, Any], band: int) -> str:
    """Return the common name of 1-based ``band`` of ``asset``."""
    return str(_band_names(asset)[band - 1][0])


def _is_tiff(asset: dict[str, Any]) -> bool:
    kind = str(asset.get("type", ""))
    return kind.startswith(("image/tiff", "image/vnd.stac.geotiff"))


def _is_raster(asset: dict[str, Any]) -> bool:
    kind = str(asset.get("type", ""))
    roles = asset.get("roles") or ["data"]
    return any(kind.startswith(t) for t in _RASTER_TYPES) and "data" in roles


def select_assets(
    item: dict[str, Any], wanted: list[str] | tuple[str, ...] | None, where: str
) -> list[tuple[str, list[int] | None]]:
    """Resolve ``wanted`` to ``(asset key, 1-based bands or None for all)`` pairs, in order.

    Without ``wanted``, every data asset of a raster media type is taken, in item order.

    Raises
    ------
    InputError
        A name that matches no asset (the message lists keys and common names).
    """
    assets: dict[str, Any] = item["assets"]
    if not wanted:
        chosen = [(key, None) for key, asset in assets.items() if _is_raster(asset)]
        if not chosen:
            raise InputError(
                f"STAC item {where} has no data asset of a raster type; choose assets with "
                f"--assets (keys: {', '.join(assets)})"
            )
        return chosen  # type: ignore[return-value]
    out: list[tuple[str, list[int] | None]] = []
    for name in wanted:
        if name in assets:
            out.append((name, None))
            continue
        hits = [
            (key, index + 1)
            for key, asset in assets.items()
            for index, (common, band) in enumerate(_band_names(asset))
            if name.lower() in {str(common).lower(), str(band).lower()}
        ]
        if not hits:  # a family name picks its one narrower band: "nir" -> Landsat's "nir08"
            hits = [
                (key, index + 1)
                for key, asset in assets.items()
                for index, (common, _) in enumerate(_band_names(asset))
                if re.fullmatch(re.escape(name.lower()) + r"\d+", str(common).lower())
            ]
            if len({key for key, _ in hits}) > 1:
                found = ", ".join(f"{key} ({_common(assets[key], band)})" for key, band in hits)
                raise InputError(
                    f"STAC item {where} has no common name {name!r} but several narrower ones: "
                    f"{found}; pick one of them"
                )
        if not hits:
            names = sorted({c for a in assets.values() for c, _ in _band_names(a) if c})
            raise InputError(
                f"STAC item {where} has no asset or eo:bands common name {name!r}; "
                f"keys: {', '.join(assets)}; common names: {', '.join(names) or 'none'}"
            )
        # one band in several encodings (Earth Search's "red" and "red-jp2"): a GeoTIFF first
        key, band = min(hits, key=lambda hit: not _is_tiff(assets[hit[0]]))
        whole = len(_band_names(assets[key])) == 1
        out.append((key, None if whole else [band]))
    return out


@dataclass(frozen=True)
class _Part:
    """One asset read onto the stack grid: its reader and its scale to the finest grid."""

    key: str
    source: GeoTiffSource
    ratio: tuple[float, float]  # its pixel size / the finest pixel size (rows, cols)

    def read(self, window: Window) -> npt.NDArray[Any]:
        if self.ratio == (1.0, 1.0):
            return self.source._read_box(window)
        ry, rx = self.ratio
        height, width = self.source.shape
        rows = np.minimum(
            ((np.arange(window.row_off, window.row_stop) + 0.5) / ry).astype(int), height - 1
        )
        cols = np.minimum(
            ((np.arange(window.col_off, window.col_stop) + 0.5) / rx).astype(int), width - 1
        )
        r0, c0 = int(rows[0]), int(cols[0])
        box = Window(r0, c0, int(rows[-1]) - r0 + 1, int(cols[-1]) - c0 + 1)
        data = self.source._read_box(box)
        picked: npt.NDArray[Any] = data[:, (rows - r0)[:, None], (cols - c0)[None, :]]
        return picked


class StacSource(Source):
    """Assets of a STAC Item stacked into one multi-band source on the finest grid.

    Parameters
    ----------
    location
        The Item JSON: a local path, URL, ``s3://`` or ``/vsi*/`` path.
    assets
        Asset keys or ``eo:bands`` common names, in band order (all raster data assets when
        ``None``).
    bands
        1-based bands of the stack to read (all by default).
    """

    def __init__(self, location: str, assets: Any = None, bands: Any = None) -> None:
        self.path = str(location)
        self.name = redact(self.path)
        try:
            item = json.loads(read_bytes(self.path))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{self.name} is not valid JSON ({exc})") from None
        if not is_stac_item(item):
            raise InputError(
                f"{self.name} is JSON but not a STAC Item (a Feature with 'assets'); give an "
                "Item, not a Collection or Catalog"
            )
        self.item_id = str(item.get("id", ""))
        selection = select_assets(item, assets, self.name)
        self.assets = tuple(key for key, _ in selection)
        sources = [
            (key, GeoTiffSource(join_location(self.path, item["assets"][key]["href"]), picked))
            for key, picked in selection
        ]
        self._parts = self._align(sources)
        finest = next(p.source for p in self._parts if p.ratio == (1.0, 1.0))
        self.shape = finest.shape
        self.georef = finest.georef
        counts = sum(part.source.count for part in self._parts)
        self.bands = parse_bands(bands, counts, self.name)
        self.dtype = np.result_type(*[part.source.dtype for part in self._parts])
        nodatas = {part.source.nodata for part in self._parts}
        self.nodata = nodatas.pop() if len(nodatas) == 1 else None

    def _align(self, sources: list[tuple[str, GeoTiffSource]]) -> list[_Part]:
        """Check every asset covers the finest asset's extent in its CRS; return parts."""
        finest_key, finest = min(sources, key=lambda ks: abs(ks[1].georef.transform.a))
        fine = finest.georef
        fh, fw = finest.shape
        parts = []
        for key, source in sources:
            geo = source.georef
            if (geo.crs is None) != (fine.crs is None) or (
                geo.crs is not None and not geo.crs_obj.equals(fine.crs_obj)  # type: ignore[union-attr]
            ):
                raise InputError(
                    f"STAC asset {key!r} of {self.name} is in another CRS than {finest_key!r}; "
                    "stack assets of one CRS (reproject first)"
                )
            ry = abs(geo.transform.e) / abs(fine.transform.e)
            rx = abs(geo.transform.a) / abs(fine.transform.a)
            h, w = source.shape
            same_origin = abs(geo.transform.c - fine.transform.c) <= 1e-6 * abs(
                fine.transform.a
            ) and abs(geo.transform.f - fine.transform.f) <= 1e-6 * abs(fine.transform.e)
            same_extent = abs(h * ry - fh) < 1 and abs(w * rx - fw) < 1
            if not (same_origin and same_extent) or geo.transform.b or geo.transform.d:
                raise InputError(
                    f"STAC asset {key!r} of {self.name} covers another extent than "
                    f"{finest_key!r} ({h}x{w} px of {geo.resolution[0]:g} vs {fh}x{fw} px of "
                    f"{fine.resolution[0]:g}); stack assets on one grid"
                )
            same = abs(ry - 1) < 1e-9 and abs(rx - 1) < 1e-9
            parts.append(_Part(key, source, (1.0, 1.0) if same else (ry, rx)))
        return parts

    def _read_box(self, window: Window) -> npt.NDArray[Any]:
        stack = np.concatenate([part.read(window).astype(self.dtype) for part in self._parts])
        if list(self.bands) == list(range(1, stack.shape[0] + 1)):
            return stack
        selected: npt.NDArray[Any] = stack[[band - 1 for band in self.bands]]
        return selected

    def valid_pixels(self, window: Window, pixels: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
        """Return True where every asset is valid (each asset's own nodata / mask)."""
        valid = np.ones((window.height, window.width), dtype=bool)
        for part in self._parts:
            if part.ratio == (1.0, 1.0):
                valid &= part.source.valid_pixels(window, part.read(window))
        return valid

    def thumbnail(self, max_size: int = 1024) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
        """Each asset's overview, brought to the finest asset's overview size (nearest)."""
        layers, valid = [], None
        for part in self._parts:
            pixels, mask = part.source.thumbnail(max_size)
            if valid is None:
                valid = mask
            rows = np.minimum(
                (np.arange(valid.shape[0]) * pixels.shape[1] / valid.shape[0]).astype(int),
                pixels.shape[1] - 1,
            )
            cols = np.minimum(
                (np.arange(valid.shape[1]) * pixels.shape[2] / valid.shape[1]).astype(int),
                pixels.shape[2] - 1,
            )
            layers.append(pixels[:, rows[:, None], cols[None, :]].astype(self.dtype))
        stack = np.concatenate(layers)[[band - 1 for band in self.bands]]
        assert valid is not None
        return stack, valid

    def validity(self, max_size: int = 1024) -> Validity | None:
        """Return the finest asset's low-resolution validity (one item, one footprint)."""
        finest = next(p.source for p in self._parts if p.ratio == (1.0, 1.0))
        return finest.validity(max_size)

    def describe(self) -> dict[str, Any]:
        """Add the item id and the stacked assets to the summary."""
        info = super().describe()
        info["stac_item"] = self.item_id
        info["assets"] = [
            {"key": p.key, "href": p.source.name, "bands": list(p.source.bands)}
            for p in self._parts
        ]
        return info
