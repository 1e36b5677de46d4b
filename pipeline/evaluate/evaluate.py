"""Score a prediction file against a truth file: the I/O edge of the evaluate stage.

Predictions are vector files (GeoJSON / GeoPackage, e.g. from ``gigaseg vectorize``) or label
rasters (a gigaseg Zarr store's ``labels``, or a GeoTIFF of class ids or probabilities). Truth is
a vector file (polygons for buildings, lines for roads) or a label raster. Geometries are
compared in one projected working CRS (the truth's when projected, else the prediction's, else
the UTM zone of the truth), so areas and lengths are in metres.

- polygons: object precision/recall/F1 (SpaceNet matching, :mod:`.objects`);
- lines: length precision/recall within a buffer (:mod:`.lines`);
- a raster prediction (or ``mask=``) adds pixel IoU/Dice/precision/recall, read in strips.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from affine import Affine

from pipeline.errors import InputError
from pipeline.evaluate.instances import (
    InstanceMetrics,
    components,
    instance_metrics,
    looks_like_instances,
)
from pipeline.evaluate.lines import LineMetrics, line_metrics
from pipeline.evaluate.objects import ObjectMetrics, match_objects
from pipeline.evaluate.pixels import PixelCounts
from pipeline.read import Georef, is_zarr_location, open_source, redact
from pipeline.read.location import location_suffix
from pipeline.tile.grid import Window

if TYPE_CHECKING:  # pyproj is imported where a CRS is made, not by `import pipeline`
    from pyproj import CRS

    from pipeline.sample.vectors import VectorLabels

__all__ = [
    "Evaluation",
    "PredictionRaster",
    "evaluate",
    "mask_to_polygons",
    "open_prediction_raster",
]

_VECTOR_SUFFIXES = frozenset({".geojson", ".json", ".gpkg"})
#: Largest raster (pixels) polygonised in memory for object metrics; larger ones should be
#: vectorized with ``gigaseg vectorize`` (chunked, exact seams) and scored as vectors.
MAX_POLYGONIZE_PIXELS = 100_000_000
_STRIP = 1024


@dataclass(frozen=True)
class Evaluation:
    """Scores of one prediction against one truth.

    Attributes
    ----------
    kind
        ``"buildings"`` (polygons), ``"roads"`` (lines) or ``"pixels"`` (rasters only).
    prediction, truth
        The inputs.
    objects, lines, pixels
        Object metrics, line metrics and per-class pixel metrics (``None`` when not computed).
    counts
        Number of predicted and true objects.
    crs
        The working CRS the geometries were compared in.
    """

    kind: str
    prediction: str
    truth: str
    objects: ObjectMetrics | None = None
    lines: LineMetrics | None = None
    pixels: dict[str, Any] | None = None
    counts: dict[str, int] = field(default_factory=dict)
    crs: str | None = None
    instances: InstanceMetrics | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the scores as a JSON-able dict (NaN written as ``null``)."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "prediction": self.prediction,
            "truth": self.truth,
            "crs": self.crs,
            "counts": self.counts,
        }
        if self.objects is not None:
            out["objects"] = self.objects.to_dict()
        if self.lines is not None:
            out["lines"] = self.lines.to_dict()
        if self.pixels is not None:
            out["pixels"] = self.pixels
        if self.instances is not None:
            out["instances"] = self.instances.to_dict()
        if self.note:
            out["note"] = self.note
        result: dict[str, Any] = _finite(out)
        return result

    def to_json(self) -> str:
        """Return :meth:`to_dict` as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        """Return a short human-readable table of the scores."""
        rows: list[tuple[str, str]] = []
        if self.objects is not None:
            o = self.objects
            rows += [
                (f"object F1 (IoU >= {o.iou_threshold:g})", _fmt(o.f1)),
                ("object precision", _fmt(o.precision)),
                ("object recall", _fmt(o.recall)),
                ("matched / predicted / true", f"{o.tp} / {o.tp + o.fp} / {o.tp + o.fn}"),
                ("mean IoU of matches", _fmt(o.mean_iou)),
                ("merges (1 prediction, >= 2 truths)", f"{o.merges} ({o.merged_truths} truths)"),
                (
                    "splits (1 truth, >= 2 predictions)",
                    f"{o.splits} ({o.split_predictions} predictions)",
                ),
            ]
        if self.instances is not None:
            rows.append(("AJI (aggregated Jaccard)", _fmt(self.instances.aji)))
        if self.lines is not None:
            line = self.lines
            rows += [
                (f"length precision (buffer {line.buffer:g})", _fmt(line.precision)),
                (f"length recall (buffer {line.buffer:g})", _fmt(line.recall)),
                ("length F1", _fmt(line.f1)),
                (
                    "predicted / true length",
                    f"{line.predicted_length:.1f} / {line.true_length:.1f}",
                ),
            ]
        for name, scores in (self.pixels or {}).items():
            rows += [
                (f"pixel IoU [{name}]", _fmt(scores["iou"])),
                (f"pixel Dice [{name}]", _fmt(scores["dice"])),
                (f"pixel precision [{name}]", _fmt(scores["precision"])),
                (f"pixel recall [{name}]", _fmt(scores["recall"])),
            ]
        width = max((len(name) for name, _ in rows), default=6)
        lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
        lines += [f"{name:<{width}}  {value}" for name, value in rows]
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)


