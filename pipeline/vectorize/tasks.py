"""What a worker does with one chunk, and how raw polygons become output features.

:class:`Job` carries everything a task needs (a small, picklable description of the source,
the settings and the output frame), so tasks read their own pixels and no array passes
through the scheduler. :func:`trace_task` returns the chunk's finished interior features (to
be streamed to the writer), its border pieces (in pixel coordinates, merged at the driver)
and, with centre-lines, its skeleton lines.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import shapely

from pipeline.export.features import FeatureBatch, Field, Schema
from pipeline.vectorize.centerlines import skeleton_segments
from pipeline.vectorize.cleanup import fill_holes, simplify_valid
from pipeline.vectorize.georef import Target
from pipeline.vectorize.instances import InstanceRules
from pipeline.vectorize.polygons import ChunkTrace, stable_ids, trace_chunk
from pipeline.vectorize.regularize import regularize_building
from pipeline.vectorize.settings import VectorizeSettings
from pipeline.vectorize.source import LabelSource

__all__ = ["ChunkResult", "Job", "finish_lines", "finish_polygons", "trace_task"]


@dataclass(frozen=True)
class Job:
    """A vectorize run as workers see it.

    Attributes
    ----------
    source
        The label source (without its in-memory array, which is sent per chunk).
    settings
        Validated settings.
    classes
        Class ids to trace as polygons (``None``: every non-zero id).
    roads
        Class ids traced as centre-lines (empty unless ``settings.centerlines``).
    buildings
        Class ids regularised (empty unless ``settings.regularize``).
    target
        Output frame of the format.
    crs
        Output CRS chosen by the user (``--crs``) for formats written in the source CRS.
    pixel_size
        Size of a pixel in working-frame units (at the raster centre).
    halo
        Context around a chunk for the skeleton, in pixels.
    spur
        Spurs shorter than this many pixels are pruned.
    names
        Class id -> name.
    instances
        Rules that separate touching objects (``None``: connected components).
    """

    source: LabelSource
    settings: VectorizeSettings
    classes: tuple[int, ...] | None
    roads: tuple[int, ...] = ()
    buildings: tuple[int, ...] = ()
    target: Target = "wgs84"
    crs: str | None = None
    pixel_size: float = 1.0
    halo: int = 64
    spur: float = 10.0
    names: dict[int, str] = field(default_factory=dict)
    instances: InstanceRules | None = None

    @property
    def context(self) -> int:
        """Pixels read around each chunk: the road halo or the instance rules' halo."""
        if self.instances is not None:
            return self.instances.halo
        return self.halo if self.roads else 0

    @property
    def schema_fields(self) -> tuple[Field, ...]:
        """The properties every feature of this run carries."""
        frame = self.source.frame
        fields = [Field("id", "int"), Field("class_id", "int"), Field("class", "str"),
                  Field(frame.area_field, "float")]  # fmt: skip
        if self.source.has_probabilities:
            fields.append(Field("mean_probability", "float"))
        if self.buildings:
            fields.append(Field("iou_traced", "float"))
        if self.roads:
            fields.append(Field(frame.length_field, "float"))
        return tuple(fields)

    def schema(self) -> Schema:
        """Return the writer schema."""
        kind = "mixed" if self.roads else "polygon"
        if self.roads and self.classes is not None and set(self.classes) <= set(self.roads):
            kind = "line"
        frame = self.source.frame
        return Schema(self.schema_fields, frame.target_crs(self.target, self.crs), kind,  # type: ignore[arg-type]
                      dict(self.names), dict(self.source.colors), frame.mpp)  # fmt: skip

    def name(self, class_id: int) -> str:
        """Class name of an id."""
        return self.names.get(int(class_id), f"class_{int(class_id)}")


@dataclass
class ChunkResult:
    """What one chunk task returns to the driver."""

    index: int
    features: FeatureBatch
    border: ChunkTrace
    lines: np.ndarray
    dropped: int
    seconds: dict[str, float]


def _batch(job: Job, geoms: np.ndarray, columns: dict[str, np.ndarray]) -> FeatureBatch:
    n = len(geoms)
    for f in job.schema_fields:
        if f.name not in columns:
            columns[f.name] = np.full(n, np.nan) if f.kind == "float" else np.zeros(n, np.int64)
    ordered = {f.name: columns[f.name] for f in job.schema_fields}
    return FeatureBatch(geoms, ordered)


def finish_polygons(
    job: Job,
    geoms: np.ndarray,
    class_id: np.ndarray,
    pixels: np.ndarray,
    prob_sum: np.ndarray | None,
) -> tuple[FeatureBatch, int]:
    """Pixel polygons -> cleaned output features (and how many ``min_area`` dropped).

    Clean-up runs in the metric working frame; a geometry that no step changed keeps its
    exact map coordinates (no round trip through the working CRS).
    """
    frame, s = job.source.frame, job.settings
    if len(geoms) == 0:
        return _batch(job, np.empty(0, object), {}), 0
    ids = stable_ids(geoms, job.source.shape[1])
    geo_map = frame.to_map(geoms)
    work = frame.to_work(geo_map)
    scale = frame.metres_per_unit**2
    iou_traced = np.full(len(geoms), np.nan)
    changed = np.zeros(len(geoms), bool)
    buildings = np.isin(class_id, job.buildings) if job.buildings else changed
    if s.fill_holes > 0 or s.simplify > 0 or buildings.any():
        work = work.copy()
        for i, geom in enumerate(work):
            out = fill_holes(geom, s.fill_holes, scale=scale)
            if buildings[i]:
                out, iou_traced[i] = regularize_building(out, job.pixel_size)
            elif s.simplify > 0:
                out = simplify_valid(out, s.simplify)
            if out is not geom:
                work[i], changed[i] = out, True
    area = shapely.area(work) * scale
    keep = area >= s.min_area if s.min_area > 0 else np.ones(len(geoms), bool)
    if changed.any():
        geo_map = geo_map.copy()
        geo_map[changed] = frame.from_work(work[changed])
    out_geoms = frame.to_target(geo_map[keep], job.target, job.crs)
    columns: dict[str, np.ndarray] = {
        "id": ids[keep],
        "class_id": class_id[keep].astype(np.int64),
        "class": np.asarray([job.name(c) for c in class_id[keep]], dtype=object),
        frame.area_field: area[keep],
    }
    if job.source.has_probabilities and prob_sum is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            columns["mean_probability"] = (prob_sum / np.maximum(pixels, 1))[keep]
    if job.buildings:
        columns["iou_traced"] = iou_traced[keep]
    return _batch(job, np.asarray(out_geoms, dtype=object), columns), int((~keep).sum())


