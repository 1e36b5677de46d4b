"""``pipeline.vectorize``: label raster -> exact polygons -> one output file.

The driver plans the chunk grid, submits one task per chunk to Dask workers (a
``LocalCluster`` by default, a given ``client``, a ``scheduler`` address, or in-process when
``workers=0``), and consumes results as they complete: interior features go straight to the
writer, border pieces are kept (they are few: only polygons that touch a seam) and merged at
the end. At most a few chunk results are in flight, so driver memory is bounded by the border
pieces, not by the raster or the number of features.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import ConfigError
from pipeline.export import FeatureBatch, check_output, open_writer, target_of
from pipeline.vectorize.centerlines import prune_spurs
from pipeline.vectorize.georef import Target
from pipeline.vectorize.seams import merge_border_pieces
from pipeline.vectorize.settings import VectorizeSettings, parse_format
from pipeline.vectorize.source import LabelSource, open_labels, resolve_classes
from pipeline.vectorize.tasks import (
    ChunkResult,
    Job,
    finish_lines,
    finish_polygons,
    trace_task,
    without_array,
)

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["VectorizeReport", "plan_chunks", "vectorize"]

DEFAULT_CHUNK = 2048
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
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON types."""
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


class _Runner:
    """Runs chunk tasks in-process or on a Dask cluster, yielding results as they finish."""

    def __init__(self, workers: int | None, scheduler: str | None, client: Client | None) -> None:
        self.client = client
        self._own: list[Any] = []
        if client is None and (scheduler or workers != 0):
            from distributed import Client, LocalCluster

            if scheduler:
                self.client = Client(scheduler)
            else:
                n = workers or os.cpu_count() or 1
                cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)  # fmt: skip
                self._own.append(cluster)
                self.client = Client(cluster)
            self._own.insert(0, self.client)

    @property
    def workers(self) -> int:
        if self.client is None:
            return 0
        return len(self.client.scheduler_info().get("workers", {})) or 1

    def map(self, func: Callable[..., Any], calls: Sequence[tuple[Any, ...]]) -> Iterator[Any]:
        """Run ``func(*args)`` for each args tuple, yielding results in completion order."""
        if self.client is None:
            import rasterio

            with rasterio.Env():  # one GDAL environment, not one per rasterio call
                for args in calls:
                    yield func(*args)
            return
        from distributed import as_completed

        limit = max(2, 2 * self.workers)
        pending = iter(calls)
        first = [self.client.submit(func, *a, pure=False) for a in _take(pending, limit)]
        done = as_completed(first)
        for future in done:
            result = future.result()
            future.release()
            for args in _take(pending, 1):
                done.add(self.client.submit(func, *args, pure=False))
            yield result

    def close(self) -> None:
        for obj in self._own:
            obj.close()


def _take(it: Iterator[Any], n: int) -> list[Any]:
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out


def _finish_merged(job: Job, geoms: np.ndarray, cls: np.ndarray, px: np.ndarray,
                   ps: np.ndarray | None) -> tuple[FeatureBatch, int]:  # fmt: skip
    return finish_polygons(job, geoms, cls, px, ps)


