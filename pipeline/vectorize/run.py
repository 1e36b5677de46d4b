"""``pipeline.vectorize``: label raster -> exact polygons -> one output file.

The driver plans the chunk grid, hands one task per chunk to :class:`pipeline.runner.Runner`
(in this process for a single chunk or ``workers=0``, else a ``LocalCluster``, a given
``client`` or a ``scheduler`` address), and consumes results as they complete: interior
features go straight to the writer, border pieces are kept (they are few: only polygons
that touch a seam) and merged at the end. At most a few chunk results are in flight, so
driver memory is bounded by the border pieces, not by the raster or the number of features.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import ConfigError
from pipeline.export import (
    FeatureBatch,
    FileWriter,
    check_not_input,
    check_output,
    open_writer,
    target_of,
)
from pipeline.read import is_remote, redact
from pipeline.runner import Runner
from pipeline.settings import RunnerSettings, split_options
from pipeline.store.lock import acquire
from pipeline.vectorize.centerlines import prune_spurs
from pipeline.vectorize.georef import Target
from pipeline.vectorize.instance_tasks import instance_task, join_instances
from pipeline.vectorize.instances import METHODS, InstanceRules
from pipeline.vectorize.polygons import ChunkTrace
from pipeline.vectorize.seams import merge_border_pieces
from pipeline.vectorize.settings import VectorizeSettings, parse_format
from pipeline.vectorize.source import LabelSource, open_labels, resolve_classes, skipped_tiles
from pipeline.vectorize.tasks import (
    Job,
    finish_lines,
    finish_polygons,
    trace_task,
    without_array,
)

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "VectorizeReport",
    "empty_chunks",
    "instance_rules",
    "parse_output_crs",
    "plan_chunks",
    "vectorize",
]

# 4096 px chunks: on 16384² with 100k objects, 2 workers ran 1.65x the whole-raster trace
# (1.38x at 2048, where per-chunk driver overhead competes with the workers for 2 cores);
# a 4096² uint8 chunk is 16 MiB, so memory stays bounded.
DEFAULT_CHUNK = 4096
_FINISH_BATCH = 4096


@dataclass
class VectorizeReport:
    """What a vectorize run did; ``to_dict()`` is JSON-able."""

    input: str
    output: str
    format: str
    shape: tuple[int, int]
    chunk: int
    chunks: int
    connectivity: int
    workers: int
    features: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    border_pieces: int = 0
    merged_features: int = 0
    dropped_min_area: int = 0
    lines: int = 0
    skipped: int = 0
    #: Chunks not read: every tile under them is marked skipped in the store's ledger.
    chunks_skipped: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as plain JSON types."""
        out = asdict(self)
        out["shape"] = list(self.shape)
        return out


def plan_chunks(
    shape: tuple[int, int], chunk: int
) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Row and column ranges of the chunk grid, row-major.

    Examples
    --------
    >>> plan_chunks((3, 5), 4)
    [((0, 3), (0, 4)), ((0, 3), (4, 5))]
    """
    height, width = shape
    return [
        ((r, min(r + chunk, height)), (c, min(c + chunk, width)))
        for r in range(0, height, chunk)
        for c in range(0, width, chunk)
    ]


def empty_chunks(
    grid: list[tuple[tuple[int, int], tuple[int, int]]],
    skipped: np.ndarray,
    tile: int,
    context: int = 0,
) -> set[int]:
    """Chunks whose window (the chunk grown by ``context``) lies in skipped tiles only.

    Their tasks would read nothing but background and return nothing, so they are not run.

    Examples
    --------
    >>> grid = plan_chunks((4, 8), 4)
    >>> sorted(empty_chunks(grid, np.array([[True, True, False, True]]), 2))
    [0]
    >>> sorted(empty_chunks(grid, np.array([[True, True, False, True]]), 2, context=1))
    []
    """
    rows, cols = skipped.shape
    empty: set[int] = set()
    for i, ((r0, r1), (c0, c1)) in enumerate(grid):
        t0, t1 = max(r0 - context, 0) // tile, min((r1 - 1 + context) // tile, rows - 1)
        u0, u1 = max(c0 - context, 0) // tile, min((c1 - 1 + context) // tile, cols - 1)
        if skipped[t0 : t1 + 1, u0 : u1 + 1].all():
            empty.add(i)
    return empty


def _not_to_read(
    source: LabelSource, grid: list[tuple[tuple[int, int], tuple[int, int]]], context: int
) -> set[int]:
    """Chunks of ``grid`` a store's ledger shows to hold only skipped tiles (see above)."""
    ledger = skipped_tiles(source)
    return set() if ledger is None else empty_chunks(grid, *ledger, context)