def _line_ids(lines: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Stable line ids: from each line's first pixel pair in raster order (unique per line)."""
    h, w = shape
    out = np.empty(len(lines), np.int64)
    for i, line in enumerate(lines):
        xy = np.floor(shapely.get_coordinates(line)).astype(np.int64)
        a = xy[:-1, 1] * w + xy[:-1, 0]
        b = xy[1:, 1] * w + xy[1:, 0]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        step = hi - lo
        code = np.select([step == 1, step == w, step == w + 1], [0, 1, 2], 3)
        out[i] = h * w + int((lo * 4 + code).min())
    return out


def finish_lines(job: Job, lines: np.ndarray, class_id: np.ndarray) -> FeatureBatch:
    """Turn joined centre-lines (pixel coordinates) into simplified output features with lengths."""
    frame = job.source.frame
    if len(lines) == 0:
        return _batch(job, np.empty(0, object), {})
    ids = _line_ids(lines, job.source.shape)
    work = frame.to_work(frame.to_map(lines))
    tol = job.settings.simplify or job.pixel_size
    work = shapely.simplify(work, tol, preserve_topology=True)
    length = shapely.length(work) * frame.metres_per_unit
    out = frame.to_target(frame.from_work(work), job.target, job.crs)
    columns: dict[str, np.ndarray] = {
        "id": ids,
        "class_id": class_id.astype(np.int64),
        "class": np.asarray([job.name(c) for c in class_id], dtype=object),
        frame.length_field: length,
    }
    return _batch(job, np.asarray(out, dtype=object), columns)


def trace_task(
    job: Job,
    index: int,
    rows: tuple[int, int],
    cols: tuple[int, int],
    data: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> ChunkResult:
    """Trace one chunk: finished interior features, border pieces, skeleton lines.

    Parameters
    ----------
    job
        The run.
    index
        Chunk index (pieces from one chunk are never merged with each other).
    rows, cols
        The chunk's half-open row and column ranges.
    data
        Labels and probabilities of the read window, for in-memory sources (otherwise the
        task reads the source itself).
    """
    t0 = time.perf_counter()
    src = job.source
    height, width = src.shape
    halo = job.halo if job.roads else 0
    win_rows = (max(rows[0] - halo, 0), min(rows[1] + halo, height))
    win_cols = (max(cols[0] - halo, 0), min(cols[1] + halo, width))
    if data is None:
        labels, probs = src.read(win_rows, win_cols, probabilities=src.has_probabilities)
    else:
        labels, probs = data
    t_read = time.perf_counter()
    core = (slice(rows[0] - win_rows[0], rows[1] - win_rows[0]),
            slice(cols[0] - win_cols[0], cols[1] - win_cols[0]))  # fmt: skip
    core_labels = labels[core]
    core_probs = None if probs is None else probs[(slice(None), *core)]
    poly_classes = job.classes
    if poly_classes is not None and job.roads:
        poly_classes = tuple(c for c in poly_classes if c not in job.roads)
    if poly_classes == ():
        trace = trace_chunk(np.zeros((0, 0), np.uint8), row_off=rows[0], col_off=cols[0],
                            shape=src.shape)  # fmt: skip
    else:
        present = np.unique(core_labels) if core_probs is not None else np.empty(0, int)
        trace = trace_chunk(
            core_labels, row_off=rows[0], col_off=cols[0], shape=src.shape,
            connectivity=job.settings.connectivity, classes=poly_classes,
            probabilities=core_probs, channel_of={int(c): src.channel(int(c)) for c in present},
            exclude=job.roads,
        )  # fmt: skip
    t_trace = time.perf_counter()
    interior = trace.subset(~trace.border)
    batch, dropped = finish_polygons(job, interior.geometry, interior.class_id,
                                     interior.pixels, interior.prob_sum)  # fmt: skip
    border = trace.subset(trace.border)
    lines = np.empty(0, object)
    if job.roads:
        parts: list[tuple[int, shapely.LineString]] = []
        for cid in job.roads:
            mask = labels == cid
            if mask.any():
                segs = skeleton_segments(mask, row_off=win_rows[0], col_off=win_cols[0],
                                         core=(rows[0], rows[1], cols[0], cols[1]))  # fmt: skip
                parts.extend((cid, g) for g in segs)
        lines = np.empty(len(parts), object)
        lines[:] = parts
    t_end = time.perf_counter()
    seconds = {"read": t_read - t0, "trace": t_trace - t_read, "finish": t_end - t_trace}
    return ChunkResult(index, batch, border, lines, dropped, seconds)


def without_array(source: LabelSource) -> LabelSource:
    """Return the source without its in-memory array (sent per chunk instead)."""
    return replace(source, array=None)


__all__ += ["without_array"]