def vectorize(
    input: str | os.PathLike[str] | np.ndarray,  # noqa: A002 - the contract's name
    out: str | os.PathLike[str],
    *,
    format: str | None = None,  # noqa: A002 - the contract's name
    classes: Sequence[str | int] | None = None,
    threshold: float | None = None,
    min_area: float = 0.0,
    fill_holes: float = 0.0,
    simplify: float = 0.0,
    regularize: bool = False,
    centerlines: bool = False,
    connectivity: int = 4,
    chunk: int | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Client | None = None,
    overwrite: bool = False,
    progress: bool = True,
    object_type: str = "detection",
    halo: int = 64,
    spur_length: float = 10.0,
) -> VectorizeReport:
    """Vectorize a label raster into one GeoJSON/GeoParquet/GeoPackage/FlatGeobuf/QuPath file.

    Parameters
    ----------
    input
        A gigaseg store, a single-band label or probability raster (GeoTIFF, COG, Zarr
        array), or a 2-D NumPy array.
    out
        Output file; written under a temporary name and renamed when complete.
    format
        ``geojson``, ``geojsonseq``, ``geoparquet``, ``gpkg``, ``flatgeobuf`` or ``qupath``;
        default from the extension of ``out``.
    classes
        Class names or ids to export (default: every non-background class).
    threshold
        For probability rasters: ``p >= threshold`` is class 1.
    min_area, fill_holes
        Drop polygons / fill holes smaller than this (m² when georeferenced, µm² for slides,
        pixels otherwise), measured in a metric frame even for geographic CRSs.
    simplify
        Topology-preserving simplification tolerance in working units (map units of a
        projected CRS, metres for a geographic one, µm for slides).
    regularize
        Square building outlines (classes named "building...", else all); adds ``iou_traced``.
    centerlines
        Road classes ("road..." names, else all selected) become centre-line LineStrings.
    connectivity
        4 or 8, as ``rasterio.features.shapes``.
    chunk
        Chunk side in pixels (default: 2048 rounded to the source's blocks).
    workers
        Local worker processes (default: one per core; 0 runs in this process).
    scheduler, client
        Use a running Dask scheduler (address) or client instead of a local cluster.
    overwrite
        Replace an existing output.
    progress
        Show a progress bar on stderr.
    object_type
        QuPath ``objectType``: ``detection`` or ``annotation``.
    halo
        Context (pixels) around each chunk for road skeletons; wider than the widest road.
    spur_length
        Road spurs shorter than this many pixels are pruned.

    Returns
    -------
    VectorizeReport
        Counts and timings.
    """
    t0 = time.perf_counter()
    settings = VectorizeSettings.parse(
        connectivity=connectivity, min_area=min_area, fill_holes=fill_holes,
        simplify=simplify, regularize=regularize, centerlines=centerlines,
    )  # fmt: skip
    fmt = parse_format(format, out)
    out_path = check_output(out, overwrite=overwrite)
    source = open_labels(input if isinstance(input, np.ndarray) else Path(input),
                         threshold=threshold)  # fmt: skip
    selected = resolve_classes(source, list(classes) if classes else None)
    side = int(chunk) if chunk else _default_chunk(source)
    if side < 1:
        raise ConfigError(f"chunk must be a positive number of pixels, got {chunk}")
    if halo < 0:
        raise ConfigError(f"halo must be >= 0 pixels, got {halo}")
    names = dict(source.names)
    roads = _pick_classes(names, selected, "road") if settings.centerlines else ()
    buildings: tuple[int, ...] = ()
    if settings.regularize:
        buildings = tuple(c for c in _pick_classes(names, selected, "building") if c not in roads)
        if not buildings and not roads:
            buildings = (1,)
    target: Target = target_of(fmt)  # type: ignore[assignment]
    job = Job(
        source=without_array(source), settings=settings, classes=selected, roads=roads,
        buildings=buildings, target=target, pixel_size=_pixel_size(source), halo=int(halo),
        spur=float(spur_length), names=names,
    )  # fmt: skip
    grid = plan_chunks(source.shape, side)
    calls = []
    for i, (rows, cols) in enumerate(grid):
        data = None
        if source.array is not None:
            h = job.halo if job.roads else 0
            r0, r1 = max(rows[0] - h, 0), min(rows[1] + h, source.shape[0])
            c0, c1 = max(cols[0] - h, 0), min(cols[1] + h, source.shape[1])
            data = source.read((r0, r1), (c0, c1), probabilities=source.has_probabilities)
        calls.append((job, i, rows, cols, data))

    runner = _Runner(workers, scheduler, client)
    report = VectorizeReport(
        input=str(input if not isinstance(input, np.ndarray) else "<array>"),
        output=str(out_path), format=fmt, shape=source.shape, chunk=side, chunks=len(grid),
        connectivity=settings.connectivity, workers=runner.workers,
    )  # fmt: skip
    writer = open_writer(out_path, fmt, job.schema(), object_type=object_type)
    per_class: dict[int, int] = {}

    def emit(batch: FeatureBatch) -> None:
        writer.write(batch)
        if len(batch):
            ids, counts = np.unique(batch.columns["class_id"], return_counts=True)
            for c, n in zip(ids.tolist(), counts.tolist(), strict=True):
                per_class[c] = per_class.get(c, 0) + n

    try:
        from tqdm import tqdm

        border: list[tuple[int, Any]] = []
        lines: list[Any] = []
        stage = {"read": 0.0, "trace": 0.0, "finish": 0.0}
        t_trace = time.perf_counter()
        bar = tqdm(total=len(grid), desc="vectorize", unit="chunk", disable=not progress)
        result: ChunkResult
        for result in runner.map(trace_task, calls):
            emit(result.features)
            if len(result.border.geometry):
                border.append((result.index, result.border))
            if len(result.lines):
                lines.extend(result.lines.tolist())
            report.dropped_min_area += result.dropped
            for k, v in result.seconds.items():
                stage[k] += v
            bar.update(1)
        bar.close()
        t_merge = time.perf_counter()
        report.border_pieces = int(sum(len(b.geometry) for _, b in border))
        if border:
            merged = merge_border_pieces(
                np.concatenate([b.geometry for _, b in border]),
                np.concatenate([b.class_id for _, b in border]),
                np.concatenate([np.full(len(b.geometry), i) for i, b in border]),
                np.concatenate([b.pixels for _, b in border]),
                None if border[0][1].prob_sum is None
                else np.concatenate([b.prob_sum for _, b in border]),  # type: ignore[misc]
                connectivity=settings.connectivity,
            )  # fmt: skip
            border.clear()
            report.merged_features = len(merged.geometry)
            batches = []
            for s in range(0, len(merged.geometry), _FINISH_BATCH):
                sl = slice(s, s + _FINISH_BATCH)
                batches.append((job, merged.geometry[sl], merged.class_id[sl], merged.pixels[sl],
                                None if merged.prob_sum is None else merged.prob_sum[sl]))  # fmt: skip
            for batch, dropped in runner.map(_finish_merged, batches):
                emit(batch)
                report.dropped_min_area += dropped
        if lines:
            for cid in sorted({c for c, _ in lines}):
                joined = prune_spurs(np.asarray([g for c, g in lines if c == cid], object),
                                     job.spur)  # fmt: skip
                emit(finish_lines(job, joined, np.full(len(joined), cid)))
                report.lines += len(joined)
        t_write = time.perf_counter()
        writer.close()
        report.skipped = int(getattr(writer, "skipped", 0))
    except BaseException:
        writer.abort()
        raise
    finally:
        runner.close()
    report.features = writer.count
    report.per_class = {job.name(c): n for c, n in sorted(per_class.items())}
    t_end = time.perf_counter()
    report.seconds = {
        "setup": round(t_trace - t0, 3),
        "trace_wall": round(t_merge - t_trace, 3),
        "merge_and_lines": round(t_write - t_merge, 3),
        "close": round(t_end - t_write, 3),
        "total": round(t_end - t0, 3),
        **{f"workers_{k}": round(v, 3) for k, v in stage.items()},
    }
    return report
