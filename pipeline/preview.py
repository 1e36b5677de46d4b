"""Preview PNG: a thumbnail of the image with the mask and/or vector outlines drawn over it.

The thumbnail comes from the image's overviews (GeoTIFF/COG through rasterio, slides through
tiffslide), so a gigapixel input costs one small read. Everything is drawn in the frame of
the image's level 0: a store's labels are resampled to the thumbnail (slides may have been
segmented at a pyramid level, ``downsample`` in the store attrs), GeoJSON lon/lat outlines
are projected into the raster CRS and through its inverse affine, and QuPath outlines are
level-0 pixels already.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InputError
from pipeline.export.atomic import check_output, commit, temporary_path
from pipeline.export.features import class_color
from pipeline.read import Georef, is_zarr_location, open_source
from pipeline.read.location import is_remote, local_copy, location_exists, redact

__all__ = ["Thumbnail", "read_thumbnail", "read_vectors", "render_preview"]


@dataclass
class Thumbnail:
    """An RGB thumbnail and how it maps to level-0 pixels of its image.

    Attributes
    ----------
    rgb
        ``(h, w, 3)`` uint8.
    scale
        Thumbnail pixels per level-0 pixel.
    georef
        The image's georeference (a CRS + affine when georeferenced).
    """

    rgb: np.ndarray
    scale: float
    georef: Georef = field(default_factory=Georef.pixel)


def _stretch(bands: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = np.zeros(bands.shape, np.uint8)
    for i, band in enumerate(bands):
        values = band[valid]
        if values.size == 0:
            continue
        lo, hi = np.percentile(values, [2, 98])
        span = max(float(hi - lo), 1e-9)
        out[i] = np.clip((band.astype(np.float64) - lo) / span * 255, 0, 255).astype(np.uint8)
    return out


def read_thumbnail(path: str | Path, size: int = 1024) -> Thumbnail:
    """Read a thumbnail of at most ``size`` pixels on its long side from a raster or slide.

    The image is opened through :func:`pipeline.read.open_source` (local file, URL,
    ``/vsi*/`` path, STAC item or slide); GeoTIFFs read their overviews, slides their
    smallest level. Photographic 8-bit images are shown as they are, anything else is
    stretched between its 2nd and 98th percentiles.
    """
    source = open_source(path)
    indexes = [1, 2, 3] if source.count >= 3 else [1]
    if list(source.bands) != indexes:
        source = open_source(path, bands=indexes)
    data, valid = source.thumbnail(size)
    rgb8 = data.astype(np.uint8) if data.dtype == np.uint8 else _stretch(data, valid)
    if rgb8.shape[0] == 1:
        rgb8 = np.repeat(rgb8, 3, axis=0)
    rgb = np.moveaxis(rgb8, 0, -1).copy()
    slide = source.georef.kind == "slide"
    level0_width = source.shape[1] * (source.georef.downsample[0] if slide else 1.0)
    return Thumbnail(rgb, rgb.shape[1] / level0_width, source.georef)


def _store_labels(store: Path, shape: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Store labels nearest-resampled to ``shape``, read one chunk row at a time."""
    from pipeline.store import open_group

    group: Any = open_group(store)
    if "labels" not in set(group.array_keys()):
        raise InputError(f"store {store} has no labels to draw")
    labels = group["labels"]
    height, width = labels.shape
    rows = np.minimum((np.arange(shape[0]) + 0.5) * height / shape[0], height - 1).astype(int)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * width / shape[1], width - 1).astype(int)
    out = np.zeros(shape, np.uint8)
    step = int(labels.chunks[0])
    for r0 in range(0, height, step):
        sel = np.flatnonzero((rows >= r0) & (rows < r0 + step))
        if len(sel):
            block = np.asarray(labels[r0 : min(r0 + step, height), :])
            out[sel] = block[rows[sel] - r0][:, cols]
    downsample = float(dict(group.attrs).get("downsample", 1.0) or 1.0)
    return out, downsample


def _geometries_from_json(features: list[dict[str, Any]]) -> list[tuple[Any, tuple[int, ...]]]:
    import shapely

    out = []
    for feat in features:
        geom = feat.get("geometry")
        if not geom:
            continue
        props = feat.get("properties") or {}
        color = (props.get("classification") or {}).get("color")
        if color is None:
            color = class_color(int(props.get("class_id") or 1))
        out.append((shapely.from_geojson(json.dumps(geom)), tuple(int(c) for c in color[:3])))
    return out