def _fmt(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


@dataclass
class PredictionRaster:
    """A label raster opened for windowed reads (a gigaseg store or a GeoTIFF)."""

    path: str
    height: int
    width: int
    georef: Georef
    classes: tuple[str, ...]
    _read: Any = field(repr=False)
    nodata: int | None = None

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Read class ids of a window."""
        return np.asarray(self._read(row, col, height, width))


def open_prediction_raster(path: str | Path, *, threshold: float = 0.5) -> PredictionRaster:
    """Open a gigaseg Zarr store (its ``labels``) or a GeoTIFF of class ids / probabilities.

    Parameters
    ----------
    path
        Store directory or raster file.
    threshold
        For floating-point rasters (probabilities): class 1 where ``p >= threshold``.

    Returns
    -------
    PredictionRaster
        The raster's grid and a window reader.
    """
    if is_zarr_location(path):
        from pipeline.store import open_group

        try:
            group = open_group(path)
            labels: Any = group["labels"]
        except (KeyError, InputError) as exc:
            raise InputError(
                f"{path} is not a gigaseg store with a 'labels' array; run gigaseg predict first"
            ) from exc
        attrs: dict[str, Any] = dict(group.attrs)
        height, width = (int(v) for v in labels.shape[-2:])
        classes = tuple(str(c) for c in attrs.get("classes") or ("class_1",))
        if len(classes) > 1 and classes[0].lower() == "background":
            classes = classes[1:]
        read_store = _store_reader(labels, classes)
        if len(classes) == 2 and classes[-1].lower() == "boundary":
            classes = classes[:1]  # a boundary model: its objects are interior + boundary
        nodata = attrs.get("labels_nodata")
        return PredictionRaster(
            str(path), height, width, Georef.from_attrs(attrs), classes, read_store,
            None if nodata is None else int(nodata),
        )  # fmt: skip
    source = open_source(path, bands=[1])
    floating = source.dtype.kind == "f"

    def read(row: int, col: int, height: int, width: int) -> np.ndarray:
        data: np.ndarray = source.read(Window(row, col, height, width))[0]
        return (data >= threshold).astype(np.uint8) if floating else data

    height, width = source.shape
    nodata = getattr(source, "nodata", None)
    keep = None if floating or nodata is None or not float(nodata).is_integer() else int(nodata)
    return PredictionRaster(source.name, height, width, source.georef, ("class_1",), read, keep)


def _store_reader(labels: Any, classes: tuple[str, ...]) -> Any:
    """Window reader of a store's labels; a boundary model's boundary pixels count as class 1.

    ``gigaseg train`` with ``data.boundary`` makes models with an interior / boundary /
    background output; the pixels of an object are its interior and its boundary.
    """
    if len(classes) == 2 and classes[-1].lower() == "boundary":

        def read(r: int, c: int, h: int, w: int) -> np.ndarray:
            data = np.asarray(labels[r : r + h, c : c + w])
            return np.where(data == 2, 1, data).astype(data.dtype)

        return read
    return lambda r, c, h, w: labels[r : r + h, c : c + w]


def mask_to_polygons(mask: np.ndarray, transform: Affine) -> np.ndarray:
    """Trace the 4-connected regions of a boolean mask as polygons in map coordinates.

    Parameters
    ----------
    mask
        ``(h, w)`` boolean array.
    transform
        Pixel -> map affine of the array.

    Returns
    -------
    numpy.ndarray
        Object array of polygons (pixel edges exactly, holes kept).
    """
    from rasterio.features import shapes

    traced = [
        shapely.geometry.shape(geometry)
        for geometry, value in shapes(
            mask.astype(np.uint8), mask=mask, transform=transform, connectivity=4
        )
        if value == 1
    ]
    out = np.empty(len(traced), dtype=object)
    out[:] = traced
    return out


def _working_crs(*candidates: CRS | None, geometries: np.ndarray | None = None) -> CRS | None:
    for crs in candidates:
        if crs is not None and crs.is_projected:
            return crs
    known = next((crs for crs in candidates if crs is not None), None)
    if known is None or geometries is None or not len(geometries):
        return known
    from pyproj import CRS
    from pyproj.aoi import AreaOfInterest
    from pyproj.database import query_utm_crs_info

    centre = shapely.centroid(shapely.union_all(shapely.envelope(geometries)))
    lon, lat = centre.x, centre.y
    if not known.is_geographic:
        return known
    info = query_utm_crs_info(
        datum_name="WGS 84", area_of_interest=AreaOfInterest(lon, lat, lon, lat)
    )
    return CRS.from_epsg(int(info[0].code)) if info else known


def _kind(geometries: np.ndarray) -> str:
    if not len(geometries):
        return "buildings"
    types = shapely.get_type_id(geometries)
    lines = np.isin(types, [1, 2, 5]).sum()
    return "roads" if lines > len(types) / 2 else "buildings"


def _raster_truth_counts(
    prediction: PredictionRaster,
    truth_path: str,
    truth: VectorLabels | None,
    line_width: float | None,
) -> dict[str, Any]:
    """Pixel metrics of a prediction raster against vector or raster truth, in strips."""
    from pipeline.sample.labels import RasterLabels, VectorLabelSource

    grid: Any = prediction
    if truth is not None:
        classes = prediction.classes
        source: Any = VectorLabelSource(truth, grid, classes=classes, line_width=line_width)
    else:
        source = RasterLabels(truth_path, grid)
    counts = PixelCounts(len(prediction.classes))
    for row in range(0, prediction.height, _STRIP):
        height = min(_STRIP, prediction.height - row)
        counts.update(
            prediction.read(row, 0, height, prediction.width),
            source.window(row, 0, height, prediction.width),
        )
    if truth is None:
        source.close()
    return counts.to_dict(prediction.classes)


def _read_truth(path: str, prop: str | None, value: str | None) -> VectorLabels:
    """Read true geometries, keeping those whose ``prop`` equals ``value`` when given."""
    from pipeline.sample.vectors import VectorLabels, read_vectors

    truth = read_vectors(path, prop=prop)
    if value is None:
        return truth
    keep = np.array([str(v) == value for v in truth.values], dtype=bool)
    return VectorLabels(
        truth.geometries[keep],
        tuple(v for v, k in zip(truth.values, keep, strict=True) if k),
        truth.crs,
    )


def _predicted_vectors(prediction: str, raster: PredictionRaster | None, kind: str) -> VectorLabels:
    """Read a vector prediction, or trace a (small) raster prediction's class 1."""
    from pipeline.sample.vectors import VectorLabels, read_vectors

    if raster is None:
        return read_vectors(prediction)
    if kind == "roads":
        raise InputError(
            f"road metrics need centre-lines; run gigaseg vectorize --centerlines on {prediction} "
            "and evaluate that file (give the store as --mask for pixel metrics)"
        )
    if raster.height * raster.width > MAX_POLYGONIZE_PIXELS:
        raise InputError(
            f"{prediction} has {raster.height}x{raster.width} pixels, too many to trace in "
            "memory; run gigaseg vectorize on it and evaluate the vector file"
        )
    polygons = mask_to_polygons(
        raster.read(0, 0, raster.height, raster.width) == 1, raster.georef.transform
    )
    return VectorLabels(polygons, (None,) * len(polygons), raster.georef.crs_obj)


def _read_instance_raster(source: Any) -> tuple[np.ndarray, Any, Affine]:
    """Band 1 of a label raster with its own dtype (ids above 255 stay distinct).

    ``source`` comes from :func:`pipeline.read.open_source`, so a URL or ``/vsi*/`` truth
    works like a local file; pixels GDAL marks invalid (nodata, an alpha band or an internal
    mask) are background (0).
    """
    height, width = source.shape
    if height * width > MAX_POLYGONIZE_PIXELS:
        raise InputError(
            f"truth {source.name} has {height}x{width} pixels, too many for instance metrics "
            "in memory; evaluate a crop of it"
        )
    window = Window(0, 0, height, width)
    pixels = source.read(window)
    data = np.where(source.valid_pixels(window, pixels), pixels[0], 0).astype(pixels.dtype)
    return data, source.georef.crs_obj, source.georef.transform


def _distinct_ids(source: Any, stop: int) -> int:
    """Distinct non-zero valid values of band 1, read in strips, counted up to ``stop``."""
    height, width = source.shape
    seen: set[Any] = set()
    for row in range(0, height, _STRIP):
        window = Window(row, 0, min(_STRIP, height - row), width)
        pixels = source.read(window)
        values = pixels[0][source.valid_pixels(window, pixels)]
        seen.update(np.unique(values[values != 0]).tolist())
        if len(seen) >= stop:
            break
    return len(seen)


def _predicted_instances(
    prediction: str,
    raster: PredictionRaster | None,
    shape: tuple[int, int],
    crs: Any,
    transform: Affine,
    min_area: float,
) -> np.ndarray:
    """Predicted objects as an id raster on the truth's grid.

    A vector prediction is burnt in polygon by polygon (one id each); a label raster is
    split into connected regions, unless it already holds instance ids.
    """
    if raster is None:
        from rasterio.features import rasterize

        from pipeline.sample.vectors import read_vectors

        vectors = read_vectors(prediction)
        if crs is not None and vectors.crs is not None:
            vectors = vectors.to_crs(crs)
        geoms = [g for g in vectors.geometries if g is not None and not g.is_empty]
        if min_area > 0:
            geoms = [g for g in geoms if g.area >= min_area]
        if not geoms:
            return np.zeros(shape, np.int32)
        shapes = ((g, i) for i, g in enumerate(geoms, start=1))
        burnt = rasterize(shapes, out_shape=shape, transform=transform, fill=0, dtype="int32")
        return np.asarray(burnt)
    if (raster.height, raster.width) != shape:
        raise InputError(
            f"prediction {redact(prediction)} is {raster.height}x{raster.width} pixels but the "
            f"truth is "
            f"{shape[0]}x{shape[1]}; instance metrics need the same grid"
        )
    if crs is not None and raster.georef.crs_obj is not None and raster.georef.crs_obj != crs:
        raise InputError(
            f"prediction {redact(prediction)} is in {raster.georef.crs} but the truth in "
            f"{crs.to_string()}; instance metrics need the same grid"
        )
    if not raster.georef.transform.almost_equals(transform, precision=1e-6):
        raise InputError(
            f"prediction {redact(prediction)} and the truth have the same size but not the same "
            f"grid (transforms {tuple(raster.georef.transform)[:6]} and {tuple(transform)[:6]}); "
            "instance metrics need the same grid"
        )
    labels = raster.read(0, 0, raster.height, raster.width)
    if raster.nodata is not None:  # no data (e.g. a store's 255 where tiles were skipped)
        labels = np.where(labels == raster.nodata, 0, labels)
    if looks_like_instances(labels, len(raster.classes)):
        return np.asarray(labels)
    return components(labels > 0)


def _maybe_instances(
    prediction: str,
    truth: str,
    raster: PredictionRaster | None,
    kind: str,
    truth_instances: bool | None,
    iou_threshold: float,
    min_area: float,
) -> Evaluation | None:
    """Score an instance-id truth raster (given or detected); ``None`` for class rasters."""
    source = open_source(truth, bands=[1])
    classes = len(raster.classes) if raster is not None else 1
    height, width = source.shape
    # too large to hold: only >= 3 distinct ids against one class are told apart, in strips
    too_large = height * width > MAX_POLYGONIZE_PIXELS
    if truth_instances is None and too_large and (classes != 1 or _distinct_ids(source, 3) < 3):
        return None
    labels, crs, transform = _read_instance_raster(source)
    detected = looks_like_instances(labels, classes)
    ids = len(np.unique(labels[labels != 0]))
    if truth_instances is None:
        if not detected or classes != 1:
            return None
        if kind == "pixels":
            raise InputError(
                f"truth {redact(truth)} holds {ids} distinct ids for a one-class prediction: they "
                "look like instance ids (one per object), which pixel metrics would score as wrong "
                "classes; pass --truth-instances for object F1 and AJI, or give a 0/1 mask"
            )
    predicted = _predicted_instances(prediction, raster, labels.shape, crs, transform, min_area)
    scores = instance_metrics(predicted, labels, iou_threshold=iou_threshold)
    foreground = PixelCounts(1)
    foreground.update((predicted > 0).astype(np.uint8), (labels > 0).astype(np.uint8))
    how = "given" if truth_instances else "detected"
    return Evaluation(
        "instances",
        redact(prediction),
        redact(truth),
        objects=scores.objects,
        pixels=foreground.to_dict(("foreground",)),
        counts={"predicted": scores.predicted, "true": scores.true},
        crs=crs.to_string() if crs else None,
        instances=scores,
        note=f"truth read as instance ids ({how}): {ids} objects",
    )


def evaluate(
    prediction: str | Path,
    truth: str | Path,
    *,
    kind: str = "auto",
    mask: str | Path | None = None,
    iou_threshold: float = 0.5,
    buffer: float = 3.0,
    threshold: float = 0.5,
    min_area: float = 0.0,
    truth_property: str | None = None,
    truth_class: str | None = None,
    line_width: float | None = None,
    truth_instances: bool | None = None,
) -> Evaluation:
    """Score a prediction against the truth.

    Parameters
    ----------
    prediction
        Vector file (GeoJSON/GeoPackage) or label raster (gigaseg store, GeoTIFF).
    truth
        Vector file (polygons or lines) or label raster.
    kind
        ``"buildings"``, ``"roads"``, ``"pixels"`` or ``"auto"`` (lines -> roads, polygons ->
        buildings, raster truth -> pixels).
    mask
        Optional prediction raster for pixel metrics when ``prediction`` is a vector file.
    iou_threshold
        Object matching threshold (SpaceNet: 0.5).
    buffer
        Road tolerance in metres.
    threshold
        Probability threshold for floating-point prediction rasters.
    min_area
        Drop predicted polygons smaller than this (m²) before matching.
    truth_property, truth_class
        Keep only truth features whose ``truth_property`` equals ``truth_class``.
    line_width
        Width (metres) true lines are buffered to for pixel metrics (default ``2 * buffer``).
    truth_instances
        The truth raster holds instance ids (one per object): score object F1 and AJI.
        ``None`` detects it (one-class prediction, values that look like object ids);
        ``kind="pixels"`` on such a raster is refused instead of scoring ids as classes.

    Returns
    -------
    Evaluation
        The scores; ``.to_json()`` and ``.table()`` format them.
    """
    prediction, truth = str(prediction), str(truth)
    truth_is_vector = location_suffix(truth) in _VECTOR_SUFFIXES
    pred_is_vector = location_suffix(prediction) in _VECTOR_SUFFIXES
    truth_vectors = _read_truth(truth, truth_property, truth_class) if truth_is_vector else None
    asked = kind
    if kind == "auto":
        kind = _kind(truth_vectors.geometries) if truth_vectors is not None else "pixels"
    if kind not in ("buildings", "roads", "pixels"):
        raise InputError(f"kind must be buildings, roads, pixels or auto; got {kind!r}")
    raster = None
    if not pred_is_vector:
        raster = open_prediction_raster(prediction, threshold=threshold)
    elif mask is not None:
        raster = open_prediction_raster(mask, threshold=threshold)
    if truth_vectors is None and truth_instances is not False:
        scored = _maybe_instances(
            prediction, truth, raster, asked, truth_instances, iou_threshold, min_area
        )
        if scored is not None:
            return scored
    pixels = None
    if raster is not None:
        pixels = _raster_truth_counts(raster, truth, truth_vectors, line_width or 2 * buffer)
    if kind == "pixels" or truth_vectors is None:
        if pixels is None:
            raise InputError(
                f"pixel metrics need a prediction raster; {prediction} is a vector file "
                "(give mask=STORE or a vector truth)"
            )
        return Evaluation("pixels", redact(prediction), redact(truth), pixels=pixels)
    predicted = _predicted_vectors(prediction, None if pred_is_vector else raster, kind)
    work = _working_crs(truth_vectors.crs, predicted.crs, geometries=truth_vectors.geometries)
    true_geoms = truth_vectors.to_crs(work).geometries
    pred_geoms = predicted.to_crs(work).geometries
    if kind == "buildings":
        true_geoms = true_geoms[np.isin(shapely.get_type_id(true_geoms), [3, 6])]
        pred_geoms = pred_geoms[np.isin(shapely.get_type_id(pred_geoms), [3, 6])]
        if min_area > 0 and len(pred_geoms):
            pred_geoms = pred_geoms[shapely.area(pred_geoms) >= min_area]
        objects = match_objects(pred_geoms, true_geoms, iou_threshold=iou_threshold)
        return Evaluation(
            "buildings",
            redact(prediction),
            redact(truth),
            objects=objects,
            pixels=pixels,
            counts={"predicted": len(pred_geoms), "true": len(true_geoms)},
            crs=work.to_string() if work else None,
        )
    lines = line_metrics(pred_geoms, true_geoms, buffer=buffer)
    return Evaluation(
        "roads",
        redact(prediction),
        redact(truth),
        lines=lines,
        pixels=pixels,
        counts={"predicted": len(pred_geoms), "true": len(true_geoms)},
        crs=work.to_string() if work else None,
    )