def _default_chunk(source: LabelSource) -> int:
    block = max(1, min(source.block))
    if block >= DEFAULT_CHUNK:
        return block
    return max(block, DEFAULT_CHUNK // block * block)


def _pick_classes(
    names: dict[int, str], selected: tuple[int, ...] | None, word: str
) -> tuple[int, ...]:
    """Classes whose name mentions ``word`` (e.g. road), else all selected classes."""
    pool = selected if selected is not None else tuple(sorted(names))
    hits = tuple(c for c in pool if word in names.get(c, "").lower())
    if hits:
        return hits
    if selected is not None:
        return selected
    return tuple(sorted(names)) if names else (1,)


def _pixel_size(job_source: LabelSource) -> float:
    import shapely

    frame = job_source.frame
    h, w = job_source.shape
    box = shapely.box(w // 2, h // 2, w // 2 + 1, h // 2 + 1)
    return float(math.sqrt(shapely.area(frame.to_work(frame.to_map(box)))))


def parse_output_crs(crs: str | None, fmt: str) -> str | None:
    """Validate ``--crs`` for an output format; return it as pyproj spells it, or ``None``.

    Raises
    ------
    ConfigError
        GeoJSON (EPSG:4326 by RFC 7946) or QuPath (pixels) with a CRS, or an unknown CRS.
    """
    if crs is None or str(crs).strip() == "":
        return None
    if target_of(fmt) != "source":
        why = "EPSG:4326 by RFC 7946" if target_of(fmt) == "wgs84" else "in level-0 pixels"
        raise ConfigError(
            f"--crs does not apply to {fmt}: it is always {why}; write gpkg, flatgeobuf or "
            "geoparquet to choose the CRS, or drop --crs"
        )
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        return str(CRS.from_user_input(crs).to_string())
    except CRSError:
        raise ConfigError(
            f"--crs {crs!r} is not a CRS pyproj knows; give e.g. EPSG:3857 or a WKT string"
        ) from None


def _open_ends(
    input: str | os.PathLike[str] | np.ndarray,
    out: str | os.PathLike[str],
    fmt: str,
    crs: str | None,
    overwrite: bool,
    threshold: float | None,
) -> tuple[Path, LabelSource, str | None]:
    """Check the output (and its CRS) before any work, then open the input."""
    out_crs = parse_output_crs(crs, fmt)
    if not isinstance(input, np.ndarray) and not is_remote(input):
        check_not_input(Path(out), Path(input))
    out_path = check_output(Path(out), overwrite=overwrite)
    source = open_labels(input, threshold=threshold)
    if out_crs is not None and source.frame.kind != "geo":
        raise ConfigError(
            f"--crs {out_crs} needs a georeferenced input; {source.path or 'the input'} has no "
            "CRS (slides and plain arrays are written in pixels or µm); drop --crs"
        )
    return out_path, source, out_crs


def _finish_merged(job: Job, geoms: np.ndarray, cls: np.ndarray, px: np.ndarray,
                   ps: np.ndarray | None) -> tuple[FeatureBatch, int]:  # fmt: skip
    return finish_polygons(job, geoms, cls, px, ps)


def vectorize(
    input: str | os.PathLike[str] | np.ndarray,
    out: str | os.PathLike[str],
    settings: VectorizeSettings | None = None,
    *,
    format: str | None = None,
    runner: RunnerSettings | None = None,
    client: Client | None = None,
    overwrite: bool = False,
    progress: bool = True,
    object_type: str = "detection",
    crs: str | None = None,
    **options: Any,
) -> VectorizeReport:
    """Vectorize a label raster into one GeoJSON/GeoParquet/GeoPackage/FlatGeobuf/QuPath file.

    Parameters
    ----------
    input
        A gigaseg store, a single-band label or probability raster (GeoTIFF, COG, Zarr
        array), or a 2-D NumPy array.
    out
        Output file; written under a temporary name and renamed when complete.
    settings
        What to trace and how to clean it (:class:`~pipeline.vectorize.settings.VectorizeSettings`:
        classes, threshold, min_area, fill_holes, simplify, regularize, centerlines,
        connectivity, chunk, instances, reach, min_separation, marker_threshold,
        min_marker_area, halo, spur_length), passed whole from the CLI or a workflow.
    format
        ``geojson``, ``geojsonseq``, ``geoparquet``, ``gpkg``, ``flatgeobuf`` or ``qupath``;
        default from the extension of ``out``.
    runner
        Where the chunk tasks run (:class:`~pipeline.settings.RunnerSettings`: ``workers``,
        ``scheduler``, ``retries``; also accepted by name, e.g. ``workers=0``). By default a
        job of one chunk, or a machine with one core, runs in this process; larger jobs
        start one single-threaded worker process per core.
    client
        Use a running Dask client instead.
    overwrite
        Replace an existing output.
    progress
        Show a progress bar on stderr.
    object_type
        QuPath ``objectType``: ``detection`` or ``annotation``.
    crs
        Output CRS for GeoPackage, FlatGeobuf and GeoParquet (any pyproj input: ``EPSG:3857``,
        WKT...); default the source's. GeoJSON is EPSG:4326 by RFC 7946 and QuPath is in
        pixels, so they refuse it.
    **options
        Any field of ``settings`` or of ``runner`` by name (``min_area=10, workers=0``),
        applied on top.

    Returns
    -------
    VectorizeReport
        Counts and timings.
    """
    t0 = time.perf_counter()
    settings, settings_runner = split_options(
        options, settings or VectorizeSettings(), runner or RunnerSettings()
    )
    fmt = parse_format(format, Path(out))
    out_path, source, out_crs = _open_ends(input, out, fmt, crs, overwrite, settings.threshold)
    side = _default_chunk(source) if settings.chunk is None else settings.chunk
    job = replace(
        _make_job(source, settings, settings.classes, fmt, settings.halo, settings.spur_length),
        crs=out_crs,
    )
    rules = instance_rules(
        source, job, settings.instances, settings.reach, settings.min_separation,
        settings.marker_threshold, settings.min_marker_area,
    )  # fmt: skip
    if rules is not None:
        job = replace(job, instances=rules)
    grid = plan_chunks(source.shape, side)
    empty = _not_to_read(source, grid, job.context)  # a sparse store's skipped tiles
    report = VectorizeReport(
        input=redact(input) if not isinstance(input, np.ndarray) else "<array>",
        output=str(out_path), format=fmt, shape=source.shape, chunk=side, chunks=len(grid),
        chunks_skipped=len(empty),
        connectivity=settings.connectivity, workers=0,
    )  # fmt: skip
    times = [t0, 0.0, 0.0, 0.0]
    stage = {"read": 0.0, "trace": 0.0, "finish": 0.0}
    tasks: Runner | None = None
    lock = acquire(out_path, uuid.uuid4().hex)  # one run per output: a second fails here
    try:
        check_output(out_path, overwrite=overwrite)  # again: a run may have finished it since
        sink = _Sink(open_writer(out_path, fmt, job.schema(), object_type=object_type), report)
        try:
            tasks = Runner(settings_runner, client=client, tasks=len(grid), kind="python")
            report.workers = tasks.workers
            times[1] = time.perf_counter()
            border, lines, pieces, markers = _trace_chunks(job, source, grid, tasks, sink, stage,
                                                           progress, empty)  # fmt: skip
            times[2] = time.perf_counter()
            if job.instances is not None:
                _join_instances(job, pieces, markers, tasks, sink)
            _merge_border(job, border, tasks, sink)
            _join_lines(job, lines, sink)
            times[3] = time.perf_counter()
            sink.writer.close()
            report.skipped = int(getattr(sink.writer, "skipped", 0))
        except BaseException:
            sink.writer.abort()
            raise
    finally:
        if tasks is not None:
            tasks.close()
        lock.release()
    report.features = sink.writer.count
    report.per_class = {job.name(c): n for c, n in sorted(sink.per_class.items())}
    t_end = time.perf_counter()
    report.seconds = {
        "setup": round(times[1] - t0, 3),
        "trace_wall": round(times[2] - times[1], 3),
        "merge_and_lines": round(times[3] - times[2], 3),
        "close": round(t_end - times[3], 3),
        "total": round(t_end - t0, 3),
        **{f"workers_{k}": round(v, 3) for k, v in stage.items()},
    }
    return report


def _trace_chunks(
    job: Job,
    source: LabelSource,
    grid: list[tuple[tuple[int, int], tuple[int, int]]],
    tasks: Runner,
    sink: _Sink,
    stage: dict[str, float],
    progress: bool,
    empty: set[int] | None = None,
) -> tuple[list[tuple[int, ChunkTrace]], list[Any], list[tuple[int, Any]], list[tuple[int, Any]]]:
    """Run the chunk tasks (not those in ``empty``); write features; keep what to join."""
    border: list[tuple[int, ChunkTrace]] = []
    lines: list[Any] = []
    pieces: list[tuple[int, Any]] = []
    markers: list[tuple[int, Any]] = []
    task = trace_task if job.instances is None else instance_task
    traced = tasks.map(
        task, _chunk_calls(job, source, grid, empty or set()), total=len(grid) - len(empty or ()),
        progress=progress, desc="vectorize", unit="chunk",
    )  # fmt: skip
    for result in traced:
        sink.emit(result.features, result.dropped)
        if job.instances is not None:
            pieces.append((result.index, result.pieces))
            markers.append((result.index, result.markers))
        else:
            if len(result.border.geometry):
                border.append((result.index, result.border))
            lines.extend(result.lines.tolist())
        for k, v in result.seconds.items():
            stage[k] = stage.get(k, 0.0) + v
    return border, lines, pieces, markers


def _make_job(
    source: LabelSource,
    settings: VectorizeSettings,
    classes: Sequence[str | int] | None,
    fmt: str,
    halo: int,
    spur: float,
) -> Job:
    selected = resolve_classes(source, list(classes) if classes else None)
    names = dict(source.names)
    roads = _pick_classes(names, selected, "road") if settings.centerlines else ()
    buildings: tuple[int, ...] = ()
    if settings.regularize:
        buildings = tuple(c for c in _pick_classes(names, selected, "building") if c not in roads)
    target: Target = target_of(fmt)  # type: ignore[assignment]
    return Job(
        source=without_array(source), settings=settings, classes=selected, roads=roads,
        buildings=buildings, target=target, pixel_size=_pixel_size(source), halo=halo,
        spur=spur, names=names,
    )  # fmt: skip


def _chunk_calls(
    job: Job,
    source: LabelSource,
    grid: list[tuple[tuple[int, int], tuple[int, int]]],
    empty: set[int],
) -> Iterator[tuple[Any, ...]]:
    """Task arguments per chunk, except the ``empty`` ones (indices stay the grid's).

    In-memory sources ship their window with the task.
    """
    h = job.context
    height, width = source.shape
    for i, (rows, cols) in enumerate(grid):
        if i in empty:
            continue
        data = None
        if source.array is not None:
            r0, r1 = max(rows[0] - h, 0), min(rows[1] + h, height)
            c0, c1 = max(cols[0] - h, 0), min(cols[1] + h, width)
            data = source.read((r0, r1), (c0, c1), probabilities=source.has_probabilities)
        yield (job, i, rows, cols, data)


class _Sink:
    """The writer plus the per-class counts of what went into it."""

    def __init__(self, writer: FileWriter, report: VectorizeReport) -> None:
        self.writer = writer
        self.report = report
        self.per_class: dict[int, int] = {}

    def emit(self, batch: FeatureBatch, dropped: int = 0) -> None:
        self.writer.write(batch)
        self.report.dropped_min_area += dropped
        if len(batch):
            ids, counts = np.unique(batch.columns["class_id"], return_counts=True)
            for c, n in zip(ids.tolist(), counts.tolist(), strict=True):
                self.per_class[c] = self.per_class.get(c, 0) + n


def _merge_border(
    job: Job, border: list[tuple[int, ChunkTrace]], tasks: Runner, sink: _Sink
) -> None:
    """Join border pieces across seams, finish them on the workers, write them."""
    sink.report.border_pieces = int(sum(len(b.geometry) for _, b in border))
    if not border:
        return
    sums = [b.prob_sum for _, b in border]
    merged = merge_border_pieces(
        np.concatenate([b.geometry for _, b in border]),
        np.concatenate([b.class_id for _, b in border]),
        np.concatenate([np.full(len(b.geometry), i) for i, b in border]),
        np.concatenate([b.pixels for _, b in border]),
        None if any(x is None for x in sums) else np.concatenate(sums),  # type: ignore[arg-type]
        connectivity=job.settings.connectivity,
    )
    border.clear()
    sink.report.merged_features = len(merged.geometry)
    batches = []
    for s in range(0, len(merged.geometry), _FINISH_BATCH):
        sl = slice(s, s + _FINISH_BATCH)
        ps = None if merged.prob_sum is None else merged.prob_sum[sl]
        batches.append((job, merged.geometry[sl], merged.class_id[sl], merged.pixels[sl], ps))
    for batch, dropped in tasks.map(_finish_merged, batches, progress=False):
        sink.emit(batch, dropped)


def instance_rules(
    source: LabelSource,
    job: Job,
    method: str | None,
    reach: float | None,
    min_separation: float | None,
    marker_threshold: float | None,
    min_marker_area: float | None = None,
) -> InstanceRules | None:
    """Build the instance rules of a run (``None``: connected components, no separation).

    Distances are given in working units and converted with the run's pixel size; the
    default method is ``boundary`` when the input has a class named ``boundary``.
    """
    from pipeline.sample.boundary import BOUNDARY_NAME
    from pipeline.vectorize.settings import parse_non_negative

    boundary = [c for c, n in job.names.items() if n.lower() == BOUNDARY_NAME]
    if method is None:
        method = "boundary" if boundary else "none"
    method = str(method).lower()
    if method not in METHODS:
        raise ConfigError(f"--instances {method!r} is not one of {', '.join(METHODS)}")
    if method == "none":
        return None
    if job.roads:
        raise ConfigError("--instances cannot be combined with --centerlines; choose one")
    if method == "boundary" and not boundary:
        known = ", ".join(f"{i}={n}" for i, n in sorted(job.names.items())) or "none"
        raise ConfigError(
            f"--instances boundary needs a class named 'boundary' in {source.path or 'the input'}"
            f" (classes: {known}); use a model trained with data.boundary, or --instances "
            "distance"
        )
    pixel = job.pixel_size

    def pixels(name: str, value: float | None, default: float) -> float:
        if value is None:
            return default
        return parse_non_negative(name, value) / pixel

    marker_pixels = parse_non_negative("min_marker_area", min_marker_area) / pixel**2
    markers = tuple(c for c in (job.classes or sorted(job.names)) if c not in boundary)
    return InstanceRules(
        method=method,  # type: ignore[arg-type]
        reach=max(1, math.ceil(pixels("reach", reach, 8.0) - 1e-9)),
        separation=pixels("min_separation", min_separation, 4.0),
        threshold=pixels("marker_threshold", marker_threshold, 2.0),
        marker_classes=markers,
        boundary_class=boundary[0] if boundary else None,
        min_marker=max(1, math.ceil(marker_pixels - 1e-9)),
    )


def _join_instances(
    job: Job,
    pieces: list[tuple[int, Any]],
    markers: list[tuple[int, Any]],
    tasks: Runner,
    sink: _Sink,
) -> None:
    """Join instance pieces across seams by their markers, finish them, write them."""
    sink.report.border_pieces = int(sum(len(p) for _, p in pieces))
    joined = join_instances(pieces, markers)
    pieces.clear()
    markers.clear()
    sink.report.merged_features = len(joined)
    batches = []
    for s in range(0, len(joined), _FINISH_BATCH):
        sl = slice(s, s + _FINISH_BATCH)
        ps = None if joined.prob_sum is None else joined.prob_sum[sl]
        batches.append((job, joined.geometry[sl], joined.class_id[sl], joined.pixels[sl], ps))
    for batch, dropped in tasks.map(_finish_merged, batches, progress=False):
        sink.emit(batch, dropped)


def _join_lines(job: Job, lines: list[Any], sink: _Sink) -> None:
    """Join skeleton lines of all chunks per road class, prune spurs, write them."""
    for cid in sorted({c for c, _ in lines}):
        joined = prune_spurs(np.asarray([g for c, g in lines if c == cid], object), job.spur)
        sink.emit(finish_lines(job, joined, np.full(len(joined), cid)))
        sink.report.lines += len(joined)