def read_vectors(path: str | Path) -> tuple[list[tuple[Any, tuple[int, ...]]], str | None, bool]:
    """Read outlines from any format vectorize writes.

    Returns
    -------
    features, crs, lonlat
        ``(geometry, rgb)`` pairs (class colour); the CRS of the coordinates (``None`` for pixels);
        whether they are GeoJSON lon/lat (EPSG:4326).
    """
    if is_remote(path):  # fetched once (outlines are small), then read like a local file
        with local_copy(path) as local:
            return read_vectors(local)
    file = Path(path)
    if not file.exists():
        raise InputError(f"vector file {file} does not exist")
    name = file.name.lower()
    if name.endswith((".parquet", ".geoparquet")):
        import pyarrow.parquet as pq
        import shapely

        table = pq.read_table(str(file))
        geo = json.loads((table.schema.metadata or {}).get(b"geo", b"{}"))
        column = geo.get("columns", {}).get("geometry", {})
        crs = json.dumps(column["crs"]) if column.get("crs") else None
        geoms = shapely.from_wkb(table.column("geometry").to_pylist())
        cids = table.column("class_id").to_pylist() if "class_id" in table.column_names else None
        pairs = zip(geoms, cids or [1] * len(geoms), strict=True)
        return [(g, class_color(int(c or 1))) for g, c in pairs], crs, False
    if name.endswith((".gpkg", ".fgb")):
        import pyogrio.raw
        import shapely

        meta, _, wkb, fields = pyogrio.raw.read(str(file))
        geoms = shapely.from_wkb(wkb)
        names = list(meta["fields"])
        cids = fields[names.index("class_id")] if "class_id" in names else np.ones(len(geoms))
        pairs = zip(geoms, cids, strict=True)
        return [(g, class_color(int(c))) for g, c in pairs], meta.get("crs"), False
    text = file.read_text(encoding="utf-8")
    named_crs = None
    try:
        data = json.loads(text)
        features = data.get("features", []) if isinstance(data, dict) else data
        # pre-RFC 7946 files (e.g. SpaceNet labels) name their CRS
        named_crs = ((data.get("crs") or {}).get("properties") or {}).get("name")
    except json.JSONDecodeError:  # a GeoJSON sequence: one feature per line
        features = [json.loads(line.strip("\x1e")) for line in text.splitlines() if line.strip()]
    qupath = any("objectType" in (f.get("properties") or {}) for f in features[:10])
    lonlat = not qupath and named_crs is None
    return _geometries_from_json(features), named_crs, lonlat


def _to_thumbnail_pixels(geom: Any, thumb: Thumbnail, crs: str | None, lonlat: bool) -> Any:
    import shapely
    from pyproj import Transformer

    if thumb.georef.crs is not None and (crs is not None or lonlat):
        tr = Transformer.from_crs(crs or "EPSG:4326", thumb.georef.crs, always_xy=True)
        c, a, b, f, d, e = thumb.georef.to_gdal()
        det = a * e - b * d

        def apply(xy: np.ndarray) -> np.ndarray:
            x, y = tr.transform(xy[:, 0], xy[:, 1])
            col = (e * (x - c) - b * (y - f)) / det
            row = (-d * (x - c) + a * (y - f)) / det
            return np.column_stack([col, row]) * thumb.scale

        return shapely.transform(geom, apply)
    return shapely.transform(geom, lambda xy: xy * thumb.scale)


def render_preview(
    source: str | Path,
    out: str | Path,
    *,
    vectors: str | Path | None = None,
    labels: str | Path | None = None,
    size: int = 1024,
    alpha: float = 0.4,
    overwrite: bool = False,
) -> Path:
    """Write a PNG preview: thumbnail, mask overlay, vector outlines.

    Parameters
    ----------
    source
        A GeoTIFF/COG, a slide, or a gigaseg store (its ``source`` attribute names the image,
        and its labels are drawn as the mask).
    out
        PNG path.
    vectors
        Outlines to draw (any format ``gigaseg vectorize`` writes).
    labels
        A store whose labels to draw over ``source`` (when ``source`` is the image).
    size
        Long side of the thumbnail in pixels.
    alpha
        Opacity of the mask colours.
    overwrite
        Replace an existing PNG.
    """
    from PIL import Image, ImageDraw

    out_path = check_output(out, overwrite=overwrite)
    src = str(source)
    store = labels
    if labels is not None and is_remote(labels):
        raise InputError(
            f"--labels takes a local gigaseg store, and {redact(labels)} is remote; preview a "
            "label raster as the source ('gigaseg preview LABELS.tif') or copy the store locally"
        )
    if is_zarr_location(src) and (Path(src) / "zarr.json").is_file():
        from pipeline.store import read_attrs
        from pipeline.vectorize.source import open_labels

        open_labels(src)  # validates the store
        attrs = read_attrs(src)
        image = attrs.get("source")
        if not image or not location_exists(image):
            raise InputError(
                f"store {src} names source image {image!r}, which is not there; run "
                f"'gigaseg preview IMAGE --labels {src}' with the image"
            )
        store, src = src, str(image)
    thumb = read_thumbnail(src, size)
    canvas = Image.fromarray(thumb.rgb).convert("RGBA")
    if store is not None:
        mask, _ = _store_labels(Path(store), thumb.rgb.shape[:2])
        overlay = np.zeros((*mask.shape, 4), np.uint8)
        for cid in np.unique(mask[mask > 0]):
            overlay[mask == cid] = (*class_color(int(cid)), int(alpha * 255))
        canvas = Image.alpha_composite(canvas, Image.fromarray(overlay, "RGBA"))
    if vectors is not None:
        import shapely

        feats, crs, lonlat = read_vectors(vectors)
        draw = ImageDraw.Draw(canvas)
        for geom, rgb in feats:
            pix = _to_thumbnail_pixels(geom, thumb, crs, lonlat)
            color = (*rgb, 255)
            for part in shapely.get_parts(pix):
                rings = (
                    [part] if part.geom_type == "LineString" else [part.exterior, *part.interiors]
                )
                for ring in rings:
                    xy = [tuple(p) for p in np.asarray(ring.coords)]
                    if len(xy) >= 2:
                        draw.line(xy, fill=color, width=1)
    tmp = temporary_path(out_path)
    try:
        canvas.convert("RGB").save(tmp, format="PNG")
        commit(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path
